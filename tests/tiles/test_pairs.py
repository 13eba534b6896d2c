"""Co-registered crop pairs (tiles.read_crop_pair): the real NAIP 2009/2020 pair against GDAL's
warper, generated rasters of one ground pattern in UTM / Web Mercator / EPSG:4326, partial
overlaps, band layouts and the no-overlap errors.

The reference for the NAIP pair is GDAL's warper run independently of the code under test on
the WHOLE source array: ``gdalwarp`` via subprocess when the binary exists, and always
``rasterio.warp.reproject`` (the same GDALWarp engine ``gdalwarp`` drives) with the same target
grid, resampling and source nodata.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.enums import ColorInterp, Resampling
from rasterio.warp import reproject
from rasterio.windows import Window
from shapely.geometry import box, mapping

import tiles
from tiles.pairs import PairGrid, PairOverlapError

NAIP_2009 = "geotiff/m_4709963_se_14_1_20090818.tif"
NAIP_2020 = "geotiff/m_4709963_se_14_1_20200831.tif"


# ---------------------------------------------------------------------------------------------
# the real NAIP pair


def _gdal_reference(path: Path, pair: tiles.CropPair, resampling: Resampling):
    """(rgb (H, W, 3), valid (H, W)) of ``path`` bands 1-3 warped by GDAL onto the pair's grid
    from the whole source array (no windows, no VRT)."""
    with rasterio.open(path) as src:
        data = src.read([1, 2, 3])
        out = np.zeros((4, pair.height, pair.width), "uint8")
        reproject(data, out[:3], src_transform=src.transform, src_crs=src.crs,
                  src_nodata=src.nodata, dst_transform=pair.transform, dst_crs=pair.crs,
                  dst_nodata=0, resampling=resampling)
        alpha = np.zeros((pair.height, pair.width), "uint8")
        reproject(np.full(data.shape[1:], 255, "uint8"), alpha, src_transform=src.transform,
                  src_crs=src.crs, dst_transform=pair.transform, dst_crs=pair.crs,
                  resampling=Resampling.nearest, dst_nodata=0)
    return out[:3].transpose(1, 2, 0), alpha > 0


def _gdalwarp_binary(path: Path, pair: tiles.CropPair, resampling: Resampling, tmp: Path):
    """The same grid through the ``gdalwarp`` binary (only where it is installed)."""
    west, north = pair.transform * (0, 0)
    east, south = pair.transform * (pair.width, pair.height)
    out = tmp / "gdalwarp.tif"
    subprocess.run(
        ["gdalwarp", "-q", "-overwrite", "-t_srs", pair.crs, "-te", str(west), str(south),
         str(east), str(north), "-ts", str(pair.width), str(pair.height), "-r",
         resampling.name, "-srcnodata", "0", "-dstnodata", "0", str(path), str(out)],
        check=True)  # every band (``-b`` needs GDAL >= 3.7); R, G, B are the first three
    with rasterio.open(out) as ds:
        return ds.read([1, 2, 3]).transpose(1, 2, 0)


@pytest.mark.parametrize("resampling", [Resampling.bilinear, Resampling.nearest])
def test_naip_pair_matches_gdal_warp_reference(shared_data, tmp_path, resampling):
    before_path, after_path = shared_data / NAIP_2009, shared_data / NAIP_2020
    before, after = tiles.open_raster(before_path), tiles.open_raster(after_path)
    assert before.transform != after.transform  # the real 1 m shift and one row
    west, south, _east, _north = after.bounds_lonlat
    region = mapping(box(west + 0.01, south + 0.008, west + 0.035, south + 0.022))
    pair = tiles.read_crop_pair(before, after, region, resampling=resampling)

    # the grid is the 2020 raster's own pixel grid
    win = pair.grid_window
    assert pair.grid == "after" and pair.resampling == resampling.name
    assert pair.transform == after.transform @ Affine.translation(win.col_off, win.row_off)
    assert pair.before.transform == pair.after.transform == pair.transform
    assert pair.before.image.shape == pair.after.image.shape == (win.height, win.width, 3)
    assert pair.valid.all()

    # after: a plain copy of the 2020 pixels (R, G, B of the 4-band R,G,B,NIR file)
    with rasterio.open(after_path) as ds:
        direct = ds.read([1, 2, 3], window=win).transpose(1, 2, 0)
    assert np.array_equal(pair.after.image, direct)

    # before: the 2009 raster warped by GDAL from the whole array onto the same grid
    reference, ref_valid = _gdal_reference(before_path, pair, resampling)
    assert ref_valid.all()
    assert np.array_equal(pair.before.image, reference)
    if shutil.which("gdalwarp"):
        assert np.array_equal(pair.before.image, _gdalwarp_binary(before_path, pair, resampling,
                                                                  tmp_path))

    # the 1 m shift matters: the same pixel indices of 2009 are not the co-registered crop
    with rasterio.open(before_path) as ds:
        naive = ds.read([1, 2, 3], window=win).transpose(1, 2, 0)
    if resampling == Resampling.bilinear:
        assert not np.array_equal(pair.before.image, naive)


def test_naip_whole_overlap_and_before_grid(shared_data):
    before = tiles.open_raster(shared_data / NAIP_2009)
    after = tiles.open_raster(shared_data / NAIP_2020)
    west, south, east, north = after.bounds_lonlat
    everything = mapping(box(west - 0.1, south - 0.1, east + 0.1, north + 0.1))
    pair = tiles.read_crop_pair(before, after, everything)
    assert pair.grid_window == Window(0, 0, after.width, after.height)
    reference, ref_valid = _gdal_reference(shared_data / NAIP_2009, pair, Resampling.bilinear)
    assert np.array_equal(pair.valid, ref_valid)
    assert np.array_equal(pair.before.image[ref_valid], reference[ref_valid])

    # grid="before": now 2009 is copied and 2020 is warped
    pair_b = tiles.read_crop_pair(before, after, everything, grid="before")
    assert pair_b.grid == "before"
    assert pair_b.transform.c == before.transform.c and pair_b.transform.f <= before.transform.f
    ref_after, valid_after = _gdal_reference(shared_data / NAIP_2020, pair_b, Resampling.bilinear)
    both = valid_after & pair_b.valid
    assert both.sum() > 0.99 * both.size
    assert np.array_equal(pair_b.after.image[both], ref_after[both])


def test_naip_decimated_pair_keeps_one_grid(shared_data):
    before = tiles.open_raster(shared_data / NAIP_2009)
    after = tiles.open_raster(shared_data / NAIP_2020)
    pair = tiles.read_crop_pair(before, after, Window(0, 0, after.width, after.height),
                                region_crs="pixel", max_side=256)
    assert max(pair.width, pair.height) == 256
    assert pair.before.scale_x == pair.after.scale_x == pytest.approx(after.width / pair.width)
    # the crop still spans the same ground: its last pixel edge is the raster's
    assert pair.transform * (pair.width, pair.height) == pytest.approx(
        after.transform * (after.width, after.height))


# ---------------------------------------------------------------------------------------------
# generated rasters: one ground pattern rendered in three CRSs

LON0, LAT0 = 14.99, 47.99  # pattern origin (UTM 33N central meridian is 15 E)
CELL_LON, CELL_LAT = 0.002, 0.0015  # pattern cells, about 150 x 167 m


def _pattern(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """(3, ...) uint8 colour of the ground cell holding each lon/lat point."""
    i = np.floor((lon - LON0) / CELL_LON).astype(int)
    j = np.floor((lat - LAT0) / CELL_LAT).astype(int)
    return np.stack([(i * 37) % 200 + 30, (j * 53) % 200 + 30,
                     ((i + j) % 2) * 100 + 50]).astype("uint8")


def _cell_margin(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Distance (in cell fractions) from each point to the nearest cell boundary."""
    fx = ((lon - LON0) / CELL_LON) % 1.0
    fy = ((lat - LAT0) / CELL_LAT) % 1.0
    return np.minimum(np.minimum(fx, 1 - fx), np.minimum(fy, 1 - fy))


