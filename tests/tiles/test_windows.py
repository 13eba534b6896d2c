"""Windows between a drawn region and a crop: whole raster, context around a box, box in a crop."""

from __future__ import annotations

import math

import pytest
from rasterio.windows import Window

import tiles


@pytest.fixture
def utm(rasters):
    return tiles.open_raster(rasters["utm_rgb"])


def test_full_window_covers_the_raster(utm):
    assert tiles.full_window(utm) == Window(0, 0, utm.width, utm.height)
    crop = tiles.read_crop(utm, tiles.full_window(utm), max_side=64)
    assert crop.window == Window(0, 0, utm.width, utm.height) and crop.valid.all()


def test_context_window_grows_about_the_centre(utm):
    window = Window(100, 80, 40, 30)
    assert tiles.context_window(utm, window, 2.0) == Window(80, 65, 80, 60)
    assert tiles.context_window(utm, window, 1.0) == window
    grown = tiles.context_window(utm, Window(100, 80, 41, 31), 2.0)  # half pixels: covered
    assert grown == Window(79, 64, 83, 63)
    assert (grown.col_off + grown.width / 2, grown.row_off + grown.height / 2) == (120.5, 95.5)


def test_context_window_is_clipped_to_the_raster(utm):
    corner = tiles.context_window(utm, Window(0, 0, 50, 40), 3.0)
    assert corner == Window(0, 0, 100, 80)
    far = tiles.context_window(utm, Window(utm.width - 10, utm.height - 10, 10, 10), 5.0)
    assert far == Window(utm.width - 30, utm.height - 30, 30, 30)
    assert tiles.context_window(utm, tiles.full_window(utm), 2.0) == tiles.full_window(utm)


@pytest.mark.parametrize("window, factor, error", [
    (Window(0, 0, 10, 10), 0.5, tiles.CropError),
    (Window(0, 0, 10, 10), math.nan, tiles.CropError),
    (Window(0, 0, 10, 10), True, tiles.CropError),
    (Window(0, 0, 0, 10), 2.0, tiles.CropError),
    ((0, 0, 10, 10), 2.0, tiles.CropError),
    (Window(10_000, 10_000, 10, 10), 2.0, tiles.RegionOutsideError),
])
def test_context_window_errors(utm, window, factor, error):
    with pytest.raises(error):
        tiles.context_window(utm, window, factor)


def test_window_box_in_a_native_crop(utm):
    window = Window(100, 80, 40, 30)
    crop = tiles.read_crop(utm, tiles.context_window(utm, window, 2.0))
    assert tiles.window_box_in_crop(crop, window) == (20.0, 15.0, 60.0, 45.0)
    # the box maps back onto the window it came from
    (polygon,) = tiles.boxes_to_raster_px(crop, [tiles.window_box_in_crop(crop, window)])
    assert polygon.bounds == (100, 80, 140, 110)


def test_window_box_in_a_decimated_crop_is_clipped(utm):
    crop = tiles.read_crop(utm, Window(0, 0, 400, 200), max_side=100)  # 4x decimation
    assert crop.scale_x == crop.scale_y == 4.0
    assert tiles.window_box_in_crop(crop, Window(40, 20, 80, 40)) == (10.0, 5.0, 30.0, 15.0)
    assert tiles.window_box_in_crop(crop, Window(360, 180, 100, 100)) == (90.0, 45.0, 100.0, 50.0)
    with pytest.raises(tiles.CropError, match="does not overlap"):
        tiles.window_box_in_crop(crop, Window(500, 0, 10, 10))
    with pytest.raises(tiles.CropError, match="rasterio.windows.Window"):
        tiles.window_box_in_crop(crop, (0, 0, 10, 10))
