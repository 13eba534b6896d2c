"""Whole-scene search in the app (app.scene_search through app.handlers.ask), with the real demo
model on the real demo scene (assets/demo): "Find objects" and counting questions on regions larger
than one model input run tile by tile, stream their progress, stop keeping what was found, and
store one record; regions that fit one model input are asked as before."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import shapely
from shapely.geometry import shape

from app import handlers, scene_search
from app.asking import AskRequest, prepare_crop
from app.demo import DEMO_MANIFEST, DEMO_RASTER
from app.errors import UserInputError
from app.map_view import DrawnRegion
from app.scene_search import (
    count_target,
    plural_noun,
    scan_answer,
    scene_search_for,
    singular_noun,
)
from engine.types import Task
from tests.app.conftest import make_launch

# The demo scene is 2048 x 2048 px at 0.5 m (UTM 33N); its industrial quarter (storage tanks)
# is columns 0-1023, rows 1024-2047. The demo model takes 128 px (64 m) inputs.
INDUSTRIAL = (0, 1024, 1024, 2048)


@pytest.fixture(scope="module")
def demo_engine():
    from engine.demo.manifest import load_demo_engine

    return load_demo_engine(DEMO_MANIFEST, device="cpu")


@pytest.fixture(scope="module")
def industrial_tif(tmp_path_factory):
    """A 384 x 384 px piece of the demo scene's industrial quarter, as its own GeoTIFF (real
    pixels and georeferencing), so a whole-raster search stays a few seconds (16 tiles)."""
    import rasterio
    from rasterio.windows import Window

    path = tmp_path_factory.mktemp("scene") / "industrial.tif"
    window = Window(0, 1100, 384, 384)
    with rasterio.open(DEMO_RASTER) as src:
        data = src.read(window=window)
        profile = {**src.profile, "width": 384, "height": 384, "transform": src.window_transform(window),
                   "tiled": False}
        profile.pop("blockxsize", None), profile.pop("blockysize", None)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


@pytest.fixture()
def demo_services(tmp_path, demo_engine, industrial_tif):
    """The app as `python launch.py` runs it (demo model, demo raster) plus the industrial piece."""
    import dataclasses

    from app.config import ModelSpec
    from app.services import model_status_for, open_services

    launch = make_launch(tmp_path / "ws", rasters=(industrial_tif,), point_size_m=64.0)  # launch.py's demo default
    launch = dataclasses.replace(
        launch, app=dataclasses.replace(launch.app, use_demo_raster=True),
        model=ModelSpec(model=str(DEMO_MANIFEST), device="cpu", is_demo=True))
    svc = open_services(launch, engine=demo_engine, model_status=model_status_for(launch.model, demo_engine))
    svc.catalog.open(DEMO_RASTER, trusted=True)
    yield svc
    svc.close()


def _raster(services, name):
    return next(r for r in services.catalog_list() if r.name == name)


def _rect(raster, x0, y0, x1, y1) -> DrawnRegion:
    """A drawn lon/lat rectangle around raster pixels (x0, y0)-(x1, y1)."""
    from pyproj import Transformer

    to_lonlat = Transformer.from_crs(raster.crs, "EPSG:4326", always_xy=True)
    corners = [raster.transform * (x, y) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))]
    ring = [list(to_lonlat.transform(*c)) for c in corners]
    return DrawnRegion({"type": "Polygon", "coordinates": [ring]}, "lonlat", "rectangle")


# -- the rule and the words ------------------------------------------------------------------------
@pytest.mark.parametrize("question, target", [
    ("How many storage tanks are there?", "storage tank"),
    ("how many buildings can you see", "building"),
    ("How many ferries in this harbour?", "ferry"),
    ("What is the number of storage tanks?", "storage tank"),
    ("Count the ships", "ship"),
    ("count all the white storage tanks in the region", "white storage tank"),
    ("Is there a river?", None),
    ("How is the weather?", None),
    ("", None),
])
def test_counting_questions_name_what_to_find(question, target):
    assert count_target(question) == target


def test_nouns_and_answers_read_like_an_analyst_wrote_them(industrial_tif):
    assert (singular_noun("storage tanks"), plural_noun("storage tank"), plural_noun("storage tanks")) == \
        ("storage tank", "storage tanks", "storage tanks")
    assert (singular_noun("boxes"), plural_noun("ferry"), singular_noun("glass")) == ("box", "ferries", "glass")
    from app.scanning import ScanResult

    def result(n, done, total, stopped=False):
        return ScanResult(query="storage tank", raster="x.tif", coordinate_space="lonlat", tile_px=128,
                          decimation=1.0, grid_shape=(1, total), objects=tuple(object() for _ in range(n)),
                          tiles_done=done, tiles_total=total, skipped=0, stopped=stopped)

    assert scan_answer(result(37, 40, 40), "storage tank") == "37 storage tanks found in 40 tiles (boxes on the map)."
    assert scan_answer(result(1, 40, 40), "storage tanks") == "1 storage tank found in 40 tiles (boxes on the map)."
    assert scan_answer(result(0, 42, 42), "storage tank") == "No storage tank found in 42 tiles."
    assert scan_answer(result(5, 12, 40, True), "storage tank") == \
        "Stopped after 12 of 40 tiles: 5 storage tanks so far (boxes on the map)."


def test_the_rule_compares_the_window_with_one_model_input(services):
    """No model: the input is --max-crop-px; the 512 px test GeoTIFF fits 1024 but not 256, and
    only Find objects and counting questions are searched tile by tile."""
    geo = next(r for r in services.catalog_list() if r.georeferenced)
    kw = {"point_size_m": 100.0, "point_size_px": 256.0}
    find = AskRequest(geo.raster_id, Task.GROUND, "buildings")
    assert scene_search_for(geo, find, None, max_crop_px=1024, **kw) is None
    search = scene_search_for(geo, find, None, max_crop_px=256, **kw)
    assert search is not None and search.tile_px == 256 and search.query == "buildings"
    assert search.region_px is None and search.gsd_m is None  # 2 m pixels: native
    count = AskRequest(geo.raster_id, Task.ASK, "How many buildings are there?")
    assert scene_search_for(geo, count, None, max_crop_px=256, **kw).query == "building"
    for other in (AskRequest(geo.raster_id, Task.ASK, "Is there a river?"), AskRequest(geo.raster_id, Task.CAPTION)):
        assert scene_search_for(geo, other, None, max_crop_px=256, **kw) is None
    # a model trained on inputs of a known ground size: a coarser raster is searched at its native
    # resolution, a finer one at the model's (2048 px at 0.5 m, a model of 512 m per 256 px input:
    # 2 m per pixel, so 512 model px: 4 x 4 tiles; one of 1024 m per input: the scene fits one)
    assert scene_search_for(geo, find, None, max_crop_px=256, recommended_region_m=64.0, **kw).gsd_m is None
    demo = services.raster(services.catalog.open(DEMO_RASTER, trusted=True))
    find_demo = AskRequest(demo.raster_id, Task.GROUND, "buildings")
    assert scene_search_for(demo, find_demo, None, max_crop_px=256, recommended_region_m=512.0, **kw).gsd_m == \
        pytest.approx(2.0)
    assert scene_search_for(demo, find_demo, None, max_crop_px=256, recommended_region_m=1024.0, **kw) is None


# -- with the demo model -------------------------------------------------------------------------
def test_whole_raster_find_is_one_record_with_a_readable_count(demo_services, demo_engine):
    from app.scanning import plan_scan, scan_raster

    raster = _raster(demo_services, "industrial.tif")
    updates = list(handlers.ask(demo_services, AskRequest(raster.raster_id, Task.GROUND, "storage tank")))
    running, final = updates[:-1], updates[-1]
    record = final.record
    assert record is not None and not final.stopped and len(demo_services.store) == 1

    # progress: tiles done out of the plan's 16, never going back, with the time left
    assert running and all(u.scan is not None and u.record is None for u in running)
    assert {u.scan.tiles_total for u in running} == {16}
    done = [u.scan.tiles_done for u in running]
    assert done == sorted(done) and done[0] == 0 and done[-1] == 16
    assert any(u.scan.seconds_left is not None for u in running)
    assert all(u.text.endswith(f"({u.scan.tiles_done} of 16 tiles)…") for u in running)

    # the same objects as the scan core finds on its own
    source = demo_services.catalog.source(raster.raster_id)
    core = scan_raster(raster, demo_engine, "storage tank", source=source,
                       plan=plan_scan(raster, demo_engine, source=source))
    n = core.count
    assert n > 0  # the industrial quarter has storage tanks, and the demo model finds some
    assert record.scan == {"query": "storage tank", "count": n, "tiles_done": 16, "tiles_total": 16, "skipped": 0,
                           "stopped": False, "tile_px": 128, "decimation": 1.0, "prefiltered": 0}
    assert record.answer.split("\n\n")[0] == f"{n} storage tank{'s' if n > 1 else ''} found in 16 tiles (boxes on the map)."
    assert record.whole_raster and record.task == "ground" and record.coordinate_space == "lonlat"

    # one stored unit: the region and N boxes, each with its score and tiles
    features = demo_services.store.features([record.result_id])
    region, boxes = features[0], features[1:]
    assert region["properties"]["kind"] == "region" and region["properties"]["scan"]["count"] == n
    assert len(boxes) == n and {f["properties"]["result_id"] for f in features} == {record.result_id}
    for feature, obj in zip(boxes, core.objects, strict=True):
        p = feature["properties"]
        assert p["kind"] == "box" and 0.0 <= p["score"] <= 1.0 and p["score"] == pytest.approx(obj.score)
        assert p["tiles"] == ",".join(map(str, obj.tiles))
        assert shapely.normalize(shape(feature["geometry"])).equals_exact(shapely.normalize(obj.polygon), 1e-6)
        assert shape(region["geometry"]).buffer(1e-6).contains(shape(feature["geometry"]))
    page = handlers.results_page(demo_services)
    assert page.total == 1 and page.rows[0][6] == n  # one row, N boxes

    # interim updates become the map's pending boxes (not stored, drawn until the result lands)
    last_running = running[-1].scan
    pending = handlers.scan_pending(demo_services, raster.raster_id, last_running)
    assert len(pending["features"]) == last_running.count and pending["space"] == "lonlat"
    value = handlers.map_update(demo_services, raster.raster_id, "auto", {}, pending=pending)
    assert value["pending"]["raster"] == raster.raster_id
    assert handlers.map_update(demo_services, raster.raster_id, "auto", value)["pending"] is None


def test_stop_after_one_batch_keeps_what_was_found_and_says_stopped(demo_services):
    raster = _raster(demo_services, "demo_scene.tif")
    region = _rect(raster, *INDUSTRIAL)  # about 1024 x 1024 px: 81 or more tiles
    calls = itertools.count()
    # ask polls should_stop once before the work, then the search before each batch of tiles:
    # True on the third call stops it after exactly one batch.
    stop_after_one_batch = lambda: next(calls) >= 2
    updates = list(handlers.ask(demo_services, AskRequest(raster.raster_id, Task.GROUND, "storage tank",
                                                          region=region), stop_after_one_batch))
    final = updates[-1]
    record = final.record
    assert final.stopped and record is not None and len(demo_services.store) == 1
    scan = record.scan
    done, total, n = scan["tiles_done"], scan["tiles_total"], scan["count"]
    assert scan["stopped"] and 0 < done < total and total >= 81
    plural = "s" if n != 1 else ""
    what = f"{n} storage tank{plural}" if n else "no storage tank"
    assert record.answer.startswith(f"Stopped after {done} of {total} tiles: {what} so far")
    assert len(record.boxes) == n and not record.whole_raster
    # what was kept came from the tiles that ran (plan order: the first `done` tiles)
    assert all(int(t) < done for box in record.boxes for t in box.tiles.split(","))
    assert updates[-2].scan.tiles_done == done  # the last progress update said the same


def test_a_region_that_fits_one_model_input_is_asked_as_before(demo_services, demo_engine):
    raster = _raster(demo_services, "demo_scene.tif")
    small = _rect(raster, 300, 1200, 420, 1320)  # 120 x 120 px < 128: one model input
    request = AskRequest(raster.raster_id, Task.GROUND, "storage tank", region=small)
    updates = list(handlers.ask(demo_services, request))
    record = updates[-1].record
    assert all(u.scan is None for u in updates) and record.scan is None
    assert "model_output" in demo_services.store.features([record.result_id])[0]["properties"]
    # exactly today's flow: the one crop, the engine's boxes, the readable answer
    prepared = prepare_crop(raster, request, max_crop_px=demo_services.config.max_crop_px,
                            point_size_m=demo_services.config.point_size_m, point_size_px=handlers.POINT_SIZE_PX,
                            source=demo_services.catalog.source(raster.raster_id))
    answer = demo_engine.run(prepared.crop.image, Task.GROUND, question="storage tank")
    assert len(record.boxes) == len(answer.boxes_px)
    assert record.answer.endswith("found (boxes on the map).") or record.answer.endswith("found in this region.")
    # a clicked point is the 64 m (128 px) square the demo model knows: also one input
    point = DrawnRegion({"type": "Point", "coordinates": np.mean(small.geometry["coordinates"][0][:4], axis=0).tolist()},
                        "lonlat", "point")
    final = list(handlers.ask(demo_services, AskRequest(raster.raster_id, Task.GROUND, "storage tank", region=point)))
    assert final[-1].record.scan is None


def test_counting_questions_on_a_large_region_count_tile_by_tile(demo_services):
    raster = _raster(demo_services, "demo_scene.tif")
    large = _rect(raster, 0, 1100, 300, 1400)  # about 300 x 300 px: 9 or more tiles
    question = "How many storage tanks are there?"
    record = list(handlers.ask(demo_services, AskRequest(raster.raster_id, Task.ASK, question, region=large)))[-1].record
    assert record.task == "ask" and record.question == question
    total, n = record.scan["tiles_total"], record.scan["count"]
    assert record.scan["query"] == "storage tank" and total >= 9 and record.scan["tiles_done"] == total
    assert len(record.boxes) == n
    assert record.answer.startswith(f"{n} storage tank" if n else f"No storage tank found in {total} tiles")
    assert "[" not in record.answer  # counts, not coordinates
    # the same question about a region that fits is the model's own answer, as before
    small = _rect(raster, 300, 1200, 420, 1320)
    asked = list(handlers.ask(demo_services, AskRequest(raster.raster_id, Task.ASK, question, region=small)))[-1].record
    assert asked.scan is None and asked.boxes == ()


def test_searching_the_most_likely_quarter_runs_only_the_tiles_clip_ranks_first(demo_services, demo_engine):
    """'Search the most likely quarter of the tiles': the worker ranks the 16 tiles with the demo's
    retriever CLIP (one ranking update), runs the best 4, and the record, the answer and the
    progress count those 4 and say CLIP left out 12; the objects are the scan core's with the
    same pre-filter."""
    from app.scanning import TilePrefilter, plan_scan, prefilter_tiles, scan_raster

    raster = _raster(demo_services, "industrial.tif")
    request = AskRequest(raster.raster_id, Task.GROUND, "storage tank", search_top=0.25)
    updates = list(handlers.ask(demo_services, request))
    running, final = [u.scan for u in updates[:-1]], updates[-1]
    assert running[0].ranking and running[0].tiles_total == 16 and running[0].tiles_done == 0
    assert "Ranking 16 tiles with CLIP" in scene_search.scan_progress_text(running[0])
    searching = [u for u in running if not u.ranking]
    assert searching and {(u.tiles_total, u.prefiltered) for u in searching} == {(4, 12)}
    assert "4 tiles (the most likely of 16)" in scene_search.scan_progress_text(searching[-1])

    record = final.record
    n = record.scan["count"]
    assert {k: record.scan[k] for k in ("tiles_done", "tiles_total", "prefiltered", "stopped")} == \
        {"tiles_done": 4, "tiles_total": 16, "prefiltered": 12, "stopped": False}
    what = f"{n} storage tank{'s' if n != 1 else ''}" if n else "No storage tank"
    assert record.answer.split("\n\n")[0].startswith(
        f"{what} found in 4 tiles, the most likely of 16 (CLIP left out 12)")

    source = demo_services.catalog.source(raster.raster_id)
    plan = plan_scan(raster, demo_engine, source=source)
    kept = prefilter_tiles(raster, plan, "storage tank",
                           TilePrefilter(demo_engine.retriever.embedder, top_fraction=0.25), source=source)
    core = scan_raster(raster, demo_engine, "storage tank", source=source, plan=plan, prefilter=kept)
    assert core.prefiltered == 12 and core.count == n == len(record.boxes)
    assert all(int(t) in kept.kept for box in record.boxes for t in box.tiles.split(","))
    assert [b.score for b in record.boxes] == pytest.approx([o.score for o in core.objects])
    # the export says how much of the region the search covered
    import pyogrio

    from app.export import export_geopackage

    gpkg = export_geopackage(demo_services.store.features([record.result_id]),
                             demo_services.config.workspace / "exports", "search")
    frame = pyogrio.read_dataframe(gpkg, layer=pyogrio.list_layers(gpkg)[0][0])
    assert frame.loc[frame["kind"] == "region", "prefiltered"].tolist() == [12]


def test_searching_the_most_likely_tiles_needs_a_clip_and_says_so(demo_services, demo_engine):
    """The demo model without its retriever (a model launched without --kb) has no CLIP to
    rank tiles: a clear error before any tile runs, and nothing stored."""
    from engine.engine import Engine

    no_clip = Engine(demo_engine.config, demo_engine.vlm, demo_engine.placement, retriever=None)
    raster = _raster(demo_services, "industrial.tif")
    demo_services.engine = no_clip
    request = AskRequest(raster.raster_id, Task.GROUND, "storage tank", search_top=0.5)
    with pytest.raises(UserInputError, match="search every tile"):
        list(handlers.ask(demo_services, request))
    assert len(demo_services.store) == 0
    # every tile still works with that model
    record = list(handlers.ask(demo_services, AskRequest(raster.raster_id, Task.GROUND, "storage tank")))[-1].record
    assert record.scan["prefiltered"] == 0 and record.scan["tiles_done"] == 16


@pytest.mark.parametrize("share", [0, -0.5, 1.5, True])
def test_the_share_of_tiles_to_search_is_checked(share):
    with pytest.raises(UserInputError, match="share of tiles"):
        AskRequest("r1", Task.GROUND, "storage tank", search_top=share)


def test_stop_while_clip_ranks_the_tiles_ends_the_search_before_any_tile(demo_services):
    raster = _raster(demo_services, "demo_scene.tif")
    region = _rect(raster, *INDUSTRIAL)  # 81 or more tiles: three CLIP batches of 32
    calls = itertools.count()
    # ask polls should_stop once before the work, the ranking before each CLIP batch:
    # True on the third call stops it after one batch of 32 tiles is ranked.
    stop_while_ranking = lambda: next(calls) >= 2
    updates = list(handlers.ask(demo_services, AskRequest(raster.raster_id, Task.GROUND, "storage tank",
                                                          region=region, search_top=0.25), stop_while_ranking))
    assert updates[0].scan.ranking
    record = updates[-1].record
    assert updates[-1].stopped and record is not None and len(demo_services.store) == 1
    scan = record.scan
    assert scan["stopped"] and scan["tiles_done"] == 0 and scan["count"] == 0 and scan["prefiltered"] == 0
    assert record.answer.startswith(f"Stopped after 0 of {scan['tiles_total']} tiles: no storage tank so far")