def _render(path: Path, crs: str, transform: Affine, width: int, height: int, *,
            bands: int = 3, nodata: float | None = None, dtype: str = "uint8",
            colorinterp: tuple[str, ...] | None = None) -> Path:
    """Write the pattern sampled at each pixel centre of a grid (plain rasterio + pyproj)."""
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    xs, ys = transform * (cols, rows)
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    rgb = _pattern(lon, lat)
    data = np.concatenate([rgb, np.full((bands - 3, height, width), 200, "uint8")]) \
        if bands > 3 else rgb
    profile = {"driver": "GTiff", "count": bands, "width": width, "height": height,
               "dtype": dtype, "crs": crs, "transform": transform, "nodata": nodata}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data.astype(dtype))
        if colorinterp:
            dst.colorinterp = [ColorInterp[c] for c in colorinterp]
    return path


def _utm_grid(west_m: float = 0.0, size: int = 220) -> tuple[str, Affine, int, int]:
    x0, y0 = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True).transform(
        LON0, LAT0 + 0.02)
    return "EPSG:32633", Affine(10, 0, round(x0) + west_m, 0, -10, round(y0)), size, size


def _merc_grid() -> tuple[str, Affine, int, int]:
    x0, y0 = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(
        LON0 - 0.001, LAT0 + 0.021)
    return "EPSG:3857", Affine(13.0, 0, x0, 0, -13.0, y0), 200, 240


