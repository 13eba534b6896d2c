"""Tiling plans (tiles/tiling.py): coverage, polygon skipping, resolution, windowed reads."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.windows import Window
from shapely.geometry import Polygon, box

import tiles
from tests.tiles import rasters as gen
from tiles import Raster, TilingError, plan_tiles, tile_crops


def pixel_raster(width: int, height: int) -> Raster:
    """A plain-image Raster value (nothing on disk: planning reads no pixels)."""
    return Raster(
        path=Path("plain.png"), crs=None, transform=Affine.identity(), width=width,
        height=height, count=3, dtypes=("uint8",) * 3, nodata=None,
        colorinterp=("red", "green", "blue"), descriptions=(None,) * 3, overviews=(),
        bounds_crs=(0.0, 0.0, float(width), float(height)), bounds_lonlat=None,
        georeferenced=False, tiled=False, driver="PNG",
    )


@st.composite
def plans(draw: st.DrawFn) -> tuple[Raster, Window, tiles.TilePlan]:
    width, height = draw(st.integers(1, 1500)), draw(st.integers(1, 1500))
    col0, row0 = draw(st.integers(0, width - 1)), draw(st.integers(0, height - 1))
    win = Window(col0, row0, draw(st.integers(1, width - col0)),
                 draw(st.integers(1, height - row0)))
    tile_px = draw(st.integers(8, 400))
    overlap_px = draw(st.integers(0, tile_px - 1))
    decimation = draw(st.sampled_from([1.0, 1.0, 1.5, 2.0, 3.3]))
    stride = max(1.0, (tile_px - overlap_px) * decimation)
    if (win.width / stride + 1) * (win.height / stride + 1) > 20_000:  # keep each example fast
        overlap_px = draw(st.integers(0, tile_px // 2))
    raster = pixel_raster(width, height)
    return raster, win, plan_tiles(raster, win, tile_px=tile_px, overlap_px=overlap_px,
                                   decimation=decimation)


@settings(max_examples=150, deadline=None)
@given(plans())
def test_every_window_pixel_is_in_a_tile_and_tiles_stay_inside(case) -> None:
    raster, win, plan = case
    span = plan.span_px
    assert plan.window == win
    assert len(plan.tiles) == plan.grid_shape[0] * plan.grid_shape[1] and plan.skipped == 0
    count = np.zeros((raster.height + 1, raster.width + 1), np.int32)  # 2-D difference array
    for tile in plan.tiles:
        x0, y0, x1, y1 = tile.bounds_px
        assert 0 <= x0 < x1 <= raster.width and 0 <= y0 < y1 <= raster.height
        for lo, hi, w_lo, w_len, size in ((x0, x1, win.col_off, win.width, raster.width),
                                          (y0, y1, win.row_off, win.height, raster.height)):
            if w_len >= span:  # full size and inside the window
                assert hi - lo == span and w_lo <= lo and hi <= w_lo + w_len
            else:  # one tile covering the window, full size unless the raster is smaller
                assert hi - lo == min(span, size) and lo <= w_lo and w_lo + w_len <= hi
        if (x1 - x0, y1 - y0) == (span, span):
            assert tile.out_px == (plan.tile_px, plan.tile_px)
        count[y0, x0] += 1
        count[y0, x1] -= 1
        count[y1, x0] -= 1
        count[y1, x1] += 1
    cover = count.cumsum(0).cumsum(1)
    inside = cover[win.row_off:win.row_off + win.height, win.col_off:win.col_off + win.width]
    assert inside.min() >= 1, "a window pixel (edge strip?) is in no tile"


def test_last_tile_is_shifted_back_and_overlap_is_kept() -> None:
    plan = plan_tiles(pixel_raster(1000, 300), tile_px=256, overlap_px=32)
    assert plan.grid_shape == (2, 5)  # rows: 0, 44; cols: 0, 224, 448, 672, 744
    assert [t.window.col_off for t in plan.tiles[:5]] == [0, 224, 448, 672, 744]
    assert [t.window.row_off for t in plan.tiles[::5]] == [0, 44]
    assert {(t.window.width, t.window.height) for t in plan.tiles} == {(256, 256)}
    assert plan.tiles[-1].bounds_px == (744, 44, 1000, 300)


def test_window_smaller_than_a_tile_gets_one_full_tile_inside_the_raster() -> None:
    raster = pixel_raster(2000, 300)
    plan = plan_tiles(raster, Window(1900, 100, 50, 20), tile_px=512, overlap=0.25)
    (tile,) = plan.tiles
    assert tile.bounds_px == (1488, 0, 2000, 300)  # shifted into the raster, clipped in y
    assert tile.out_px == (512, 300)
    assert tiles.full_window(raster) != plan.window


def test_fractional_window_and_overlap_fraction() -> None:
    plan = plan_tiles(pixel_raster(800, 800), Window(10.4, 20.6, 600.2, 300.1), tile_px=256,
                      overlap=0.125)
    assert plan.window == Window(10, 20, 601, 301)
    assert plan.overlap_px == 32


def test_polygon_skips_tiles_outside_and_keeps_every_polygon_pixel() -> None:
    raster = pixel_raster(2048, 2048)
    triangle = Polygon([(0, 0), (2048, 0), (0, 2048)])
    plan = plan_tiles(raster, tiles.full_window(raster), tile_px=256, overlap_px=0,
                      polygon=triangle)
    assert plan.grid_shape == (8, 8)
    assert len(plan.tiles) == 36 and plan.skipped_outside == 28  # diagonal tiles touch only
    kept = [box(*t.bounds_px) for t in plan.tiles]
    assert all(k.intersection(triangle).area > 0 for k in kept)
    assert triangle.difference(shapely.union_all(kept)).area == 0
    assert [t.index for t in plan.tiles] == list(range(36))
    # the caller's polygon is left as it was: planning prepares a private copy. A prepared
    # geometry carries GEOS state built lazily by predicates, and the app's scene search merges
    # with the same region in two threads (a shared prepared polygon segfaulted there).
    assert not shapely.is_prepared(triangle)


def test_polygon_as_geojson_sets_the_window() -> None:
    geojson = {"type": "Polygon",
               "coordinates": [[[300, 300], [900, 300], [900, 500], [300, 500], [300, 300]]]}
    plan = plan_tiles(pixel_raster(2000, 2000), tile_px=256, overlap_px=0, polygon=geojson)
    assert plan.window == Window(300, 300, 600, 200)
    assert plan.skipped_outside == 0 and len(plan.tiles) == 3


def test_skip_predicate_counts_empty_tiles() -> None:
    plan = plan_tiles(pixel_raster(1024, 512), tile_px=256, overlap_px=0,
                      skip=lambda tile: tile.col == 0)
    assert len(plan.tiles) == 6 and plan.skipped_empty == 2 and plan.skipped == 2
    assert [t.index for t in plan.tiles] == list(range(6))


def test_decimation_covers_more_ground_per_tile() -> None:
    plan = plan_tiles(pixel_raster(3000, 2000), tile_px=512, overlap_px=64, decimation=2)
    assert plan.span_px == 1024 and plan.decimation == 2.0
    assert plan.grid_shape == (3, 4)  # stride 1024 - 128 = 896
    assert all(t.out_px == (512, 512) and t.window.width == 1024 for t in plan.tiles)


def test_gsd_gives_the_decimation(rasters: dict[str, Path]) -> None:
    utm = tiles.open_raster(rasters["utm_rgb"])  # 10 m pixels
    assert tiles.ground_resolution_m(utm) == pytest.approx((10.0, 10.0))
    plan = plan_tiles(utm, tile_px=64, overlap_px=0, gsd_m=25.0)
    assert plan.decimation == 2.5 and plan.span_px == 160
    with pytest.raises(TilingError, match="finer than"):
        plan_tiles(utm, tile_px=64, gsd_m=5.0)


def test_ground_resolution_rotated_and_geographic(rasters: dict[str, Path]) -> None:
    rotated = tiles.open_raster(rasters["rotated_rgb"])
    assert tiles.ground_resolution_m(rotated) == pytest.approx((10.0, 10.0))
    geo = tiles.open_raster(rasters["geographic_rgb"])  # 0.0005 degree pixels at ~52.5 N
    x_m, y_m = tiles.ground_resolution_m(geo)
    lat = 52.6 - 150 * 0.0005
    assert x_m == pytest.approx(0.0005 * 111_320 * math.cos(math.radians(lat)), rel=5e-3)
    assert y_m == pytest.approx(0.0005 * 111_250, rel=5e-3)
    with pytest.raises(tiles.NotGeoreferencedError, match="decimation"):
        tiles.ground_resolution_m(pixel_raster(10, 10))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"overlap_px": 256}, r"overlap_px must be an integer in \[0, 256\)"),
    ({"overlap": 1.0}, r"overlap must be a fraction"),
    ({"overlap": 0.1, "overlap_px": 3}, "not both"),
    ({"tile_px": 4}, "tile_px must be an integer >= 8"),
    ({"decimation": 0.5}, "decimation must be >= 1"),
    ({"decimation": 2, "gsd_m": 3.0}, "not both"),
])
def test_bad_parameters_say_what_to_do(kwargs: dict, message: str) -> None:
    kwargs = {"tile_px": 256, **kwargs}
    with pytest.raises(TilingError, match=message):
        plan_tiles(pixel_raster(100, 100), **kwargs)


def test_window_outside_the_raster() -> None:
    with pytest.raises(tiles.RegionOutsideError):
        plan_tiles(pixel_raster(100, 100), Window(200, 0, 10, 10), tile_px=64)


def rotated_with_nodata(path: Path) -> Path:
    """700x500 uint8 RGB, rotated UTM grid, nodata 0 in the left 200 columns."""
    data = gen.gradient_rgb(500, 700)
    data[:, :, :200] = 0
    with rasterio.open(path, "w", driver="GTiff", width=700, height=500, count=3,
                       dtype="uint8", crs=gen.UTM33, transform=gen.rotated_transform(),
                       nodata=0, tiled=True, blockxsize=128, blockysize=128) as dst:
        dst.write(data)
    return path


def test_tile_crops_reads_each_tile_window_of_a_rotated_raster(tmp_path: Path) -> None:
    path = rotated_with_nodata(tmp_path / "rotated_nodata.tif")
    raster = tiles.open_raster(path)
    assert raster.is_rotated
    skip = tiles.empty_tile_predicate(raster)
    plan = plan_tiles(raster, tile_px=128, overlap_px=16, skip=skip)
    assert plan.grid_shape == (5, 7) and plan.skipped_empty == 5  # column 0 is all nodata
    with rasterio.open(path) as ds:
        for tile, crop in tile_crops(raster, plan):
            assert crop.window == tile.window and crop.image.shape == (128, 128, 3)
            assert crop.transform == raster.transform * Affine.translation(
                tile.window.col_off, tile.window.row_off)
            expected = ds.read(window=tile.window).transpose(1, 2, 0)
            np.testing.assert_array_equal(crop.image, expected)


def test_tile_crops_decimated_maps_back_to_raster_pixels(tmp_path: Path) -> None:
    path = rotated_with_nodata(tmp_path / "rotated_nodata.tif")
    raster = tiles.open_raster(path)
    plan = plan_tiles(raster, Window(200, 0, 500, 500), tile_px=64, overlap_px=8, decimation=2)
    for tile, crop in tile_crops(raster, plan):
        assert crop.image.shape == (64, 64, 3) and crop.scale_x == crop.scale_y == 2.0
        found = tiles.tile_detections(tile, crop, [(0, 0, 64, 64)], [0.5], ["all"])
        np.testing.assert_allclose(found.boxes_px[0], tile.bounds_px)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(-50, 1250), st.floats(-50, 950)), min_size=3, max_size=8),
       st.integers(64, 300), st.integers(0, 8))
def test_kept_tiles_cover_the_polygon_and_skipped_ones_miss_it(points, tile_px, eighths) -> None:
    polygon = shapely.MultiPoint(points).convex_hull
    raster = pixel_raster(1200, 900)
    inside = polygon.intersection(box(0, 0, 1200, 900))
    if polygon.area < 1 or inside.area < 1:
        return
    plan = plan_tiles(raster, tile_px=tile_px, overlap_px=tile_px * eighths // 16,
                      polygon=polygon)
    kept = shapely.union_all([box(*t.bounds_px) for t in plan.tiles])
    assert inside.difference(kept).area < 1e-6 * inside.area
    assert all(box(*t.bounds_px).intersection(polygon).area > 0 for t in plan.tiles)
    assert len(plan.tiles) + plan.skipped_outside == plan.grid_shape[0] * plan.grid_shape[1]
