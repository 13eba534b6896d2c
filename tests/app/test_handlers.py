"""UI actions as plain functions, with real rasters and a real (tiny, random) engine."""

from __future__ import annotations

import json

import pytest
from pyproj import Geod
from shapely.geometry import shape

from app import handlers
from app.asking import AskRequest, parse_labels
from app.errors import NoModelError, UserInputError
from app.map_view import DrawnRegion
from engine.types import Task
from tiles import RasterOpenError, RegionOutsideError, region_window


def _ids(services):
    by_kind = {r.georeferenced: r for r in services.catalog_list()}
    return by_kind[True], by_kind[False]


def _rect_lonlat(raster, fx0=0.3, fy0=0.3, fx1=0.6, fy1=0.55):
    """A rectangle inside the raster, as fractions of its lon/lat bounds (CCW, closed)."""
    w, s, e, n = raster.bounds_lonlat
    x0, x1 = w + (e - w) * fx0, w + (e - w) * fx1
    y0, y1 = s + (n - s) * fy0, s + (n - s) * fy1
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def _drawn(geometry, space="lonlat", shape_name="rectangle", raster_id=None):
    return {"drawn": {"type": "Feature", "geometry": geometry,
                      "properties": {"space": space, "shape": shape_name, "raster_id": raster_id}}}


# -- rasters -----------------------------------------------------------------------------------
def test_open_raster_by_path_and_errors(services, geo_tif, tmp_path):
    geo, _ = _ids(services)
    assert handlers.open_raster_path(services, f'  "{geo_tif}" ') == geo.raster_id  # already open
    with pytest.raises(UserInputError, match="type the path"):
        handlers.open_raster_path(services, "   ")
    with pytest.raises(RasterOpenError, match="does not exist"):
        handlers.open_raster_path(services, str(tmp_path / "missing.tif"))
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00 definitely not a tiff")
    with pytest.raises(RasterOpenError, match="broken.tif"):
        handlers.open_raster_path(services, str(broken))
    labels = {v: k for k, v in handlers.raster_choices(services)}
    assert "EPSG:32633" in labels[geo.raster_id]


def test_upload_is_kept_in_the_workspace(services, plain_png, tmp_path):
    raster_id = handlers.open_raster_upload(services, str(plain_png))
    kept = services.raster(raster_id).path
    assert kept.parent == services.uploads_dir.resolve() or kept.parent == services.uploads_dir
    assert kept.read_bytes() == plain_png.read_bytes()
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(UserInputError, match="notes.txt"):
        handlers.open_raster_upload(services, str(text))


# -- map ---------------------------------------------------------------------------------------
def test_map_update_lists_rasters_and_keeps_the_drawing(services):
    geo, plain = _ids(services)
    drawn = _drawn(_rect_lonlat(geo))
    value = handlers.map_update(services, geo.raster_id, "auto", {**drawn, "fit_seq": 3, "selected": ["gone"]},
                                fit=True)
    assert value["active"] == geo.raster_id and value["fit_seq"] == 4
    assert {r["id"] for r in value["rasters"]} == {geo.raster_id, plain.raster_id}
    assert value["drawn"] == drawn["drawn"] and value["selected"] == []  # unknown ids dropped
    assert handlers.map_update(services, "no-such-id", None)["active"] in {geo.raster_id, plain.raster_id}
    json.dumps(value)  # the browser gets JSON


def test_region_summary(services):
    geo, plain = _ids(services)
    assert "No region drawn" in handlers.region_summary(services, geo.raster_id, {})
    text = handlers.region_summary(services, geo.raster_id, _drawn(_rect_lonlat(geo)))
    assert text.startswith("Drawn rectangle on scene.tif: window ")
    far = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}
    assert "draw the region over it" in handlers.region_summary(services, geo.raster_id, _drawn(far))
    point = _drawn({"type": "Point", "coordinates": [10.0, 20.0]}, "pixel", "point", plain.raster_id)
    assert "Drawn point on photo.png" in handlers.region_summary(services, plain.raster_id, point)