def _lonlat_grid() -> tuple[str, Affine, int, int]:
    return "EPSG:4326", Affine(0.00012, 0, LON0 - 0.002, 0, -0.00009, LAT0 + 0.022), 260, 280


@pytest.fixture(scope="module")
def pattern_rasters(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pairs")
    return {
        "utm": _render(folder / "utm.tif", *_utm_grid()),
        "merc": _render(folder / "merc.tif", *_merc_grid()),
        "lonlat": _render(folder / "lonlat.tif", *_lonlat_grid()),
        "utm_rgbn": _render(folder / "utm_rgbn.tif", *_utm_grid(), bands=4,
                            colorinterp=("gray", "undefined", "undefined", "undefined")),
    }


def _crop_pixel_lonlat(pair: tiles.CropPair) -> tuple[np.ndarray, np.ndarray]:
    cols, rows = np.meshgrid(np.arange(pair.width) + 0.5, np.arange(pair.height) + 0.5)
    xs, ys = pair.transform * (cols, rows)
    return Transformer.from_crs(pair.crs, "EPSG:4326", always_xy=True).transform(xs, ys)


REGION = mapping(box(LON0 + 0.004, LAT0 + 0.004, LON0 + 0.016, LAT0 + 0.014))


@pytest.mark.parametrize("before_name, after_name, grid", [
    ("merc", "utm", None),
    ("lonlat", "utm", None),
    ("utm", "merc", None),
    ("utm", "lonlat", "before"),
    ("merc", "lonlat", PairGrid("EPSG:32633", 8.0)),
    ("lonlat", "merc", PairGrid("EPSG:4326", (0.0001, 0.00008))),
])
def test_pattern_lands_on_the_same_pixels_across_crs(pattern_rasters, before_name,
                                                     after_name, grid):
    before = tiles.open_raster(pattern_rasters[before_name])
    after = tiles.open_raster(pattern_rasters[after_name])
    pair = tiles.read_crop_pair(before, after, REGION, grid=grid)
    assert pair.valid.all()
    lon, lat = _crop_pixel_lonlat(pair)
    expected = _pattern(lon, lat).transpose(1, 2, 0)
    # away from cell edges (a cell is ~15 source pixels wide) every pixel of both crops shows
    # the ground cell under the crop pixel's centre
    interior = _cell_margin(lon, lat) > 0.2
    assert interior.mean() > 0.3
    for crop in (pair.before, pair.after):
        assert np.array_equal(crop.image[interior], expected[interior]), crop.image_name
    # the crop covers the drawn region (grid pixels bounding it)
    west, south, east, north = pair.footprint_lonlat
    assert west <= LON0 + 0.004 + 1e-4 and east >= LON0 + 0.016 - 1e-4
    assert south <= LAT0 + 0.004 + 1e-4 and north >= LAT0 + 0.014 - 1e-4
    if isinstance(grid, PairGrid):
        res_x, res_y = grid.resolution_xy
        assert (pair.transform.a, -pair.transform.e) == pytest.approx((res_x, res_y))
        assert pair.transform.c / res_x == pytest.approx(round(pair.transform.c / res_x))


def test_boxes_in_crop_pixels_are_the_same_ground(pattern_rasters):
    before = tiles.open_raster(pattern_rasters["merc"])
    after = tiles.open_raster(pattern_rasters["utm"])
    pair = tiles.read_crop_pair(before, after, REGION)
    boxes = [(10, 20, 60, 70)]
    assert tiles.boxes_to_lonlat(pair.before, boxes)[0].equals(
        tiles.boxes_to_lonlat(pair.after, boxes)[0])


def test_band_layouts_rgbn_vs_rgb(pattern_rasters):
    before = tiles.open_raster(pattern_rasters["utm_rgbn"])  # R, G, B, NIR like NAIP
    after = tiles.open_raster(pattern_rasters["utm"])
    pair = tiles.read_crop_pair(before, after, REGION)
    assert np.array_equal(pair.before.image, pair.after.image)
    false_colour = tiles.read_crop_pair(before, after, REGION, before_preset="naip-false-color")
    assert (false_colour.before.image[..., 0] == 200).all()  # NIR shown as red


def test_region_in_either_rasters_pixels(pattern_rasters):
    before = tiles.open_raster(pattern_rasters["merc"])
    after = tiles.open_raster(pattern_rasters["utm"])
    window_after = tiles.region_window(after, REGION)
    window_before = tiles.region_window(before, REGION)
    by_lonlat = tiles.read_crop_pair(before, after, REGION)
    by_after_px = tiles.read_crop_pair(before, after, window_after)
    assert by_after_px.grid_window == window_after == by_lonlat.grid_window
    by_before_px = tiles.read_crop_pair(before, after, window_before, region_raster="before")
    w0, s0, e0, n0 = by_before_px.footprint_lonlat
    assert w0 <= LON0 + 0.004 and s0 <= LAT0 + 0.004
    assert e0 >= LON0 + 0.016 and n0 >= LAT0 + 0.014
    point = {"type": "Point", "coordinates": [LON0 + 0.01, LAT0 + 0.01]}
    square = tiles.read_crop_pair(before, after, point, point_size_m=300)
    assert 29 <= square.width <= 32 and 29 <= square.height <= 32


# ---------------------------------------------------------------------------------------------
# partial overlaps and masks


def test_partial_overlap_shrinks_to_shared_ground_and_masks_nodata(tmp_path):
    crs, transform, w, h = _utm_grid()
    after_path = _render(tmp_path / "after.tif", crs, transform, w, h)
    shifted = transform * Affine.translation(100, 0)  # 1 km east: half of it overlaps
    before_path = _render(tmp_path / "before.tif", crs, shifted, w, h, nodata=0)
    with rasterio.open(before_path, "r+") as ds:  # a strip of no data inside the overlap
        data = ds.read()
        data[:, 50:70, :] = 0
        ds.write(data)
    before, after = tiles.open_raster(before_path), tiles.open_raster(after_path)
    west, south, east, north = after.bounds_lonlat
    whole = mapping(box(west - 0.01, south - 0.01, east + 0.02, north + 0.01))
    pair = tiles.read_crop_pair(before, after, whole)
    assert pair.grid_window == Window(100, 0, 120, 220)  # after px 100..220: the shared part
    strip = np.zeros((h, 120), bool)
    strip[50:70, :] = True
    assert np.array_equal(pair.valid, ~strip)
    assert pair.before.valid.tolist() == pair.after.valid.tolist()
    for crop in (pair.before, pair.after):
        assert (crop.image[strip] == 0).all() and (crop.image[~strip] > 0).all()


def test_partial_overlap_across_crs_masks_the_corners(pattern_rasters, tmp_path):
    # UTM zone 32N, 6 degrees east of its central meridian: its grid is turned ~4.5 degrees
    # against lon/lat, so the before raster's west edge (a meridian) crosses it at a slant
    x0, y0 = Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True).transform(
        LON0 - 0.01, LAT0 + 0.02)
    after = tiles.open_raster(_render(tmp_path / "after.tif", "EPSG:32632",
                                      Affine(10, 0, round(x0), 0, -10, round(y0)), 220, 220))
    before = tiles.open_raster(pattern_rasters["lonlat"])
    everything = mapping(box(LON0 - 0.1, LAT0 - 0.1, LON0 + 0.1, LAT0 + 0.1))
    pair = tiles.read_crop_pair(before, after, everything)
    assert pair.valid.any() and not pair.valid.all()
    # valid exactly where the crop pixel centre lies inside the before raster (the crop lies
    # inside the after raster: default grid, shrunk to the shared ground)
    lon, lat = _crop_pixel_lonlat(pair)
    with rasterio.open(pattern_rasters["lonlat"]) as ds:
        cols, rows = ~ds.transform * (lon, lat)
        inside = (cols > 0.5) & (cols < ds.width - 0.5) & (rows > 0.5) & (rows < ds.height - 0.5)
        outside = (cols < -0.5) | (cols > ds.width + 0.5) | (rows < -0.5) | (rows > ds.height + 0.5)
    assert pair.valid[inside].all() and not pair.valid[outside].any()
    expected = _pattern(lon, lat).transpose(1, 2, 0)
    interior = (_cell_margin(lon, lat) > 0.2) & pair.valid
    assert np.array_equal(pair.before.image[interior], expected[interior])
    assert (pair.before.image[~pair.valid] == 0).all()


