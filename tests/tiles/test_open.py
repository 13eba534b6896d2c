"""open_raster: metadata, footprints, pixel space, and every bad input's error."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform_bounds

import tiles


def test_utm_metadata(rasters):
    raster = tiles.open_raster(rasters["utm_rgb"])
    with rasterio.open(rasters["utm_rgb"]) as ds:
        assert raster.transform == ds.transform
        assert (raster.width, raster.height, raster.count) == (ds.width, ds.height, ds.count)
        assert tiles.crs_label(raster.crs) == "EPSG:32633"
        assert raster.bounds_crs == pytest.approx(tuple(ds.bounds))
        expected = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=21)
    assert raster.bounds_lonlat == pytest.approx(expected, abs=1e-9)
    assert raster.dtypes == ("uint8",) * 3
    assert raster.colorinterp == ("red", "green", "blue")
    assert raster.overviews == (2, 4)
    assert raster.georeferenced and raster.tiled and not raster.is_rotated
    assert raster.raster_id is None


def test_multiband_metadata(rasters):
    raster = tiles.open_raster(rasters["uint16_4band"])
    assert raster.dtypes == ("uint16",) * 4
    assert raster.nodata == 0
    assert raster.colorinterp == ("blue", "green", "red", "nir")
    assert raster.descriptions == ("B02", "B03", "B04", "B08")
    assert raster.overviews == ()


def test_rotated_footprint_uses_all_corners(rasters):
    raster = tiles.open_raster(rasters["rotated_rgb"])
    assert raster.is_rotated
    corners = [raster.transform @ (c, r) for c, r in [(0, 0), (400, 0), (400, 300), (0, 300)]]
    xs, ys = zip(*corners, strict=False)
    assert raster.bounds_crs == pytest.approx((min(xs), min(ys), max(xs), max(ys)))


def test_antimeridian_bounds_are_continuous(rasters):
    west, south, east, north = tiles.open_raster(rasters["antimeridian_rgb"]).bounds_lonlat
    assert -180 <= west < 180 < east < west + 10  # a few degrees wide, not the whole globe
    assert 58 < south < north < 61


@pytest.mark.parametrize("name", ["plain_png", "plain_jpeg"])
def test_plain_images_open_in_pixel_space_quietly(rasters, name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NotGeoreferencedWarning must not escape
        raster = tiles.open_raster(rasters[name])
    assert not raster.georeferenced
    assert raster.crs is None and raster.bounds_lonlat is None and raster.crs_label is None
    assert raster.transform == rasterio.Affine.identity()
    assert raster.bounds_crs == (0.0, 0.0, float(raster.width), float(raster.height))


def test_missing_file(tmp_path):
    path = tmp_path / "nope.tif"
    with pytest.raises(tiles.RasterOpenError, match="does not exist") as info:
        tiles.open_raster(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, OSError)


def test_directory(tmp_path):
    with pytest.raises(tiles.RasterOpenError, match="directory"):
        tiles.open_raster(tmp_path)


def test_corrupt_file_names_path_and_gdal_reason(rasters):
    with pytest.raises(tiles.RasterOpenError) as info:
        tiles.open_raster(rasters["corrupt"])
    message = str(info.value)
    assert str(rasters["corrupt"]) in message
    assert "not recognized" in message  # GDAL's own reason
    assert "re-download or re-export" in message  # what to do


def test_truncated_tiff(rasters):
    with pytest.raises(tiles.RasterOpenError, match="GDAL says"):
        tiles.open_raster(rasters["truncated"])


def test_empty_file(rasters):
    with pytest.raises(tiles.EmptyRasterError, match="0 bytes") as info:
        tiles.open_raster(rasters["empty"])
    assert isinstance(info.value, ValueError)


def test_gcp_only_raster(rasters):
    with pytest.raises(tiles.UnsupportedCRSError, match="gdalwarp"):
        tiles.open_raster(rasters["gcp_only"])


def test_crs_without_path_to_lonlat(rasters):
    with pytest.raises(tiles.UnsupportedCRSError, match="Mars") as info:
        tiles.open_raster(rasters["mars"])
    assert str(rasters["mars"]) in str(info.value)


def test_raster_dataclass_validates():
    with pytest.raises(tiles.EmptyRasterError, match="0x5"):
        tiles.Raster(
            path=Path("x.tif"), crs=None, transform=rasterio.Affine.identity(), width=0,
            height=5, count=1, dtypes=("uint8",), nodata=None, colorinterp=("gray",),
            descriptions=(None,), overviews=(), bounds_crs=(0, 0, 0, 5), bounds_lonlat=None,
            georeferenced=False, tiled=False, driver="GTiff",
        )


def test_unparseable_crs_string():
    with pytest.raises(tiles.UnsupportedCRSError, match="EPSG:99999999"):
        tiles.crs_label("EPSG:99999999")


def test_edge_ring_is_densified(tmp_path):
    # A raster straddling the UTM central meridian: its top edge (constant northing) reaches
    # its highest latitude mid-edge, which a corners-only transform would miss.
    path = tmp_path / "wide.tif"
    tiles.write_raster(path, np.zeros((1, 20, 200), "uint8"), "EPSG:32633",
                       rasterio.Affine(1000.0, 0, 400_000.0, 0, -1000.0, 6_700_000.0))
    north = tiles.open_raster(path).bounds_lonlat[3]
    _, corner_lats = rasterio.warp.transform("EPSG:32633", "EPSG:4326",
                                             [400_000.0, 600_000.0], [6_700_000.0] * 2)
    _, mid_lat = rasterio.warp.transform("EPSG:32633", "EPSG:4326", [500_000.0],
                                         [6_700_000.0])
    assert north == pytest.approx(mid_lat[0], abs=1e-9)
    assert north > max(corner_lats) + 0.01  # ~1.4 km further north than the corners
