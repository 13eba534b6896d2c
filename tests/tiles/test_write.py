"""write_raster: layouts, georeferencing, COG option, atomicity, errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
import rasterio
from affine import Affine

import tiles

TRANSFORM = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_300_000.0)


def test_hwc_and_chw_write_the_same_pixels(tmp_path):
    chw = np.random.default_rng(0).integers(0, 255, (3, 40, 60), dtype="uint8")
    a = tiles.write_raster(tmp_path / "chw.tif", chw, "EPSG:32633", TRANSFORM)
    b = tiles.write_raster(tmp_path / "hwc.tif", chw.transpose(1, 2, 0), "EPSG:32633", TRANSFORM,
                           colorinterp=("red", "green", "blue"), descriptions=("r", "g", "b"))
    with rasterio.open(a) as ds_a, rasterio.open(b) as ds_b:
        assert np.array_equal(ds_a.read(), chw) and np.array_equal(ds_b.read(), chw)
        assert ds_b.crs.to_epsg() == 32633 and ds_b.transform == TRANSFORM
        assert ds_b.descriptions == ("r", "g", "b")
    raster = tiles.open_raster(b)
    assert raster.colorinterp == ("red", "green", "blue")


def test_cog_option(tmp_path):
    data = np.random.default_rng(1).integers(0, 60000, (2, 1200, 1100), dtype="uint16")
    path = tiles.write_raster(tmp_path / "c.tif", data, "EPSG:32633", TRANSFORM, nodata=0,
                              cog=True)
    with rasterio.open(path) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.profile["tiled"] and ds.overviews(1) and ds.nodata == 0
        assert np.array_equal(ds.read(), data)
    assert os.listdir(tmp_path) == ["c.tif"]


def test_plain_raster_without_georeferencing(tmp_path):
    path = tiles.write_raster(tmp_path / "p.tif", np.zeros((20, 30), "uint8"), None, None)
    raster = tiles.open_raster(path)
    assert not raster.georeferenced and (raster.width, raster.height) == (30, 20)


def test_overviews_and_tiling(tmp_path):
    path = tiles.write_raster(tmp_path / "o.tif", np.zeros((1, 512, 512), "uint8"), "EPSG:4326",
                              Affine(0.001, 0, 10, 0, -0.001, 50), tiled=True, overviews=(2, 4))
    raster = tiles.open_raster(path)
    assert raster.tiled and raster.overviews == (2, 4)


@pytest.mark.parametrize(
    "array, crs, transform, match",
    [
        (np.zeros((5, 5, 5), "uint8"), "EPSG:4326", TRANSFORM, "layout"),
        (np.zeros((2, 2, 2, 2), "uint8"), "EPSG:4326", TRANSFORM, "3-D"),
        (np.zeros((4, 4), "uint8"), "EPSG:4326", None, "both crs and transform"),
    ],
)
def test_bad_inputs(tmp_path, array, crs, transform, match):
    with pytest.raises(tiles.RasterWriteError, match=match):
        tiles.write_raster(tmp_path / "x.tif", array, crs, transform)


def test_bad_crs(tmp_path):
    with pytest.raises(tiles.UnsupportedCRSError, match="EPSG:123456789"):
        tiles.write_raster(tmp_path / "x.tif", np.zeros((4, 4), "uint8"), "EPSG:123456789",
                           TRANSFORM)


def test_io_failure_names_the_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(tiles.RasterWriteError, match="cannot write raster") as info:
        tiles.write_raster(blocker / "x.tif", np.zeros((4, 4), "uint8"), None, None)
    assert str(blocker / "x.tif") in str(info.value)