# ---------------------------------------------------------------------------------------------
# errors


def test_no_overlap_names_both_footprints(tmp_path, pattern_rasters):
    crs, transform, w, h = _utm_grid()
    far = _render(tmp_path / "far.tif", crs, transform * Affine.translation(0, 1000), w, h)
    before, after = tiles.open_raster(far), tiles.open_raster(pattern_rasters["utm"])
    with pytest.raises(PairOverlapError) as info:
        tiles.read_crop_pair(before, after, REGION)
    message = str(info.value)
    assert "do not overlap" in message and "far.tif" in message and "utm.tif" in message
    assert message.count("lon ") == 2 and message.count("lat ") == 2
    assert isinstance(info.value, tiles.TilesError)


def test_region_over_one_raster_only_or_none(tmp_path, pattern_rasters):
    crs, transform, w, h = _utm_grid()
    after_path = _render(tmp_path / "after.tif", crs, transform, w, h)
    before_path = _render(tmp_path / "before.tif", crs, transform * Affine.translation(150, 0),
                          w, h)
    before, after = tiles.open_raster(before_path), tiles.open_raster(after_path)
    only_after = Window(0, 0, 100, 100)
    with pytest.raises(PairOverlapError, match="covers only the after raster"):
        tiles.read_crop_pair(before, after, only_after)
    nowhere = mapping(box(LON0 + 1, LAT0 + 1, LON0 + 1.01, LAT0 + 1.01))
    with pytest.raises(tiles.RegionOutsideError, match="misses both rasters"):
        tiles.read_crop_pair(before, after, nowhere)


