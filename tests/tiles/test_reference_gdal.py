"""Reference checks against GDAL/PROJ on the real rasters in ../shared/data.

* A window from a projected box equals what ``gdal_translate -projwin ulx uly lrx lry`` reads:
  GDAL (apps/gdal_translate_lib.cpp) turns the box into a source window with
  ``xoff = floor((ulx - gt0) / gt1 + 0.001)``, ``yoff = floor((uly - gt3) / gt5 + 0.001)``,
  ``xsize = floor((lrx - ulx) / gt1 + 0.5)``, ``ysize = floor((lry - uly) / gt5 + 0.5)``
  (nearest resampling) and copies those pixels; the reference read below does exactly that
  with plain rasterio, and our region_window + read_crop must match pixel for pixel.
* Box corners from boxes_to_lonlat equal a direct pyproj transform of the geotransform.
* Footprints equal rasterio's densified transform_bounds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from shapely.geometry import box

import tiles
from tests.tiles.conftest import decode_png, tile_pixel_of


def real_rasters(shared_data):
    paths = sorted((shared_data / "geotiff").glob("*.tif"))
    for folder in ("rsvqa_lr", "rsvqa_hr"):
        paths += sorted((shared_data / folder / "images").glob("*.tif"))[:3]
    assert paths, f"no real rasters found under {shared_data}"
    return paths


def gdal_projwin_window(gt: tuple, ulx: float, uly: float, lrx: float, lry: float) -> Window:
    """gdal_translate's -projwin -> source window (nearest resampling)."""
    return Window(
        math.floor((ulx - gt[0]) / gt[1] + 0.001), math.floor((uly - gt[3]) / gt[5] + 0.001),
        math.floor((lrx - ulx) / gt[1] + 0.5), math.floor((lry - uly) / gt[5] + 0.5),
    )


def test_window_reads_equal_gdal_translate_projwin(shared_data):
    rng = np.random.default_rng(7)
    for path in real_rasters(shared_data):
        raster = tiles.open_raster(path)
        with rasterio.open(path) as ds:
            gt = ds.transform.to_gdal()
            for _ in range(5):
                w = int(rng.integers(8, min(ds.width, 300)))
                h = int(rng.integers(8, min(ds.height, 300)))
                c0 = int(rng.integers(0, ds.width - w))
                r0 = int(rng.integers(0, ds.height - h))
                ulx, uly = gt[0] + c0 * gt[1], gt[3] + r0 * gt[5]
                lrx, lry = ulx + w * gt[1], uly + h * gt[5]
                expected_window = gdal_projwin_window(gt, ulx, uly, lrx, lry)
                reference = ds.read([1, 2, 3], window=expected_window).transpose(1, 2, 0)
                window = tiles.region_window(raster, box(ulx, lry, lrx, uly), raster.crs)
                assert window == expected_window, path.name
                crop = tiles.read_crop(raster, window, max_side=4096)
                assert np.array_equal(crop.image, reference), path.name


def test_box_corners_equal_pyproj(shared_data):
    rng = np.random.default_rng(11)
    for path in real_rasters(shared_data):
        raster = tiles.open_raster(path)
        with rasterio.open(path) as ds:
            gt = ds.transform.to_gdal()
            to_lonlat = Transformer.from_crs(ds.crs.to_wkt(), "EPSG:4326", always_xy=True)
        window = Window(10, 20, min(raster.width, raster.height) - 40,
                        min(raster.width, raster.height) - 40)
        crop = tiles.read_crop(raster, window, max_side=97)  # odd decimation on purpose
        x0, y0 = rng.uniform(0, 40, 2)
        x1, y1 = x0 + rng.uniform(5, 50), y0 + rng.uniform(5, 50)
        polygon = tiles.boxes_to_lonlat(crop, [(x0, y0, x1, y1)])[0]
        coords = np.asarray(polygon.exterior.coords)
        sx, sy = window.width / crop.width, window.height / crop.height
        for cx, cy in [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]:
            col, row = window.col_off + cx * sx, window.row_off + cy * sy
            x = gt[0] + col * gt[1] + row * gt[2]
            y = gt[3] + col * gt[4] + row * gt[5]
            lon, lat = to_lonlat.transform(x, y)
            assert np.min(np.hypot(coords[:, 0] - lon, coords[:, 1] - lat)) < 1e-9, path.name


def test_footprints_equal_rasterio(shared_data):
    for path in real_rasters(shared_data):
        raster = tiles.open_raster(path)
        with rasterio.open(path) as ds:
            expected = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=21)
        assert raster.bounds_lonlat == pytest.approx(expected, abs=1e-7), path.name


def test_naip_presets_on_real_data(shared_data, tmp_path):
    path = shared_data / "geotiff" / "m_4709963_se_14_1_20200831.tif"
    with tiles.Catalog(tmp_path) as catalog:
        raster = catalog.get(catalog.open(path))
        crop_rgb = tiles.read_crop(raster, Window(200, 200, 64, 64), preset="naip-rgb")
        crop_cir = tiles.read_crop(raster, Window(200, 200, 64, 64), preset="naip-false-color")
        with rasterio.open(path) as ds:
            bands = ds.read(window=Window(200, 200, 64, 64))
        assert np.array_equal(crop_rgb.image, bands[[0, 1, 2]].transpose(1, 2, 0))
        assert np.array_equal(crop_cir.image, bands[[3, 0, 1]].transpose(1, 2, 0))
        west, south, east, north = raster.bounds_lonlat
        x, y, _, _ = tile_pixel_of((west + east) / 2, (south + north) / 2, 14)
        tile = decode_png(tiles.render_tile(raster, 14, x, y, preset="naip-false-color"))
        assert tile[..., 3].max() == 255 and tile[..., :3].max() > 0


def test_real_cog_tile_matches_rio_tiler(shared_data, tmp_path):
    from rio_tiler.io import Reader

    path = shared_data / "geotiff" / "cogeo.tif"
    with tiles.Catalog(tmp_path) as catalog:
        raster = catalog.get(catalog.open(path))
        west, south, east, north = raster.bounds_lonlat
        x, y, _, _ = tile_pixel_of((west + east) / 2, (south + north) / 2, 17)
        ours = decode_png(tiles.render_tile(raster, 17, x, y))
    with Reader(str(path)) as reader:
        reference = reader.tile(x, y, 17, indexes=(1, 2, 3))
    assert np.array_equal(ours[..., :3], reference.array.data.transpose(1, 2, 0))
    assert np.array_equal(ours[..., 3], reference.mask)