# -- asking ------------------------------------------------------------------------------------
def test_ask_without_a_model_says_so(services):
    geo, _ = _ids(services)
    with pytest.raises(NoModelError, match="no model is loaded"):
        list(handlers.ask(services, AskRequest(geo.raster_id, Task.CAPTION)))


@pytest.mark.parametrize("kwargs, match", [
    (dict(task=Task.ASK), "needs a question"),
    (dict(task=Task.GROUND, question="  "), "what to find"),
    (dict(task=Task.CLASSIFY, labels=("only one",)), "at least two labels"),
    (dict(task=Task.REGION, question="what is it?"), "draw a rectangle"),
])
def test_ask_request_validation(kwargs, match):
    with pytest.raises(UserInputError, match=match):
        AskRequest("some-id", **kwargs)
    with pytest.raises(UserInputError, match="no raster is open"):
        AskRequest("", Task.CAPTION)


def test_ask_streams_then_stores_the_drawn_region(engine_services):
    geo, _ = _ids(engine_services)
    rect = _rect_lonlat(geo)
    request = AskRequest(geo.raster_id, Task.ASK, "Is there a river?", region=DrawnRegion(rect, "lonlat", "rectangle"))
    updates = list(handlers.ask(engine_services, request))
    assert updates[-1].record is not None and all(u.record is None for u in updates[:-1])
    record = updates[-1].record
    assert record.answer == updates[-1].text and len(updates) >= 2  # streamed pieces, then the final
    stored = engine_services.store.features()
    assert [f["properties"]["result_id"] for f in stored] == [record.result_id]
    props = stored[0]["properties"]
    assert props["task"] == "ask" and props["question"] == "Is there a river?" and props["crs"] == "EPSG:32633"
    assert props["model"].startswith("paper:") and props["raster"].endswith("scene.tif")
    window = region_window(geo, rect)
    assert props["window"] == {"col_off": window.col_off, "row_off": window.row_off,
                               "width": window.width, "height": window.height}
    # the stored region is the drawn rectangle itself (exported coordinates match the drawing)
    assert shape(stored[0]["geometry"]).equals_exact(shape(rect), 1e-7)


@pytest.mark.parametrize("task, question, labels", [
    (Task.CAPTION, None, ()),
    (Task.GROUND, "buildings", ()),
    (Task.CLASSIFY, None, ("forest", "farmland", "residential")),
    (Task.REGION, "What is in the box?", ()),
])
def test_every_task_runs_on_both_kinds_of_raster(engine_services, task, question, labels):
    geo, plain = _ids(engine_services)
    geo_region = DrawnRegion(_rect_lonlat(geo), "lonlat", "rectangle")
    px_region = DrawnRegion({"type": "Polygon", "coordinates": [[[20, 30], [120, 30], [120, 90], [20, 90], [20, 30]]]},
                            "pixel", "rectangle", plain.raster_id)
    for raster, region in ((geo, geo_region), (plain, px_region)):
        final = list(handlers.ask(engine_services, AskRequest(raster.raster_id, task, question, labels,
                                                              region=region)))[-1]
        record = final.record
        assert record.task == task.value
        assert record.coordinate_space == ("lonlat" if raster is geo else "pixel")
        if task is Task.REGION:  # the crop shows context around the box
            assert record.window["width"] > 0
    assert len(engine_services.store) == 2


def test_point_asks_about_a_ground_square(engine_services):
    geo, _ = _ids(engine_services)
    w, s, e, n = geo.bounds_lonlat
    lon, lat = (w + e) / 2, (s + n) / 2
    request = AskRequest(geo.raster_id, Task.CAPTION,
                         region=DrawnRegion({"type": "Point", "coordinates": [lon, lat]}, "lonlat", "point"))
    record = list(handlers.ask(engine_services, request))[-1].record
    region = shape(record.region)
    area, _ = Geod(ellps="WGS84").geometry_area_perimeter(region)
    assert abs(area) == pytest.approx(100.0 * 100.0, rel=0.02)  # --point-size-m default: 100 m
    assert region.centroid.distance(shape({"type": "Point", "coordinates": [lon, lat]})) < 1e-5
    assert record.window["width"] == pytest.approx(50, abs=2)  # 100 m at 2 m pixels


