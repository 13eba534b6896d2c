"""Two dates in the app (app/compare.py), handler level, no browser: which rasters are offered as
"before", the map's comparison member, acquisition dates, and change questions answered by the
real demo engine on a real pair (the demo raster and a re-projected, dated "before" of it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import calculate_default_transform, reproject
from rasterio.windows import Window
from shapely.geometry import box, mapping, shape

from app import compare, handlers
from app.compare import ChangeRequest
from app.demo import DEMO_RASTER, demo_before_raster
from app.errors import NoModelError, UserInputError
from app.map_view import DrawnRegion
from engine.types import Task
from tests.app.conftest import make_launch


def _write(path: Path, data: np.ndarray, crs: str, transform: Affine, tags: dict | None = None) -> Path:
    with rasterio.open(path, "w", driver="GTiff", count=data.shape[0], height=data.shape[1],
                       width=data.shape[2], dtype=data.dtype.name, crs=crs, transform=transform) as dst:
        dst.write(data)
        if tags:
            dst.update_tags(**tags)
    return path


def _utm(path: Path, x0: float = 500_000.0, tags: dict | None = None) -> Path:
    data = np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype="uint8")
    return _write(path, data, "EPSG:32633", Affine(10, 0, x0, 0, -10, 5_300_000), tags)


def _warped_copy(src_path: Path, out: Path, window: Window, dst_crs: str, tags: dict) -> Path:
    """``window`` of ``src_path`` re-projected to ``dst_crs`` (another date "seen" on another grid)."""
    with rasterio.open(src_path) as src:
        data = src.read(window=window)
        transform = src.window_transform(window)
        left, top = transform * (0, 0)
        right, bottom = transform * (window.width, window.height)
        dst_transform, w, h = calculate_default_transform(src.crs, dst_crs, window.width, window.height,
                                                          left=left, bottom=bottom, right=right, top=top)
        out_data = np.zeros((data.shape[0], h, w), "uint8")
        reproject(data, out_data, src_transform=transform, src_crs=src.crs, dst_transform=dst_transform,
                  dst_crs=dst_crs, resampling=Resampling.bilinear)
        out_data[:, h // 3: h // 3 + 20, w // 3: w // 3 + 20] = 90  # a "building" not there yet
        return _write(out, out_data, dst_crs, dst_transform, tags)


# -- acquisition dates -------------------------------------------------------------------------
def test_acquisition_dates_from_metadata_or_file_name(tmp_path):
    import tiles

    cases = {
        "a.tif": ({"ACQUISITIONDATE": "2019-05-01"}, ("2019-05-01", "ACQUISITIONDATE")),
        "b.tif": ({"TIFFTAG_DATETIME": "2021:07:14 10:22:00"}, ("2021-07-14", "TIFFTAG_DATETIME")),
        "m_4709963_se_14_1_20090818.tif": (None, ("2009-08-18", "file name")),
        "scene_2018-03-04.tif": (None, ("2018-03-04", "file name")),
        # a metadata item wins over the name; an acquisition item over TIFFTAG_DATETIME
        "x_20000101.tif": ({"TIFFTAG_DATETIME": "2022:01:02 00:00:00", "ACQUISITIONDATE": "20200203"},
                           ("2020-02-03", "ACQUISITIONDATE")),
        "scene_20091340.tif": (None, None),  # month 13: not a date
        "plain.tif": ({"TIFFTAG_DATETIME": "yesterday"}, None),
    }
    for name, (tags, expected) in cases.items():
        found = compare.acquisition_date(tiles.open_raster(_utm(tmp_path / name, tags=tags)))
        assert (None if found is None else (found.iso, found.source)) == expected, name


# -- which rasters are offered, and the map's comparison ----------------------------------------
@pytest.fixture()
def dated_services(tmp_path):
    from app.services import open_services

    folder = tmp_path / "rasters"
    folder.mkdir()
    after = _utm(folder / "after_20200831.tif")
    earlier = _warped_copy(after, folder / "earlier.tif", Window(0, 0, 64, 64), "EPSG:3857",
                           {"ACQUISITIONDATE": "2009-08-18"})
    later = _utm(folder / "later_20230101.tif", x0=500_200.0)  # overlaps, acquired after
    far = _utm(folder / "far_20100101.tif", x0=700_000.0)  # 200 km away
    svc = open_services(make_launch(tmp_path / "ws", rasters=(after, earlier, later, far)))
    yield svc, dict(zip(("after", "earlier", "later", "far"), svc.opened_ids, strict=True))
    svc.close()


def test_overlapping_rasters_are_offered_and_the_earlier_one_suggested(dated_services):
    services, ids = dated_services
    choices = compare.before_choices(services, ids["after"])
    assert choices[0] == ("No comparison", compare.NO_BEFORE)
    assert [c[1] for c in choices[1:]] == [ids["earlier"], ids["later"]]  # not the far one
    assert choices[1][0] == "earlier.tif (2009-08-18)"
    assert compare.suggest_before(services, ids["after"]) == ids["earlier"]
    assert compare.suggest_before(services, ids["far"]) == compare.NO_BEFORE

    value = handlers.map_update(services, ids["after"], "auto")
    assert value["compare"] == {
        "after": ids["after"], "before": ids["earlier"], "before_raster": "earlier.tif",
        "after_raster": "after_20200831.tif", "before_date": "2009-08-18", "after_date": "2020-08-31",
        "before_date_from": "ACQUISITIONDATE", "after_date_from": "file name"}
    line = compare.compare_line(value["compare"])
    assert "earlier.tif (2009-08-18, from ACQUISITIONDATE)" in line
    # the analyst's choice is kept by later updates of the same raster ...
    chosen = handlers.map_update(services, ids["after"], "auto", value, before_id=ids["later"])
    assert chosen["compare"]["before"] == ids["later"]
    assert "is the later one" in compare.compare_line(chosen["compare"])
    kept = handlers.map_update(services, ids["after"], "auto", chosen, selected=[])
    assert kept["compare"]["before"] == ids["later"]
    off = handlers.map_update(services, ids["after"], "auto", kept, before_id=compare.NO_BEFORE)
    assert off["compare"] == {"after": ids["after"], "before": None}
    assert handlers.map_update(services, ids["after"], "auto", off)["compare"]["before"] is None
    # ... a newly shown raster gets its own suggestion; a far one has nothing to compare with
    # (for the 2023 raster the latest earlier one is the 2020 raster)
    assert handlers.map_update(services, ids["later"], "auto", off)["compare"]["before"] == ids["after"]
    assert handlers.map_update(services, ids["far"], "auto", off)["compare"]["before"] is None
    # a chosen raster that is closed (or does not overlap) is dropped
    services.catalog.close(ids["later"])
    assert handlers.map_update(services, ids["after"], "auto", chosen)["compare"]["before"] is None


def test_change_requests_are_checked(dated_services, tmp_path):
    services, ids = dated_services
    with pytest.raises(UserInputError, match="choose a 'Before' raster"):
        ChangeRequest(after_id=ids["after"], before_id=None, task=Task.CHANGE_CAPTION)
    with pytest.raises(UserInputError, match="raster shown"):
        ChangeRequest(after_id=ids["after"], before_id=ids["after"], task=Task.CHANGE_CAPTION)
    with pytest.raises(UserInputError, match="needs what to find"):
        ChangeRequest(after_id=ids["after"], before_id=ids["earlier"], task=Task.CHANGE_GROUND)
    with pytest.raises(UserInputError, match="not a change task"):
        ChangeRequest(after_id=ids["after"], before_id=ids["earlier"], task=Task.ASK, question="q")
    with pytest.raises(NoModelError):  # these services have no model
        list(handlers.ask_change(services, ChangeRequest(after_id=ids["after"], before_id=ids["earlier"],
                                                        task=Task.CHANGE_CAPTION)))
    import tiles

    far = ChangeRequest(after_id=ids["after"], before_id=ids["far"], task=Task.CHANGE_CAPTION)
    with pytest.raises(tiles.PairOverlapError, match="far_20100101.tif.*after_20200831.tif|after.*far"):
        compare.prepare_pair(services, far)


def test_demo_before_twin_from_the_manifest(tmp_path):
    manifest = tmp_path / "demo.json"
    manifest.write_text(json.dumps({"before_raster": "twin.tif"}), encoding="utf-8")
    assert demo_before_raster(manifest) is None  # named but missing
    _utm(tmp_path / "twin.tif")
    assert demo_before_raster(manifest) == tmp_path / "twin.tif"
    manifest.write_text(json.dumps({"raster": "demo_scene.tif"}), encoding="utf-8")
    assert demo_before_raster(manifest) is None


def test_no_arguments_open_the_demo_pair_when_it_ships(tmp_path):
    from app.services import open_services

    twin = demo_before_raster()
    if twin is None:
        pytest.skip("assets/demo/demo.json names no 'before_raster' yet (the demo's before twin)")
    services = open_services(make_launch(tmp_path / "ws"))  # no rasters: the demo (and its twin)
    try:
        demo_id, twin_id = services.opened_ids
        assert services.raster(demo_id).path == DEMO_RASTER and services.raster(twin_id).path == twin
        assert handlers.map_update(services, demo_id, "auto")["compare"]["before"] == twin_id
    finally:
        services.close()


# -- change questions with the real demo engine -------------------------------------------------
@pytest.fixture(scope="module")
def demo_engine():
    from engine.demo.manifest import load_demo_engine

    return load_demo_engine(device="cpu")


@pytest.fixture(scope="module")
def demo_pair_files(tmp_path_factory) -> tuple[Path, Path]:
    """The demo raster (the later date) and a 'before' of its top-left quarter in Web Mercator,
    dated by its metadata, with one 20 px patch painted over (as if built since)."""
    folder = tmp_path_factory.mktemp("demo-pair")
    before = _warped_copy(DEMO_RASTER, folder / "demo_before.tif", Window(0, 0, 1024, 1024), "EPSG:3857",
                          {"TIFFTAG_DATETIME": "2019:06:01 10:00:00"})
    return before, DEMO_RASTER


@pytest.fixture()
def demo_services(tmp_path, demo_pair_files, demo_engine):
    from app.services import model_status_for, open_services

    before, after = demo_pair_files
    launch = make_launch(tmp_path / "ws", rasters=(after, before), model="demo")
    svc = open_services(launch, engine=demo_engine, model_status=model_status_for(launch.model, demo_engine))
    yield svc
    svc.close()


def _region_over(services, raster_id: str, frac=(0.1, 0.1, 0.2, 0.2)) -> DrawnRegion:
    west, south, east, north = services.raster(raster_id).bounds_lonlat
    x0, y0, x1, y1 = (west + (east - west) * frac[0], north - (north - south) * frac[3],
                      west + (east - west) * frac[2], north - (north - south) * frac[1])
    return DrawnRegion(geometry=json.loads(json.dumps(mapping(box(x0, y0, x1, y1)))), space="lonlat", shape="rectangle",
                       raster_id=raster_id)


@pytest.mark.parametrize("task, question", [(Task.CHANGE_CAPTION, None), (Task.CHANGE_GROUND, "new buildings")])
def test_ask_what_changed_with_the_demo_engine(demo_services, task, question):
    services = demo_services
    after_id, before_id = services.opened_ids
    value = handlers.map_update(services, after_id, "auto")
    assert value["compare"]["before"] == before_id  # offered automatically: they overlap
    region = _region_over(services, after_id)
    request = ChangeRequest(after_id=after_id, before_id=before_id, task=task, question=question, region=region)
    updates = list(handlers.ask_change(services, request))
    record = updates[-1].record
    assert record is not None and updates[-1].text == record.answer and record.answer.strip()
    assert record.task == task.value and record.question == question
    assert record.raster == str(DEMO_RASTER)
    assert record.change == {"before_raster": "demo_before.tif", "after_raster": "demo_scene.tif",
                             "before_date": "2019-06-01", "after_date": None,
                             "before_date_from": "TIFFTAG_DATETIME", "after_date_from": None}
    # the stored region is the drawn rectangle (RFC 7946: 7 decimals, counter-clockwise)
    assert shape(record.region).symmetric_difference(shape(region.geometry)).area < 1e-9
    # the crop both dates were read into covers the drawn region on the after raster's grid
    prepared = compare.prepare_pair(services, request)
    footprint = box(*prepared.pair.footprint_lonlat)
    assert footprint.buffer(1e-9).contains(shape(region.geometry))
    assert prepared.pair.grid == "after" and prepared.pair.valid.all()
    for b in record.boxes:  # boxes of the answer land inside the compared crop
        assert footprint.buffer(1e-6).contains(shape(b.geometry))
    # stored with both names, dates and the task; exported with them
    features = services.store.features([record.result_id])
    assert {f["properties"]["kind"] for f in features} == {"region"} | ({"box"} if record.boxes else set())
    for f in features:
        p = f["properties"]
        assert (p["before_raster"], p["after_raster"], p["task"]) == ("demo_before.tif", "demo_scene.tif",
                                                                      task.value)
    (path,) = handlers.export_results(services, [record.result_id])
    exported = json.loads(path.read_text(encoding="utf-8"))["features"]
    assert len(exported) == 1 + len(record.boxes)
    assert all(f["properties"]["before_raster"] == "demo_before.tif" and
               f["properties"]["after_raster"] == "demo_scene.tif" and
               f["properties"]["before_date"] == "2019-06-01" for f in exported)
    if task is Task.CHANGE_GROUND:
        n = len(record.boxes)
        assert record.answer.startswith(f"{n} found" if n else "None found")
        assert record.model_output is not None


def test_whole_shared_ground_when_nothing_is_drawn(demo_services):
    services = demo_services
    after_id, before_id = services.opened_ids
    request = ChangeRequest(after_id=after_id, before_id=before_id, task=Task.CHANGE_CAPTION)
    prepared = compare.prepare_pair(services, request)
    # the crop is the before raster's footprint on the demo raster's grid (their shared ground)
    from rasterio.warp import transform_bounds

    before, after = services.raster(before_id), services.raster(after_id)
    left, bottom, right, top = transform_bounds(before.crs, after.crs, *before.bounds_crs, densify_pts=21)
    col_a, row_a = ~after.transform * (left, top)
    col_b, row_b = ~after.transform * (right, bottom)
    (c0, c1), (r0, r1) = sorted((col_a, col_b)), sorted((row_a, row_b))
    win = prepared.pair.grid_window
    assert (win.col_off, win.row_off) == (max(0, int(np.floor(c0))), max(0, int(np.floor(r0))))
    assert (win.width, win.height) == (int(np.ceil(c1)) - win.col_off, int(np.ceil(r1)) - win.row_off)
    assert max(prepared.pair.width, prepared.pair.height) <= services.config.max_crop_px


def test_stop_before_start_stores_nothing(demo_services):
    services = demo_services
    after_id, before_id = services.opened_ids
    request = ChangeRequest(after_id=after_id, before_id=before_id, task=Task.CHANGE_CAPTION,
                            region=_region_over(services, after_id))
    updates = list(handlers.ask_change(services, request, should_stop=lambda: True))
    assert [u.stopped for u in updates] == [True] and len(services.store) == 0


def test_real_naip_pair_dates_and_suggestion(tmp_path, shared_data):
    """The real NAIP 2009/2020 pair: dates from the file names, 2009 offered as before of 2020,
    and the pair read on the 2020 grid."""
    from app.services import open_services

    naip_2009 = shared_data / "geotiff/m_4709963_se_14_1_20090818.tif"
    naip_2020 = shared_data / "geotiff/m_4709963_se_14_1_20200831.tif"
    services = open_services(make_launch(tmp_path / "ws", rasters=(naip_2020, naip_2009)))
    try:
        after_id, before_id = services.opened_ids
        value = handlers.map_update(services, after_id, "auto")
        assert value["compare"]["before"] == before_id
        assert (value["compare"]["before_date"], value["compare"]["after_date"]) == ("2009-08-18", "2020-08-31")
        assert value["compare"]["before_date_from"] == "file name"
        region = _region_over(services, after_id, (0.3, 0.3, 0.5, 0.5))
        prepared = compare.prepare_pair(services, ChangeRequest(after_id=after_id, before_id=before_id,
                                                                task=Task.CHANGE_CAPTION, region=region))
        pair = prepared.pair
        after = services.raster(after_id)
        win = pair.grid_window
        assert pair.transform == after.transform * Affine.translation(win.col_off, win.row_off)
        assert pair.before.image.shape == pair.after.image.shape and pair.valid.all()
        assert prepared.change["before_date"] == "2009-08-18"
    finally:
        services.close()


def test_swipe_library_is_vendored_with_its_licence():
    from app.map_view import ASSETS_DIR, MAP_ASSETS, map_head

    folder = ASSETS_DIR / "vendor" / "leaflet-side-by-side"
    loader = (folder / "leaflet-side-by-side.js").read_text(encoding="utf-8")
    assert (folder / "index.js").read_text(encoding="utf-8") in loader  # the npm source, unmodified
    assert "Permission is hereby granted, free of charge" in (folder / "LICENSE").read_text(encoding="utf-8")
    assert "vendor/leaflet-side-by-side/leaflet-side-by-side.js" in MAP_ASSETS["js"]
    head = map_head()
    assert head.index("leaflet/leaflet.js") < head.index("leaflet-side-by-side.js")
    assert "leaflet-side-by-side/range.css" in head  # range.css finds range-icon.png beside it
    assert (folder / "range-icon.png").is_file()