def test_bad_inputs(tmp_path, pattern_rasters):
    utm = tiles.open_raster(pattern_rasters["utm"])
    png = tmp_path / "plain.png"
    from PIL import Image

    Image.fromarray(np.zeros((20, 20, 3), "uint8")).save(png)
    plain = tiles.open_raster(png)
    with pytest.raises(tiles.NotGeoreferencedError, match="plain.png"):
        tiles.read_crop_pair(plain, utm, REGION)
    with pytest.raises(tiles.CropError, match="grid must be"):
        tiles.read_crop_pair(utm, utm, REGION, grid="sideways")
    with pytest.raises(tiles.CropError, match="region_raster"):
        tiles.read_crop_pair(utm, utm, REGION, region_raster="middle")
    with pytest.raises(tiles.CropError, match="max_side"):
        tiles.read_crop_pair(utm, utm, REGION, max_side=0)
    with pytest.raises(tiles.CropError, match="resolution"):
        PairGrid("EPSG:32633", -5)
    with pytest.raises(tiles.GeometryError):
        tiles.read_crop_pair(utm, utm, {"type": "Polygon", "coordinates": []})


def test_pair_with_catalog_sources(catalog, pattern_rasters):
    before_id = catalog.open(pattern_rasters["merc"])
    after_id = catalog.open(pattern_rasters["utm"])
    pair = tiles.read_crop_pair(catalog.get(before_id), catalog.get(after_id), REGION,
                                before_source=catalog.source(before_id),
                                after_source=catalog.source(after_id))
    assert pair.before.raster_id == before_id and pair.after.raster_id == after_id
    plain = tiles.read_crop_pair(catalog.get(before_id), catalog.get(after_id), REGION)
    assert np.array_equal(pair.before.image, plain.before.image)


