"""read_crop: native and decimated reads, exact crop transforms, padding, stretch, errors."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.windows import Window

import tiles
from tests.tiles import rasters as gen


def _rasterio_rgb(path, window, out_shape=None, resampling=Resampling.nearest, overview=None):
    kwargs = {} if overview is None else {"overview_level": overview}
    with rasterio.open(path, **kwargs) as ds:
        shape = None if out_shape is None else (3, *out_shape)
        data = ds.read([1, 2, 3], window=window, out_shape=shape, resampling=resampling)
    return data.transpose(1, 2, 0)


def test_native_crop_equals_rasterio_read(catalog, rasters):
    raster = catalog.get(catalog.open(rasters["utm_rgb"]))
    window = Window(10, 20, 200, 150)
    crop = tiles.read_crop(raster, window, max_side=1024)
    assert crop.image.shape == (150, 200, 3) and crop.image.dtype == np.uint8
    assert np.array_equal(crop.image, _rasterio_rgb(rasters["utm_rgb"], window))
    assert crop.valid.all() and crop.scale_x == crop.scale_y == 1.0
    assert crop.transform == raster.transform @ Affine.translation(10, 20)
    assert crop.crs == raster.crs and crop.window == window
    assert crop.raster_id == raster.raster_id and crop.raster_path == raster.path


def test_decimated_crop_matches_out_shape_read(catalog, rasters):
    raster = catalog.get(catalog.open(rasters["utm_rgb"]))
    window = Window(0, 0, 512, 384)
    crop = tiles.read_crop(raster, window, max_side=128)
    assert crop.image.shape == (96, 128, 3) and crop.scale_x == crop.scale_y == 4.0
    expected = _rasterio_rgb(rasters["utm_rgb"], window, (96, 128), Resampling.average)
    assert np.array_equal(crop.image, expected)
    assert crop.transform == raster.transform @ Affine.scale(4.0)


def test_decimated_crop_reads_overviews(catalog, rasters):
    # The file's 4x overview was built with "average"; a nearest-neighbour decimation of the
    # full-resolution pixels would differ from it. Equality shows GDAL served the overview.
    raster = catalog.get(catalog.open(rasters["utm_rgb"]))
    crop = tiles.read_crop(raster, Window(0, 0, 512, 384), 128, resampling=Resampling.nearest)
    overview = _rasterio_rgb(rasters["utm_rgb"], None, overview=1)
    full_res_nearest = _rasterio_rgb(rasters["utm_rgb"], None)[2::4, 2::4]
    assert np.array_equal(crop.image, overview)
    assert not np.array_equal(overview, full_res_nearest)


def test_decimated_crop_without_overviews(catalog, rasters):
    raster = catalog.get(catalog.open(rasters["utm_rgb_noovr"]))
    assert raster.overviews == ()
    crop = tiles.read_crop(raster, Window(0, 0, 512, 384), max_side=128)
    expected = _rasterio_rgb(rasters["utm_rgb_noovr"], Window(0, 0, 512, 384), (96, 128),
                             Resampling.average)
    assert np.array_equal(crop.image, expected)


def test_crop_transform_places_pixels_exactly(catalog, rasters):
    path = rasters["rotated_rgb"]
    raster = catalog.get(catalog.open(path))
    window = Window(150, 20, 160, 120)
    crop = tiles.read_crop(raster, window, max_side=80)  # 2x decimation
    col, row = gen.MARKER_PX
    marker_centre_crs = raster.transform @ (col + 12, row + 12)
    x_px, y_px = ~crop.transform @ marker_centre_crs
    assert (x_px, y_px) == pytest.approx(((col + 12 - 150) / 2, (row + 12 - 20) / 2))
    assert tuple(crop.image[int(y_px), int(x_px)]) == (255, 0, 0)


def test_partly_outside_window_is_padded_not_shifted(catalog, rasters):
    path = rasters["utm_rgb"]
    raster = catalog.get(catalog.open(path))
    crop = tiles.read_crop(raster, Window(-50, -30, 200, 100))
    assert crop.image.shape == (100, 200, 3)
    assert np.array_equal(crop.image[30:, 50:], _rasterio_rgb(path, Window(0, 0, 150, 70)))
    assert not crop.image[:30].any() and not crop.image[:, :50].any()
    assert crop.valid[30:, 50:].all() and not crop.valid[:30].any() and not crop.valid[:, :50].any()
    # crop pixel (50, 30) is raster pixel (0, 0): same CRS coordinates
    assert crop.transform @ (50, 30) == pytest.approx(raster.transform @ (0, 0))


def test_decimated_partly_outside(catalog, rasters):
    path = rasters["utm_rgb"]
    raster = catalog.get(catalog.open(path))
    crop = tiles.read_crop(raster, Window(-256, 0, 512, 384), max_side=128)
    expected = _rasterio_rgb(path, Window(0, 0, 256, 384), (96, 64), Resampling.average)
    assert np.array_equal(crop.image[:, 64:], expected)
    assert not crop.valid[:, :64].any() and crop.valid[:, 64:].all()


def test_uint16_crop_is_stretched_rgb(catalog, rasters):
    raster = catalog.get(catalog.open(rasters["uint16_4band"]))
    crop = tiles.read_crop(raster, Window(0, 0, 256, 256))
    red = crop.image[100, :, 0].astype(int)
    assert red[10] < 40 and red[-10] > 215 and np.all(np.diff(red[70:]) >= 0)
    rows, cols = gen.NODATA_BLOCK
    assert not crop.valid[rows, cols].any() and not crop.image[rows, cols].any()
    assert crop.valid[100:, 100:].all()


@pytest.mark.parametrize("name", ["nodata_rgb", "alpha_rgba", "float32_nan"])
def test_valid_mask(catalog, rasters, name):
    raster = catalog.get(catalog.open(rasters[name]))
    crop = tiles.read_crop(raster, Window(0, 0, 128, 128))
    rows, cols = gen.NODATA_BLOCK
    assert not crop.valid[rows, cols].any() and crop.valid[64:, 64:].all()


def test_plain_image_crop_is_in_pixel_space(catalog, rasters):
    raster = catalog.get(catalog.open(rasters["plain_jpeg"]))
    crop = tiles.read_crop(raster, Window(100, 50, 400, 300), max_side=200)
    assert crop.crs is None and not crop.georeferenced
    assert crop.image.shape == (150, 200, 3)
    assert crop.transform @ (0, 0) == (100, 50) and crop.transform @ (200, 150) == (500, 350)


def test_palette_crop(catalog, rasters):
    raster = catalog.get(catalog.open(rasters["palette"]))
    crop = tiles.read_crop(raster, Window(0, 0, 128, 128), max_side=64)
    assert tuple(crop.image[10, 40]) == (0, 255, 0)  # class 2 -> green, never averaged


def test_crop_without_catalog(rasters):
    raster = tiles.open_raster(rasters["utm_rgb"])
    crop = tiles.read_crop(raster, Window(0, 0, 64, 64))
    assert np.array_equal(crop.image, _rasterio_rgb(rasters["utm_rgb"], Window(0, 0, 64, 64)))


@pytest.mark.parametrize(
    "window, max_side, error, match",
    [
        (Window(0, 0, 10, 10), 0, tiles.CropError, "max_side"),
        (Window(0, 0, 10, 10), 10.5, tiles.CropError, "max_side"),
        ((0, 0, 10, 10), 64, tiles.CropError, "rasterio.windows.Window"),
        (Window(0, 0, 0, 10), 64, tiles.CropError, "width and height > 0"),
        (Window(600, 0, 10, 10), 64, tiles.RegionOutsideError, "lon/lat bounds"),
    ],
)
def test_bad_crop_requests(catalog, rasters, window, max_side, error, match):
    raster = catalog.get(catalog.open(rasters["utm_rgb"]))
    with pytest.raises(error, match=match):
        tiles.read_crop(raster, window, max_side)


def test_crop_shape():
    assert tiles.crop_shape(Window(0, 0, 100, 50), 1024) == (50, 100)
    assert tiles.crop_shape(Window(0, 0, 10000, 5000), 1024) == (512, 1024)
    assert tiles.crop_shape(Window(0, 0, 3000, 1), 100) == (1, 100)
