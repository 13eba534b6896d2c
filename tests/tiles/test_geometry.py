"""Crop pixels <-> lon/lat: round trips (hypothesis), exact corners, oriented boxes,
antimeridian safety, pixel space."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pyproj import Transformer
from rasterio.windows import Window

import tiles

GEOREFERENCED = ["utm_rgb", "rotated_rgb", "geographic_rgb", "webmercator_rgb",
                 "antimeridian_rgb"]


@dataclass(frozen=True)
class Box:
    """Stand-in for any detector's box type: duck-typed x0, y0, x1, y1 (+ angle_deg)."""

    x0: float
    y0: float
    x1: float
    y1: float
    angle_deg: float | None = None


@pytest.mark.parametrize("name", GEOREFERENCED)
def test_px_lonlat_px_round_trip(rasters, name):
    raster = tiles.open_raster(rasters[name])

    @settings(max_examples=40, deadline=None)
    @given(
        col=st.integers(-20, raster.width - 10), row=st.integers(-20, raster.height - 10),
        size=st.integers(8, 300), max_side=st.integers(4, 256),
        fx=st.floats(0, 1), fy=st.floats(0, 1),
    )
    def check(col, row, size, max_side, fx, fy):
        assume(col + size > 0 and row + size > 0)  # windows must touch the raster
        crop = tiles.read_crop(raster, Window(col, row, size, size), max_side)
        x = np.array([fx * crop.width, 0.0, crop.width])
        y = np.array([fy * crop.height, crop.height, 0.0])
        lon, lat = tiles.px_to_lonlat(crop, x, y)
        x2, y2 = tiles.lonlat_to_px(crop, lon, lat)
        assert np.max(np.hypot(x2 - x, y2 - y)) <= 0.5
        assert np.max(np.hypot(x2 - x, y2 - y)) <= 1e-5  # in practice: float precision

    check()


@pytest.mark.parametrize("name", ["utm_rgb", "rotated_rgb", "antimeridian_rgb"])
def test_box_polygon_corners_round_trip(rasters, name):
    raster = tiles.open_raster(rasters[name])
    crop = tiles.read_crop(raster, Window(20, 10, 256, 160), max_side=128)

    @settings(max_examples=40, deadline=None)
    @given(st.floats(0, 120), st.floats(0, 70), st.floats(1, 60), st.floats(1, 40),
           st.floats(-180, 180))
    def check(x0, y0, w, h, angle):
        box = Box(x0, y0, x0 + w, y0 + h, angle)
        polygon = tiles.boxes_to_lonlat(crop, [box])[0]
        corners_px = np.asarray(tiles.box_to_polygon_px(box).exterior.coords)[:4]
        lon, lat = np.asarray(polygon.exterior.coords).T
        x, y = tiles.lonlat_to_px(crop, lon, lat)
        for cx, cy in corners_px:  # every corner survives densify/simplify, within 0.5 px
            assert np.min(np.hypot(x - cx, y - cy)) <= 0.5
        assert polygon.is_valid and polygon.area > 0

    check()


def test_box_corners_equal_pyproj(rasters):
    raster = tiles.open_raster(rasters["rotated_rgb"])
    crop = tiles.read_crop(raster, Window(30, 40, 300, 200), max_side=150)
    polygon = tiles.boxes_to_lonlat(crop, [(10, 20, 110, 70)])[0]
    to_lonlat = Transformer.from_crs(raster.crs, "EPSG:4326", always_xy=True)
    coords = np.asarray(polygon.exterior.coords)
    for corner in [(10, 20), (110, 20), (110, 70), (10, 70)]:
        # crop px -> raster px (x2 decimation, offset) -> CRS by the raster geotransform
        raster_px = (30 + corner[0] * 2, 40 + corner[1] * 2)
        expected = to_lonlat.transform(*(raster.transform @ raster_px))
        assert np.min(np.hypot(*(coords - expected).T)) < 1e-9


def test_long_edges_are_densified(rasters):
    raster = tiles.open_raster(rasters["antimeridian_rgb"])  # 1 km pixels, far from the CM
    crop = tiles.read_crop(raster, Window(0, 0, 300, 200))
    polygon = tiles.boxes_to_lonlat(crop, [(0, 0, 300, 200)])[0]
    assert len(polygon.exterior.coords) > 5  # curved in lon/lat: intermediate vertices kept
    geographic = tiles.open_raster(rasters["geographic_rgb"])
    straight = tiles.boxes_to_lonlat(tiles.read_crop(geographic, Window(0, 0, 50, 50)),
                                     [(0, 0, 50, 50)])[0]
    assert len(straight.exterior.coords) == 5  # same CRS: collinear points dropped


def test_antimeridian_box_does_not_wrap_the_globe(rasters):
    raster = tiles.open_raster(rasters["antimeridian_rgb"])
    crop = tiles.read_crop(raster, Window(0, 0, 300, 200))
    west, _, east, _ = raster.bounds_lonlat
    polygon = tiles.boxes_to_lonlat(crop, [(10, 10, 290, 190)])[0]
    minx, _, maxx, _ = polygon.bounds
    assert maxx - minx < 10 and minx < 180 < maxx
    assert west <= minx and maxx <= east


def test_oriented_box_convention():
    unrotated = tiles.oriented_box_to_polygon(50, 40, 20, 10, 0)
    assert unrotated.bounds == (40, 35, 60, 45)
    quarter = tiles.oriented_box_to_polygon(50, 40, 20, 10, 90)
    assert quarter.bounds == pytest.approx((45, 30, 55, 50))  # w and h swap
    # counter-clockwise on screen (y down): the top-right corner (60, 35) moves to the
    # top-left side: rotated by 90 it lands at (45, 30)
    coords = np.asarray(quarter.exterior.coords)[:4]
    assert coords[1] == pytest.approx((45, 30))
    assert tiles.oriented_box_to_polygon(0, 0, 4, 2, 30).area == pytest.approx(8)


def test_duck_typed_and_tuple_boxes_agree(rasters):
    crop = tiles.read_crop(tiles.open_raster(rasters["utm_rgb"]), Window(0, 0, 100, 100))
    as_tuple, as_object = tiles.boxes_to_lonlat(crop, [(1, 2, 30, 40), Box(1, 2, 30, 40)])
    assert as_tuple.equals_exact(as_object, 0)
    rotated = tiles.boxes_to_lonlat(crop, [Box(1, 2, 30, 40, angle_deg=45)])[0]
    assert not rotated.equals_exact(as_tuple, 1e-9)


def test_plain_image_boxes_stay_in_pixels(rasters):
    raster = tiles.open_raster(rasters["plain_jpeg"])
    crop = tiles.read_crop(raster, Window(100, 50, 400, 300), max_side=200)
    polygon = tiles.boxes_to_lonlat(crop, [(10, 10, 20, 30)])[0]
    assert polygon.bounds == (120, 70, 140, 110)  # raster pixels: offset + 2x scale
    with pytest.raises(tiles.UnsupportedCRSError, match="not georeferenced"):
        tiles.lonlat_to_px(crop, [0.0], [0.0])


@pytest.mark.parametrize("box", [(5, 5, 1, 10), (0, 0, math.nan, 4), "0 0 1 1", (1, 2, 3),
                                 Box(0, 0, 0, 5)])
def test_bad_boxes(rasters, box):
    crop = tiles.read_crop(tiles.open_raster(rasters["utm_rgb"]), Window(0, 0, 32, 32))
    with pytest.raises(tiles.GeometryError):
        tiles.boxes_to_lonlat(crop, [box])
