"""Crop pixels <-> lon/lat and raster pixels: round trips (hypothesis), exact corners, oriented
boxes, every box form, antimeridian safety, pixel space."""

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


@dataclass(frozen=True)
class XYXYBox:
    """A box type that only offers ``xyxy`` (and an optional angle)."""

    xyxy: tuple[float, float, float, float]
    angle_deg: float | None = None


def test_every_box_form_gives_the_same_polygons(rasters):
    crop = tiles.read_crop(tiles.open_raster(rasters["utm_rgb"]), Window(0, 0, 100, 100))
    forms = {
        "tuples": [(1, 2, 30, 40), (5, 6, 50, 60, 30.0)],
        "lists": [[1, 2, 30, 40], [5, 6, 50, 60, 30.0]],
        "objects": [Box(1, 2, 30, 40), Box(5, 6, 50, 60, angle_deg=30.0)],
        "xyxy objects": [XYXYBox((1, 2, 30, 40)), XYXYBox((5, 6, 50, 60), 30.0)],
        "array rows": list(np.array([[1, 2, 30, 40, 0], [5, 6, 50, 60, 30]])),
        "N x 5 array": np.array([[1, 2, 30, 40, 0], [5, 6, 50, 60, 30]], "float32"),
        "generator": (b for b in [Box(1, 2, 30, 40), (5, 6, 50, 60, 30.0)]),
    }
    expected = tiles.boxes_to_lonlat(crop, forms.pop("tuples"))
    for name, boxes in forms.items():
        got = tiles.boxes_to_lonlat(crop, boxes)
        assert len(got) == 2, name
        assert all(a.equals_exact(b, 1e-12) for a, b in zip(got, expected, strict=True)), name
    rotated, upright = expected[1], tiles.boxes_to_lonlat(crop, [(5, 6, 50, 60)])[0]
    assert not rotated.equals_exact(upright, 1e-9)


def test_boxes_to_lonlat_takes_an_n_by_4_array(rasters):
    raster = tiles.open_raster(rasters["utm_rgb"])
    crop = tiles.read_crop(raster, Window(0, 0, 100, 100))
    x0, y0, x1, y1 = 10.0, 20.0, 60.0, 50.0
    (polygon,) = tiles.boxes_to_lonlat(crop, np.array([[x0, y0, x1, y1]]))
    assert polygon.equals_exact(tiles.boxes_to_lonlat(crop, [(x0, y0, x1, y1)])[0], 0)
    assert tiles.as_boxes_px(np.array([[x0, y0, x1, y1]])).tolist() == [[x0, y0, x1, y1, 0.0]]
    assert tiles.boxes_to_lonlat(crop, np.zeros((0, 4))) == []
    assert tiles.boxes_to_lonlat(crop, []) == []


def test_plain_image_boxes_come_out_in_raster_pixels(rasters):
    raster = tiles.open_raster(rasters["plain_jpeg"])
    crop = tiles.read_crop(raster, Window(100, 50, 400, 300), max_side=200)
    polygon = tiles.boxes_to_raster_px(crop, [(10, 10, 20, 30)])[0]
    assert polygon.bounds == (120, 70, 140, 110)  # raster pixels: offset + 2x scale
    assert len(polygon.exterior.coords) == 5  # an affine map keeps edges straight
    assert tiles.boxes_to_result_space(crop, np.array([[10, 10, 20, 30]])) == ("pixel", [polygon])
    with pytest.raises(tiles.NotGeoreferencedError, match="boxes_to_raster_px") as info:
        tiles.boxes_to_lonlat(crop, [(10, 10, 20, 30)])
    assert isinstance(info.value, tiles.TilesError) and isinstance(info.value, ValueError)
    with pytest.raises(tiles.UnsupportedCRSError, match="not georeferenced"):
        tiles.lonlat_to_px(crop, [0.0], [0.0])


@pytest.mark.parametrize("name", ["utm_rgb", "rotated_rgb"])
def test_raster_px_and_lonlat_polygons_agree(rasters, name):
    raster = tiles.open_raster(rasters[name])
    crop = tiles.read_crop(raster, Window(30, 40, 300, 200), max_side=150)
    boxes = [(10, 20, 110, 70), (5, 5, 40, 30, 25.0)]
    px = tiles.boxes_to_raster_px(crop, boxes)
    assert px[0].bounds == (50, 80, 250, 180)  # offset (30, 40) + 2x decimation
    space, lonlat = tiles.boxes_to_result_space(crop, boxes)
    assert space == "lonlat" and len(lonlat) == 2
    to_lonlat = Transformer.from_crs(raster.crs, "EPSG:4326", always_xy=True)
    for polygon_px, polygon_lonlat in zip(px, lonlat, strict=True):
        coords = np.asarray(polygon_lonlat.exterior.coords)
        for corner in np.asarray(polygon_px.exterior.coords)[:4]:
            expected = to_lonlat.transform(*(raster.transform @ tuple(corner)))
            assert np.min(np.hypot(*(coords - expected).T)) < 1e-9


@pytest.mark.parametrize("box", [(5, 5, 1, 10), (0, 0, math.nan, 4), "0 0 1 1", (1, 2, 3),
                                 Box(0, 0, 0, 5), (0, 0, 4, 4, math.inf), ("a", 0, 4, 4),
                                 XYXYBox((0, 0, 4, -1))])
def test_bad_boxes(rasters, box):
    crop = tiles.read_crop(tiles.open_raster(rasters["utm_rgb"]), Window(0, 0, 32, 32))
    with pytest.raises(tiles.GeometryError, match="box 0"):
        tiles.boxes_to_lonlat(crop, [box])


@pytest.mark.parametrize("boxes, match", [
    (np.array([1.0, 2.0, 3.0, 4.0]), "N x 4"),  # one box, not a list of them
    (np.zeros((2, 3)), "N x 4"),
    (np.array([[0, 0, 4, 4], [3, 3, 1, 1]]), "box 1 needs finite x0 < x1"),
    ((1, 2, 3, 4), "one box"),
    (Box(1, 2, 3, 4), "pass \\[box\\]"),
    ("1 2 3 4", "pass \\[box\\]"),
    (42, "expected a list of boxes"),
])
def test_bad_box_lists_say_what_is_expected(rasters, boxes, match):
    crop = tiles.read_crop(tiles.open_raster(rasters["utm_rgb"]), Window(0, 0, 32, 32))
    with pytest.raises(tiles.GeometryError, match=match):
        tiles.boxes_to_raster_px(crop, boxes)
