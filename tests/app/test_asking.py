"""app.asking over tiles: windows come from tiles, boxes land in the record's space, reads use
the catalog's pooled datasets. No model needed: answers are built by hand."""

from __future__ import annotations

import pytest
from rasterio.windows import Window
from shapely.geometry import box, shape

import tiles
from app.asking import REGION_CONTEXT, AskRequest, build_record, drawn_window, prepare_crop
from app.map_view import DrawnRegion
from engine.types import Answer, BoxPx, Task

POINT = {"point_size_m": 100.0, "point_size_px": 64.0}


def _ids(services):
    by_kind = {r.georeferenced: r for r in services.catalog_list()}
    return by_kind[True], by_kind[False]


def _prepare(services, raster, task, region=None, max_crop_px=1024):
    request = AskRequest(raster.raster_id, task, "what is it?", region=region)
    return request, prepare_crop(raster, request, max_crop_px=max_crop_px,
                                 source=services.catalog.source(raster.raster_id), **POINT)


def test_whole_raster_region_is_its_footprint_in_either_space(services):
    geo, plain = _ids(services)
    _, prepared = _prepare(services, geo, Task.CAPTION, max_crop_px=128)
    assert prepared.crop.window == tiles.full_window(geo) and prepared.coordinate_space == "lonlat"
    assert shape(prepared.region_geometry).bounds == pytest.approx(geo.bounds_lonlat, abs=1e-7)
    _, prepared = _prepare(services, plain, Task.CAPTION)
    assert prepared.coordinate_space == "pixel"
    assert shape(prepared.region_geometry).equals(box(0, 0, plain.width, plain.height))


def test_ask_about_box_reads_context_and_points_at_the_drawn_box(services):
    _, plain = _ids(services)
    ring = [[100, 120], [140, 120], [140, 150], [100, 150], [100, 120]]
    drawn = DrawnRegion({"type": "Polygon", "coordinates": [ring]}, "pixel", "rectangle")
    window = drawn_window(plain, drawn, **POINT)
    assert window == Window(100, 120, 40, 30)
    _, prepared = _prepare(services, plain, Task.REGION, drawn)
    assert prepared.crop.window == tiles.context_window(plain, window, REGION_CONTEXT)
    assert prepared.region_px.xyxy == tiles.window_box_in_crop(prepared.crop, window)
    (back,) = tiles.boxes_to_raster_px(prepared.crop, [prepared.region_px])
    assert back.bounds == (100, 120, 140, 150)  # the box the model is asked about is the drawing


def test_a_clicked_point_is_its_square(services):
    _, plain = _ids(services)
    point = DrawnRegion({"type": "Point", "coordinates": [150, 100]}, "pixel", "point")
    _, prepared = _prepare(services, plain, Task.CAPTION, point)
    assert shape(prepared.region_geometry).bounds == (118, 68, 182, 132)  # 64 px square
    assert prepared.crop.window == tiles.region_window(plain, shape(prepared.region_geometry), "pixel")


@pytest.mark.parametrize("georeferenced", [True, False])
def test_answer_boxes_land_in_the_record_space(services, georeferenced):
    raster = {r.georeferenced: r for r in services.catalog_list()}[georeferenced]
    request, prepared = _prepare(services, raster, Task.GROUND, max_crop_px=128)
    boxes = (BoxPx(8.0, 16.0, 40.0, 32.0, label="roof", score=0.5),)
    answer = Answer(text="[1, 2, 3, 4]", task=Task.GROUND, boxes_px=boxes)
    record = build_record(raster, request, prepared, answer, model="m", adapter=None)
    assert record.coordinate_space == prepared.coordinate_space
    (stored,) = record.boxes
    space, (expected,) = tiles.boxes_to_result_space(prepared.crop, boxes)
    assert space == record.coordinate_space and stored.label == "roof"
    assert shape(stored.geometry).equals_exact(shape(tiles.to_feature(
        expected, coordinate_space=space, image=raster.name)["geometry"]), 1e-9)
    if not georeferenced:  # raster pixels: the crop is decimated 300 -> 128
        scale = raster.width / 128
        assert shape(stored.geometry).bounds == pytest.approx(
            (8 * scale, 16 * scale, 40 * scale, 32 * scale))


def test_tiles_and_crops_reuse_the_catalogs_datasets(services):
    geo, plain = _ids(services)
    for raster in (geo, plain):
        for z in range(3):
            services.render_tile(raster.raster_id, z, 0, 0, None)
        _prepare(services, raster, Task.CAPTION, max_crop_px=64)
        assert services.catalog.source(raster.raster_id).open_handles == 1  # opened once
