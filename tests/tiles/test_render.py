"""Map tiles: Web Mercator tiles via rio-tiler, band selection, stretch, transparency,
rotated rasters, and the pixel-space pyramid of plain images."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

import tiles
from tests.tiles import rasters as gen
from tests.tiles.conftest import decode_png, raster_px_to_lonlat, tile_pixel_of


def _tile_at(raster, path, col, row, z, **kwargs):
    """(RGBA tile, (tile col, tile row)) for raster pixel position (col, row) at zoom z."""
    lon, lat = raster_px_to_lonlat(path, col, row)
    x, y, tcol, trow = tile_pixel_of(lon, lat, z)
    return decode_png(tiles.render_tile(raster, z, x, y, **kwargs)), (tcol, trow)


def test_uint16_4band_renders_with_the_right_band_order(catalog, rasters):
    path = rasters["uint16_4band"]
    raster = catalog.get(catalog.open(path))
    tile, _ = _tile_at(raster, path, 160, 160, 15)
    opaque = tile[..., 3] == 255
    assert opaque.mean() > 0.2
    rgb = tile[..., :3][opaque].astype(float)
    assert rgb.mean() > 60  # stretched, not black
    cols = np.nonzero(opaque)[1]
    # red comes from band 3 (colorinterp red), a gradient along x; blue/green are noise
    assert np.corrcoef(cols, rgb[:, 0])[0, 1] > 0.9
    assert abs(np.corrcoef(cols, rgb[:, 1])[0, 1]) < 0.3
    assert abs(np.corrcoef(cols, rgb[:, 2])[0, 1]) < 0.3


def test_band_preset_by_description(catalog, rasters):
    path = rasters["uint16_4band"]
    raster = catalog.get(catalog.open(path))
    tile, _ = _tile_at(raster, path, 160, 160, 15, preset="sentinel2-false-color")
    opaque = tile[..., 3] == 255
    rgb, cols = tile[..., :3][opaque].astype(float), np.nonzero(opaque)[1]
    # B08 (nir, noise) -> red, B04 (the gradient) -> green, B03 -> blue
    assert np.corrcoef(cols, rgb[:, 1])[0, 1] > 0.9
    assert abs(np.corrcoef(cols, rgb[:, 0])[0, 1]) < 0.3
    assert tiles.select_bands(raster, "sentinel2-false-color").indexes == (4, 3, 2)
    assert tiles.select_bands(raster, "sentinel2-true-color").indexes == (3, 2, 1)


def test_stretch_is_the_same_for_every_tile(catalog, rasters):
    path = rasters["uint16_4band"]
    raster = catalog.get(catalog.open(path))
    colors = []
    for z in (14, 15, 16):
        tile, (tcol, trow) = _tile_at(raster, path, 200.5, 200.5, z)
        colors.append(tile[trow, tcol, 0])
    assert max(colors) - min(colors) <= 3  # one cached percentile stretch, not per tile


def test_nodata_is_transparent(catalog, rasters):
    path = rasters["uint16_4band"]
    raster = catalog.get(catalog.open(path))
    tile, (tcol, trow) = _tile_at(raster, path, 20.5, 20.5, 16)  # inside the nodata block
    assert tile[trow, tcol, 3] == 0
    tile, (tcol, trow) = _tile_at(raster, path, 120.5, 120.5, 16)
    assert tile[trow, tcol, 3] == 255


@pytest.mark.parametrize("name", ["nodata_rgb", "alpha_rgba", "float32_nan"])
def test_masked_block_is_transparent(catalog, rasters, name):
    path = rasters[name]
    raster = catalog.get(catalog.open(path))
    tile, (tcol, trow) = _tile_at(raster, path, 30.5, 30.5, 16)
    assert tile[trow, tcol, 3] == 0
    tile, (tcol, trow) = _tile_at(raster, path, 150.5, 150.5, 16)
    assert tile[trow, tcol, 3] == 255 and tile[trow, tcol, :3].max() > 0


def test_float_is_stretched(catalog, rasters):
    path = rasters["float32_nan"]
    raster = catalog.get(catalog.open(path))
    tile, _ = _tile_at(raster, path, 100, 100, 12)  # the whole raster in one tile
    gray = tile[..., 0][tile[..., 3] == 255]
    assert gray.min() < 60 and gray.max() > 200  # 0..0.5 spread over the display range
    assert np.array_equal(tile[..., 0], tile[..., 1])  # single band -> gray


def test_uint8_rgb_is_untouched(catalog, rasters):
    path = rasters["utm_rgb"]
    raster = catalog.get(catalog.open(path))
    tile, (tcol, trow) = _tile_at(raster, path, 300.5, 100.5, 17)
    expected = gen.gradient_rgb(384, 512)[:, 100, 300]
    assert np.abs(tile[trow, tcol, :3].astype(int) - expected).max() <= 2


def test_palette_is_expanded(catalog, rasters):
    path = rasters["palette"]
    raster = catalog.get(catalog.open(path))
    tile, (tcol, trow) = _tile_at(raster, path, 80.5, 40.5, 16)  # class 2 (cols 64..95)
    assert tuple(tile[trow, tcol]) == (0, 255, 0, 255)


def test_tile_outside_is_fully_transparent(catalog, rasters):
    raster = catalog.get(catalog.open(rasters["utm_rgb"]))
    png = tiles.render_tile(raster, 10, 0, 0)
    assert decode_png(png)[..., 3].max() == 0
    assert png == tiles.transparent_png(256)


def test_rotated_raster_displays_at_the_right_place(catalog, rasters):
    path = rasters["rotated_rgb"]
    raster = catalog.get(catalog.open(path))
    col, row = gen.MARKER_PX
    centre = (col + gen.MARKER_SIZE / 2, row + gen.MARKER_SIZE / 2)
    tile, (tcol, trow) = _tile_at(raster, path, *centre, 17)
    assert tuple(tile[trow, tcol]) == (255, 0, 0, 255)  # the red marker, where GDAL puts it
    # a gradient pixel far from the marker has the gradient's colour
    tile, (tcol, trow) = _tile_at(raster, path, 50.5, 250.5, 17)
    expected = gen.gradient_rgb(300, 400)[:, 250, 50]
    assert np.abs(tile[trow, tcol, :3].astype(int) - expected).max() <= 3
    assert tile[trow, tcol, 3] == 255
    # outside the rotated footprint but inside its bounding box: transparent
    with rasterio.open(path) as ds:
        x, y = ds.transform @ (0, 0)
    lon, lat = tiles.crs.transform_xy(ds.crs.to_wkt(), "EPSG:4326", np.array([x - 300.0]),
                                      np.array([y]))
    z = 15
    tx, ty, tcol, trow = tile_pixel_of(float(lon[0]), float(lat[0]), z)
    assert decode_png(tiles.render_tile(raster, z, tx, ty))[trow, tcol, 3] == 0


def test_tiles_work_without_catalog(rasters):
    raster = tiles.open_raster(rasters["utm_rgb"])
    tile, _ = _tile_at(raster, rasters["utm_rgb"], 100, 100, 15)
    assert tile[..., 3].max() == 255


def test_unknown_preset_lists_known_names(catalog, rasters):
    raster = catalog.get(catalog.open(rasters["uint16_4band"]))
    with pytest.raises(tiles.BandPresetError) as info:
        tiles.render_tile(raster, 15, 0, 0, preset="sentinel-2")
    for name in tiles.known_preset_names():
        assert name in str(info.value)


def test_preset_needing_more_bands(catalog, rasters):
    raster = catalog.get(catalog.open(rasters["utm_rgb"]))
    with pytest.raises(tiles.BandPresetError, match="3 band"):
        tiles.select_bands(raster, "landsat89-false-color")


@pytest.mark.parametrize("zxy", [(-1, 0, 0), (25, 0, 0), (3, 8, 0), (3, 0, -1), (2.0, 0, 0)])
def test_bad_tile_index(catalog, rasters, zxy):
    raster = catalog.get(catalog.open(rasters["utm_rgb"]))
    with pytest.raises(tiles.TileError):
        tiles.render_tile(raster, *zxy)


def test_plain_image_needs_pixel_tiles(catalog, rasters):
    raster = catalog.get(catalog.open(rasters["plain_png"]))
    with pytest.raises(tiles.TileError, match="render_pixel_tile"):
        tiles.render_tile(raster, 0, 0, 0)


def test_pixel_tile_scheme():
    scheme = tiles.pixel_tile_scheme(300, 200)
    assert scheme.native_zoom == 1 and scheme.max_zoom == 4
    assert scheme.tile_count(1) == (2, 1) and scheme.tile_count(0) == (1, 1)
    assert scheme.image_px_per_tile_px(0) == 2.0
    assert tiles.pixel_tile_scheme(256, 100).native_zoom == 0
    assert tiles.pixel_tile_scheme(800, 800).native_zoom == 2
    options = scheme.leaflet_options()
    assert options["zoomOffset"] == 1 and options["minZoom"] == -1
    assert options["bounds"] == [[-200, 0], [0, 300]]


def test_pixel_tiles_show_image_pixels(catalog, rasters):
    raster = catalog.get(catalog.open(rasters["plain_png"]))
    image = gen.gradient_rgb(200, 300).transpose(1, 2, 0)
    native = decode_png(tiles.render_pixel_tile(raster, 1, 0, 0))
    assert np.array_equal(native[:200, :, :3], image[:, :256])  # 1 image px per screen px
    assert native[:200, :, 3].min() == 255 and native[200:, :, 3].max() == 0
    right = decode_png(tiles.render_pixel_tile(raster, 1, 1, 0))
    assert np.array_equal(right[:200, :44, :3], image[:, 256:])
    assert right[:, 44:, 3].max() == 0  # past the image edge: transparent, not stretched
    overview = decode_png(tiles.render_pixel_tile(raster, 0, 0, 0))
    assert np.array_equal(overview[:100, :150, :3], image[1::2, 1::2])  # half scale
    assert decode_png(tiles.render_pixel_tile(raster, 1, 5, 5))[..., 3].max() == 0
    with pytest.raises(tiles.TileError, match="0..4"):
        tiles.render_pixel_tile(raster, 5, 0, 0)


def test_pixel_space_coordinate_helpers():
    lat, lng = tiles.px_to_leaflet_simple([10.0, 0.0], [20.0, 5.0])
    assert lat.tolist() == [-20.0, -5.0] and lng.tolist() == [10.0, 0.0]
    col, row = tiles.leaflet_simple_to_px(lat, lng)
    assert col.tolist() == [10.0, 0.0] and row.tolist() == [20.0, 5.0]
