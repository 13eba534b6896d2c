"""Footprints whose edges leave the Earth (issue 18, item 4): geostationary full disks open with
their lon/lat footprint and render as Web Mercator tiles; CRSs with no point on the Earth are
refused with advice that fits."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer

import tiles
from tests.tiles import rasters as gen
from tests.tiles.conftest import decode_png, tile_pixel_of


def _brute_force_bounds(path, step: float = 1 / 16) -> tuple[float, float, float, float]:
    """Lon/lat extent of the pixels on the Earth, from a dense grid (pyproj, no tiles code);
    longitudes kept continuous eastwards of the sub-satellite point."""
    with rasterio.open(path) as ds:
        cols, rows = np.meshgrid(np.arange(0, ds.width + step, step),
                                 np.arange(0, ds.height + step, step))
        xs, ys = ds.transform * (cols.ravel(), rows.ravel())
        lon, lat = Transformer.from_crs(ds.crs, "EPSG:4326", always_xy=True).transform(xs, ys)
        lon_0 = float(ds.crs.to_dict()["lon_0"])
    ok = np.isfinite(lon) & np.isfinite(lat)
    lon = lon_0 + (lon[ok] - lon_0 + 180.0) % 360.0 - 180.0
    return float(lon.min()), float(lat[ok].min()), float(lon.max()), float(lat[ok].max())


@pytest.mark.parametrize("lon_0", [-75.0, 140.7], ids=["goes-east", "himawari"])
def test_full_disk_opens_with_its_footprint(tmp_path, lon_0):
    path = gen.geostationary_full_disk(tmp_path, lon_0=lon_0, size=64)
    raster = tiles.open_raster(path)
    west, south, east, north = raster.bounds_lonlat
    b_west, b_south, b_east, b_north = _brute_force_bounds(path)
    if b_west < -180:  # keep the expected values in the convention of bounds_lonlat
        b_west, b_east = b_west + 360, b_east + 360
    # ours reaches the limb itself; a 1/16 px grid stops a little short of it
    assert west <= b_west and east >= b_east and south <= b_south and north >= b_north
    assert (b_west - west, east - b_east) < (1.0, 1.0)
    assert (b_south - south, north - b_north) < (1.5, 1.5)
    assert 80 < north < 82 and -82 < south < -80  # the visible disk reaches ~81.3 degrees
    assert east - west == pytest.approx(2 * 81.3, abs=0.5)  # the disk spans ~162.6 degrees
    assert -180 <= west < 180 and west < lon_0 < east  # continuous across the antimeridian


def test_full_disk_renders_web_mercator_tiles(tmp_path):
    path = gen.geostationary_full_disk(tmp_path)
    with tiles.Catalog(tmp_path / "ws") as cat:
        raster = cat.get(cat.open(path))
        x, y, col, row = tile_pixel_of(-75.0, 0.0, 4)  # under the satellite
        tile = decode_png(tiles.render_tile(raster, 4, x, y))
        assert tile[row, col, 3] == 255 and tile[row, col, 0] == 100
        assert (tile[..., 3] == 255).mean() == 1.0
        world = decode_png(tiles.render_tile(raster, 0, 0, 0))
        opaque = world[..., 3] == 255
        assert 0.15 < opaque.mean() < 0.5 and set(np.unique(world[..., 0][opaque])) == {100}
        x, y, col, row = tile_pixel_of(100.0, 0.0, 2)  # the other side of the Earth
        assert decode_png(tiles.render_tile(raster, 2, x, y))[..., 3].max() == 0
        x, y, col, row = tile_pixel_of(-75.0, 0.0, 0)
        assert world[row, col, 3] == 255
        x, y, col, row = tile_pixel_of(-75.0 + 85.0, 0.0, 0)  # beyond the limb: space
        assert world[row, col, 3] == 0


def test_region_over_the_disk_gives_a_crop(tmp_path):
    path = gen.geostationary_full_disk(tmp_path)
    raster = tiles.open_raster(path)
    window = tiles.region_window(raster, {"type": "Polygon", "coordinates": [[
        [-80, -5], [-70, -5], [-70, 5], [-80, 5], [-80, -5]]]})
    assert 100 < window.col_off < 128 < window.col_off + window.width < 156
    crop = tiles.read_crop(raster, window)
    assert crop.valid.all() and (crop.image == 100).all()


def test_crs_with_no_point_on_the_earth_gets_advice_that_fits(tmp_path, rasters):
    with pytest.raises(tiles.UnsupportedCRSError) as info:
        tiles.open_raster(rasters["mars"])
    message = str(info.value)
    assert "Mars" in message and str(rasters["mars"]) in message
    assert "gdal_edit.py -unsetsrs" in message and "gdalwarp" not in message
    # a geostationary grid placed entirely in space (a wrong geotransform)
    crs = rasterio.crs.CRS.from_proj4("+proj=geos +h=35786023 +lon_0=-75 +sweep=x +ellps=GRS80")
    path = tmp_path / "space.tif"
    tiles.write_raster(path, np.zeros((32, 32), "uint8"), crs,
                       Affine(10_000.0, 0, 6_000_000.0, 0, -10_000.0, 6_000_000.0))
    with pytest.raises(tiles.UnsupportedCRSError, match="none of its pixels") as info:
        tiles.open_raster(path)
    assert "gdalinfo" in str(info.value)


def test_lonlat_bounds_of_points():
    from tiles.crs import lonlat_bounds_of_points

    lon = np.array([170.0, 175.0, -178.0, -172.0])
    assert lonlat_bounds_of_points(lon, np.array([1.0, 2, 3, 4])) == (170.0, 1.0, 188.0, 4.0)
    assert lonlat_bounds_of_points(np.array([10.0, 20.0]), np.array([0.0, 1.0]),
                                   poles=(90.0,)) == (-180.0, 0.0, 180.0, 90.0)