def test_region_outside_the_raster_is_a_readable_error(engine_services):
    geo, _ = _ids(engine_services)
    far = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}
    with pytest.raises(RegionOutsideError, match="draw the region over it"):
        list(handlers.ask(engine_services, AskRequest(geo.raster_id, Task.CAPTION,
                                                      region=DrawnRegion(far, "lonlat", "rectangle"))))
    assert len(engine_services.store) == 0


# -- results -----------------------------------------------------------------------------------
def test_select_delete_export_clear(engine_services):
    geo, _ = _ids(engine_services)
    ids = [list(handlers.ask(engine_services, AskRequest(geo.raster_id, Task.CAPTION)))[-1].record.result_id
           for _ in range(3)]
    rows = handlers.results_rows(engine_services, [ids[0]])
    assert [r[1] for r in rows] == ids[::-1] and rows[-1][0] == "✓"  # newest first
    chosen = handlers.toggle_selected([ids[0]], ids[1])
    assert chosen == [ids[0], ids[1]] and handlers.toggle_selected(chosen, ids[0]) == [ids[1]]

    (all_path,) = handlers.export_results(engine_services, None)
    assert len(json.loads(all_path.read_text())["features"]) == 3
    (some_path,) = handlers.export_results(engine_services, [ids[1]])
    exported = json.loads(some_path.read_text())["features"]
    assert [f["properties"]["result_id"] for f in exported] == [ids[1]]
    with pytest.raises(UserInputError, match="nothing is selected"):
        handlers.export_results(engine_services, [])

    assert handlers.delete_results(engine_services, [ids[0]]) == "Deleted 1 result."
    with pytest.raises(UserInputError, match="nothing is selected"):
        handlers.delete_results(engine_services, [])
    assert "kept as" in handlers.clear_results(engine_services)
    assert len(engine_services.store) == 0
    with pytest.raises(UserInputError, match="no results to export"):
        handlers.export_results(engine_services, None)


def test_parse_labels():
    assert parse_labels(" forest, farmland,,\nwater , forest") == ("forest", "farmland", "water")


def test_results_table_pages_and_filters(engine_services):
    from tests.app.test_results import _at

    geo, plain = _ids(engine_services)
    for i in range(120):
        engine_services.store.append(_at(15.0, 45.0, answer=f"a{i}", task="ask" if i % 3 else "caption",
                                         raster=str(geo.path if i < 110 else plain.path)))
    first = handlers.results_page(engine_services)
    assert len(first.rows) == handlers.PAGE_SIZE and first.rows[0][5] == "a119"
    assert first.line == "Results 1–50 of 120"
    last = handlers.results_page(engine_services, offset=100)
    assert last.line == "Results 101–120 of 120" and last.rows[-1][5] == "a0"
    beyond = handlers.results_page(engine_services, offset=500)  # after deletes: the last page
    assert beyond.offset == 100
    by_raster = handlers.results_page(engine_services, raster_id=plain.raster_id)
    assert by_raster.total == 10 and all(r[7] == "photo.png" for r in by_raster.rows)
    assert handlers.results_page(engine_services, task="caption").total == 40
    assert handlers.results_page(engine_services, raster_id=plain.raster_id, task="region").line == \
        "No results match the filter."
    selected = [first.rows[0][1]]
    value = handlers.map_update(engine_services, geo.raster_id, None, selected=selected,
                                focus_result=selected[0])
    assert value["focus"]["space"] == "lonlat" and value["focus"]["seq"] == 1
    (_, w), (n, _) = value["focus"]["bounds"]
    assert w == pytest.approx(15.0) and n == pytest.approx(45.001)
    assert "results" not in value and value["results_seq"] == engine_services.store.version
    assert len(json.dumps(value)) < 5000  # the map value does not grow with the history