@pytest.mark.parametrize("resampling", [Resampling.nearest, Resampling.bilinear])
def test_rotated_raster_warps_like_gdal(rasters, resampling):
    before = tiles.open_raster(rasters["rotated_rgb"])  # rotated 30 degrees, same UTM zone
    after = tiles.open_raster(rasters["utm_rgb"])
    pair = tiles.read_crop_pair(before, after, Window(0, 0, 300, 200), region_crs="pixel",
                                resampling=resampling)
    with rasterio.open(rasters["rotated_rgb"]) as src:
        reference = np.zeros((4, pair.height, pair.width), "uint8")
        reproject(src.read(), reference, src_transform=src.transform, src_crs=src.crs,
                  dst_transform=pair.transform, dst_crs=pair.crs, resampling=resampling,
                  dst_alpha=4)  # = gdalwarp -dstalpha
    ref_valid, reference = reference[3] > 0, reference[:3].transpose(1, 2, 0)
    assert pair.valid.any() and not pair.valid.all()  # the rotated footprint's corners
    assert np.array_equal(pair.valid, ref_valid)
    diff = np.abs(pair.before.image.astype(int) - reference)[ref_valid]
    # nearest: pixel-exact. bilinear from a ROTATED source: GDAL's warper rounds a few pixels
    # differently when it warps a window (chunked) than the whole array: at most 1 grey level.
    assert diff.max() == 0 if resampling == Resampling.nearest else diff.max() <= 1


def test_stretched_bands_and_nan_nodata(rasters):
    before = tiles.open_raster(rasters["float32_nan"])  # one float band, NaN top-left block
    after = tiles.open_raster(rasters["uint16_4band"])  # B02 B03 B04 B08 uint16, nodata 0
    window = Window(0, 0, 200, 200)
    pair = tiles.read_crop_pair(before, after, window, region_crs="pixel")
    block = np.zeros((200, 200), bool)
    block[:64, :64] = True
    assert np.array_equal(pair.valid, ~block)
    # same grid: the display RGB (bands, map stretch) equals the single crop's
    for crop, raster in ((pair.before, before), (pair.after, after)):
        single = tiles.read_crop(raster, window)
        assert np.array_equal(crop.image[~block], single.image[~block]), raster.name
        assert (crop.image[block] == 0).all()
