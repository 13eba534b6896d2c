"""UI wiring without a browser: error messages, the engine queue, stopping, boxes on the map."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
from pyproj import Transformer
from shapely.geometry import shape

from app import handlers
from app.asking import AskRequest, PreparedCrop, build_record
from app.errors import UserInputError
from app.map_view import DrawnRegion
from app.ui import ENGINE_CONCURRENCY_ID, build_blocks, plain_markdown, readable_errors, reported
from engine.types import Answer, BoxPx, Evidence, Task
from tests.app.rasters import GEO_TRANSFORM


def test_readable_errors_never_show_a_traceback():
    @readable_errors
    def bad_input():
        raise UserInputError("draw a region first")

    @readable_errors
    def bug():
        raise KeyError("internal")

    @readable_errors
    def streaming():
        yield 1
        raise UserInputError("stopped halfway")

    with pytest.raises(gr.Error, match="draw a region first"):
        bad_input()
    with pytest.raises(gr.Error) as exc:
        bug()
    assert "Unexpected error (KeyError" in exc.value.message and "Traceback" not in exc.value.message
    gen = streaming()
    assert next(gen) == 1
    with pytest.raises(gr.Error, match="stopped halfway"):
        next(gen)


def test_messages_are_plain_text():
    """File names and paths are shown as typed: no HTML or Markdown in them is rendered."""
    import markdown_it

    hostile = 'scene<a href="http://evil.example">click</a>[link](http://x) **bold** <img src=x onerror=alert(1)>.tif'
    rendered = markdown_it.MarkdownIt("commonmark").render(plain_markdown(hostile))
    assert "<a " not in rendered and "<img" not in rendered and "<strong>" not in rendered
    assert "&lt;a href=" in rendered and "[link](http://x)" in rendered and "**bold**" in rendered


def test_reported_errors_touch_only_the_status(services):
    with gr.Blocks():
        status = gr.Markdown()

    @reported(status)
    def failing_open(path):
        raise UserInputError(f"cannot open <b>{path}</b>")

    @reported(status)
    def failing_stream():
        yield "first"
        raise KeyError("bug")

    out = failing_open("x.tif")
    assert list(out) == [status] and "&lt;b&gt;x\\.tif&lt;/b&gt;" in out[status]
    gen = failing_stream()
    assert next(gen) == "first"
    last = next(gen)
    assert list(last) == [status] and "Unexpected error \\(KeyError" in last[status]


def test_stop_says_when_nothing_runs():
    from app.ui import _Actions

    control = handlers.AskControl()
    act = _Actions.__new__(_Actions)
    assert act.stop(control).startswith("Nothing is running")
    ticket = control.request()
    assert control.running and act.stop(control).startswith("Stopping")
    second = control.request()
    control.finish(second)
    control.finish(ticket)
    assert not control.running and act.stop(control).startswith("Nothing is running")


def test_engine_events_share_one_queue_of_one(services):
    blocks = build_blocks(services)
    engine_fns = [fn for fn in blocks.fns.values() if fn.concurrency_id == ENGINE_CONCURRENCY_ID]
    assert {fn.api_name for fn in engine_fns} == {"ask", "ask_submit"}
    assert all(fn.concurrency_limit == 1 for fn in engine_fns)
    # tiles are FastAPI routes, not queued events; nothing else uses the engine's queue
    assert all("tile" not in (fn.api_name or "") for fn in blocks.fns.values())


def test_ask_control_stops_running_and_queued_tickets():
    control = handlers.AskControl()
    assert not control.is_stopped(None) and not control.is_stopped(0)
    first, second = control.request(), control.request()
    assert not control.is_stopped(first)
    assert control.stop() is True
    assert control.is_stopped(first) and control.is_stopped(second)
    third = control.request()
    assert not control.is_stopped(third) and control.stop() is True and control.stop() is False
    import copy

    fresh = copy.deepcopy(control)  # a new session gets a new switch
    assert not fresh.is_stopped(1)


def test_stopping_an_answer_stores_nothing(engine_services):
    geo = next(r for r in engine_services.catalog_list() if r.georeferenced)
    control = handlers.AskControl()
    ticket = control.request()
    updates = []
    for progress in handlers.ask(engine_services, AskRequest(geo.raster_id, Task.CAPTION),
                                 lambda: control.is_stopped(ticket)):
        updates.append(progress)
        control.stop()  # the analyst presses Stop after the first piece
    assert updates[-1].stopped and updates[-1].record is None
    assert len(engine_services.store) == 0
    queued = control.request()
    control.stop()  # stopped before it started: no work at all
    (only,) = handlers.ask(engine_services, AskRequest(geo.raster_id, Task.CAPTION),
                           lambda: control.is_stopped(queued))
    assert only.stopped and only.text == ""


def test_boxes_land_where_the_crop_transform_puts_them(services):
    """A box in crop pixels becomes a lon/lat polygon through the crop's transform (checked
    here against an independent rasterio-affine + pyproj computation)."""
    from app.asking import prepare_crop

    geo = next(r for r in services.catalog_list() if r.georeferenced)
    request = AskRequest(geo.raster_id, Task.GROUND, "squares")
    prepared: PreparedCrop = prepare_crop(geo, request, max_crop_px=128, point_size_m=100, point_size_px=256)
    crop = prepared.crop
    assert crop.width == 128 and crop.scale_x == pytest.approx(4.0)  # 512 px raster decimated 4x
    box = BoxPx(16.0, 32.0, 48.0, 40.0, label="square", score=0.75)
    answer = Answer(text="one square", task=Task.GROUND, boxes_px=(box,), model="m",
                    evidence=(Evidence("a square roof", 0.5, "test"),))
    record = build_record(geo, request, prepared, answer, model="m", adapter=None)
    (result_box,) = record.boxes
    assert result_box.label == "square" and result_box.score == 0.75
    to_lonlat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    corners_px = [(16, 32), (48, 32), (48, 40), (16, 40)]
    expected = []
    for x, y in corners_px:  # crop px -> raster px (x4) -> UTM -> lon/lat
        easting, northing = GEO_TRANSFORM * (x * 4.0, y * 4.0)
        expected.append(to_lonlat.transform(easting, northing))
    polygon = shape(result_box.geometry)
    ring = np.array(polygon.exterior.coords)
    for lon, lat in expected:
        assert np.min(np.hypot(ring[:, 0] - lon, ring[:, 1] - lat)) < 1e-7
    assert record.evidence == ({"text": "a square roof", "score": 0.5, "source": "test", "level": None},)
    features = record.to_features()
    assert [f["properties"]["kind"] for f in features] == ["region", "box"]
    assert features[1]["properties"]["label"] == "square"


def test_plain_image_boxes_stay_in_pixels(services):
    from app.asking import prepare_crop

    plain = next(r for r in services.catalog_list() if not r.georeferenced)
    region = DrawnRegion({"type": "Polygon", "coordinates": [[[10, 10], [110, 10], [110, 60], [10, 60], [10, 10]]]},
                         "pixel", "rectangle", plain.raster_id)
    request = AskRequest(plain.raster_id, Task.GROUND, "squares", region=region)
    prepared = prepare_crop(plain, request, max_crop_px=1024, point_size_m=100, point_size_px=256)
    answer = Answer(text="x", task=Task.GROUND, boxes_px=(BoxPx(0, 0, 10, 5),))
    record = build_record(plain, request, prepared, answer, model="m", adapter=None)
    assert record.coordinate_space == "pixel"
    assert shape(record.boxes[0].geometry).bounds == pytest.approx((10, 10, 20, 15))
    assert shape(record.region).bounds == pytest.approx((10, 10, 110, 60))


def test_a_tab_that_closes_stops_its_answer(services):
    from app.ui import _Actions

    act = _Actions(services)
    control = handlers.AskControl()
    request = gr.Request(session_hash="tab-1")
    ticket, _ = act.take_ticket(control, request)
    assert not control.is_stopped(ticket)
    act.page_closed(gr.Request(session_hash="another-tab"))
    assert not control.is_stopped(ticket)
    act.page_closed(request)
    assert control.is_stopped(ticket)