def test_question_length_is_limited(engine_services):
    geo, _ = _ids(engine_services)
    with pytest.raises(UserInputError, match="500,000 characters long; the limit is 2,000"):
        list(handlers.ask(engine_services, AskRequest(geo.raster_id, Task.ASK, "x" * 500_000)))
    assert len(engine_services.store) == 0


def test_a_drawing_made_on_another_raster_is_refused(engine_services):
    geo, plain = _ids(engine_services)
    region = DrawnRegion(_rect_lonlat(geo), "lonlat", "rectangle", raster_id=plain.raster_id)
    with pytest.raises(UserInputError, match="drawing was made on another raster"):
        AskRequest(geo.raster_id, Task.CAPTION, region=region)


def test_grounding_answers_read_like_answers(engine_services):
    from app.asking import readable_answer
    from engine.types import Answer, BoxPx

    boxes = (BoxPx(0, 0, 5, 5), BoxPx(10, 10, 20, 20))
    raw = Answer(text="[1,2,30,40]\n[100,100,200,200]", task=Task.GROUND, boxes_px=boxes)
    assert readable_answer(Task.GROUND, "storage tanks", raw) == "2 storage tanks found (boxes on the map)."
    one = Answer(text="[1,2,3,4]", task=Task.GROUND, boxes_px=boxes[:1])
    assert readable_answer(Task.GROUND, "the storage tanks", one) == "1 storage tank found (boxes on the map)."
    none = Answer(text="", task=Task.GROUND)
    assert readable_answer(Task.GROUND, "ships", none) == "No ships found in this region."
    noted = readable_answer(Task.CAPTION, None, Answer(text="A field.", task=Task.CAPTION), demo_on_real=True)
    assert noted.startswith("A field.") and "demo model" in noted and "synthetic" in noted
    geo, _ = _ids(engine_services)
    # a region that fits one model input (the tiny model takes 56 px; this is 26 px) is one crop
    small = DrawnRegion(_rect_lonlat(geo, 0.45, 0.45, 0.5, 0.5), "lonlat", "rectangle")
    record = list(handlers.ask(engine_services, AskRequest(geo.raster_id, Task.GROUND, "buildings",
                                                           region=small)))[-1].record
    assert record.answer.endswith("found (boxes on the map).") or record.answer.endswith("found in this region.")
    assert record.scan is None
    region = engine_services.store.features([record.result_id])[0]["properties"]
    assert "model_output" in region and region["whole_raster"] is False and "scan" not in region


def test_exports_name_rasters_not_server_paths(engine_services):
    geo, _ = _ids(engine_services)
    list(handlers.ask(engine_services, AskRequest(geo.raster_id, Task.CAPTION)))
    (path,) = handlers.export_results(engine_services, None)
    text = path.read_text()
    assert json.loads(text)["features"][0]["properties"]["raster"] == "scene.tif"
    assert str(geo.path.parent) not in text


def test_each_analyst_deletes_and_clears_only_their_own(engine_services):
    geo, _ = _ids(engine_services)
    ana = [list(handlers.ask(engine_services, AskRequest(geo.raster_id, Task.CAPTION), owner="ana"))[-1].record
           for _ in range(2)]
    bob = list(handlers.ask(engine_services, AskRequest(geo.raster_id, Task.CAPTION), owner="bob"))[-1].record
    assert handlers.results_page(engine_services, owner="ana").total == 2
    line = handlers.delete_results(engine_services, [ana[0].result_id, bob.result_id], owner="ana")
    assert line.startswith("Deleted 1 result.") and "not yours" in line
    handlers.clear_results(engine_services, owner="ana")
    assert [s.result_id for s in engine_services.store.summaries()] == [bob.result_id]
    with pytest.raises(UserInputError, match="no results to export"):
        handlers.export_results(engine_services, None, owner="ana")


def test_close_raster_keeps_its_results(engine_services):
    _, plain = _ids(engine_services)
    list(handlers.ask(engine_services, AskRequest(plain.raster_id, Task.CAPTION)))
    assert handlers.close_raster(engine_services, plain.raster_id).startswith("Closed photo.png")
    assert plain.raster_id not in engine_services.catalog and len(engine_services.store) == 1
    with pytest.raises(UserInputError, match="no raster is selected"):
        handlers.close_raster(engine_services, None)


# -- untrusted files through the app -------------------------------------------------------------
@pytest.mark.parametrize("kind", ["file", "url"])
def test_a_vrt_disguised_as_tif_is_refused_for_upload_and_path(services, tmp_path, kind):
    """The attack of issue 18: `x.tif` that is VRT XML pointing at a server file, or at a URL.
    Upload and open-by-path refuse it, nothing is fetched, and the upload is not kept."""
    from tests.tiles.http_recorder import RequestRecorder
    from tests.tiles.rasters import vrt_raw
    from tiles import RasterFormatError

    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n" * 200)
    with RequestRecorder(tmp_path) as server:
        source = str(secret) if kind == "file" else "/vsicurl/" + server.url("secret.bin")
        evil = vrt_raw(tmp_path / "x.tif", source)
        with pytest.raises(RasterFormatError, match="VRT"):
            handlers.open_raster_upload(services, str(evil))
        assert not (services.uploads_dir / "x.tif").exists()
        with pytest.raises(RasterFormatError, match="--trusted-dir"):
            handlers.open_raster_path(services, str(evil))
        assert server.requests() == []
    assert all(r.path.name != "x.tif" for r in services.catalog_list())


def test_open_by_path_off_loopback_stays_in_the_data_folders(tmp_path, geo_tif):
    """Served to the network: typed paths open only inside --data-dir folders (symlinks are
    resolved first); without any, only uploads can be opened."""
    import shutil

    from app.config import Auth
    from app.services import open_services
    from tests.app.conftest import make_launch
    from tiles import RasterAccessError

    data = tmp_path / "data"
    data.mkdir()
    inside = shutil.copy(geo_tif, data / "inside.tif")
    outside = shutil.copy(geo_tif, tmp_path / "outside.tif")
    (data / "link.tif").symlink_to(outside)
    launch = make_launch(tmp_path / "ws", rasters=(geo_tif,), host="0.0.0.0", logins=(Auth("ana", "pw"),),
                         data_dirs=(data.resolve(),))
    svc = open_services(launch)
    try:
        assert svc.raster(handlers.open_raster_path(svc, str(inside))).name == "inside.tif"
        for path in (outside, data / "link.tif"):
            with pytest.raises(RasterAccessError, match="--data-dir"):
                handlers.open_raster_path(svc, str(path))
        assert svc.raster(handlers.open_raster_upload(svc, str(outside))).name == "outside.tif"
    finally:
        svc.close()
    bare = open_services(make_launch(tmp_path / "ws2", rasters=(geo_tif,), host="0.0.0.0",
                                     logins=(Auth("ana", "pw"),)))
    try:
        with pytest.raises(RasterAccessError):
            handlers.open_raster_path(bare, str(inside))
    finally:
        bare.close()


def test_raster_ids_survive_a_restart(tmp_path, geo_tif, plain_png):
    """A raster opened in the UI comes back under the same id after a restart, so an open tab's
    map keeps working; a closed raster stays closed."""
    from app.services import open_services
    from tests.app.conftest import make_launch

    launch = make_launch(tmp_path / "ws", rasters=(geo_tif,))
    first = open_services(launch)
    geo_id = first.opened_ids[0]
    uploaded = handlers.open_raster_upload(first, str(plain_png))
    first.close()
    second = open_services(launch)
    try:
        assert second.opened_ids == [geo_id] and uploaded in second.catalog
        assert second.render_tile(uploaded, 0, 0, 0, None)[:4] == b"\x89PNG"
        handlers.close_raster(second, uploaded)
    finally:
        second.close()
    third = open_services(launch)
    try:
        assert uploaded not in third.catalog and geo_id in third.catalog
    finally:
        third.close()
