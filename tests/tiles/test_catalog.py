"""Catalog: opaque ids, ownership of datasets, thread safety, cached COGs."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import rasterio

import tiles
from tests.tiles.conftest import decode_png, tile_pixel_of


def test_ids_are_opaque_and_stable(catalog, rasters):
    raster_id = catalog.open(rasters["utm_rgb"])
    assert "utm" not in raster_id and "/" not in raster_id and len(raster_id) >= 8
    assert catalog.open(rasters["utm_rgb"]) == raster_id  # the same file keeps its id
    other = catalog.open(rasters["geographic_rgb"])
    assert other != raster_id
    raster = catalog.get(raster_id)
    assert raster.raster_id == raster_id and raster.path.name == "utm_rgb.tif"
    assert [r.raster_id for r in catalog.list()] == [raster_id, other]
    assert len(catalog) == 2 and raster_id in catalog


def test_unknown_id_lists_open_ids(catalog, rasters):
    raster_id = catalog.open(rasters["utm_rgb"])
    with pytest.raises(tiles.UnknownRasterError) as info:
        catalog.get("../../etc/passwd")
    assert raster_id in str(info.value) and "'../../etc/passwd'" in str(info.value)
    assert isinstance(info.value, KeyError)


def test_close_releases_datasets(catalog, rasters):
    raster_id = catalog.open(rasters["utm_rgb"])
    raster, source = catalog.get(raster_id), catalog.source(raster_id)
    tiles.read_crop(raster, rasterio.windows.Window(0, 0, 32, 32), source=source)
    assert source.open_handles == 1
    catalog.close(raster_id)
    assert source.closed and source.open_handles == 0
    for lookup in (catalog.get, catalog.source, catalog.close):
        with pytest.raises(tiles.UnknownRasterError):
            lookup(raster_id)
    with pytest.raises(tiles.RasterOpenError, match="was closed"):
        tiles.read_crop(raster, rasterio.windows.Window(0, 0, 32, 32), source=source)
    # the raster is a value: without the catalog's pool a read opens the file for the call
    assert tiles.read_crop(raster, rasterio.windows.Window(0, 0, 32, 32)).image.shape == (32, 32, 3)


def test_rasters_are_values_without_open_files(catalog, rasters):
    raster = catalog.get(catalog.open(rasters["utm_rgb"]))
    bare = tiles.open_raster(rasters["utm_rgb"])
    assert not hasattr(raster, "source")
    assert dataclasses.replace(bare, raster_id=raster.raster_id) == raster
    assert hash(dataclasses.replace(bare, raster_id=raster.raster_id)) == hash(raster)
    assert len({raster, catalog.get(raster.raster_id)}) == 1


def test_a_source_of_another_raster_is_refused(catalog, rasters):
    raster = catalog.get(catalog.open(rasters["utm_rgb"]))
    other = catalog.source(catalog.open(rasters["nodata_rgb"]))
    with pytest.raises(ValueError, match="catalog.source"):
        tiles.read_crop(raster, rasterio.windows.Window(0, 0, 32, 32), source=other)
    with pytest.raises(ValueError, match="catalog.source"):
        tiles.render_tile(raster, 14, *tile_pixel_of(15.03, 47.83, 14)[:2], source=other)


def test_context_manager_closes_all(tmp_path, rasters):
    with tiles.Catalog(tmp_path) as cat:
        sources = [cat.source(cat.open(rasters[n])) for n in ("utm_rgb", "nodata_rgb")]
    assert all(s.closed for s in sources) and len(cat) == 0


def test_bad_path_is_not_registered(catalog, rasters):
    with pytest.raises(tiles.RasterOpenError):
        catalog.open(rasters["corrupt"])
    assert len(catalog) == 0


def test_datasets_are_reused_across_calls(catalog, rasters):
    raster_id = catalog.open(rasters["utm_rgb"])
    raster, source = catalog.get(raster_id), catalog.source(raster_id)
    for _ in range(5):
        tiles.read_crop(raster, rasterio.windows.Window(0, 0, 64, 64), source=source)
        tiles.render_tile(raster, 14, *tile_pixel_of(15.03, 47.83, 14)[:2], source=source)
    assert source.open_handles == 1  # one thread -> one handle, never reopened


def test_concurrent_tiles_and_crops_match_serial(catalog, rasters):
    raster_id = catalog.open(rasters["utm_rgb"])
    raster, source = catalog.get(raster_id), catalog.source(raster_id)
    west, south, east, north = raster.bounds_lonlat
    jobs = [(z, *tile_pixel_of(lon, lat, z)[:2])
            for z in (13, 15, 16)
            for lon in np.linspace(west, east, 4) for lat in np.linspace(south, north, 3)]
    serial = [tiles.render_tile(raster, *job) for job in jobs]
    assert all(decode_png(png)[..., 3].max() == 255 for png in serial)  # real content
    window = rasterio.windows.Window(10, 20, 200, 150)
    crop_serial = tiles.read_crop(raster, window).image

    def work(job):
        return (tiles.render_tile(raster, *job, source=source),
                tiles.read_crop(raster, window, source=source).image)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(work, jobs * 3))
    for (png, crop), expected in zip(results, serial * 3, strict=True):
        assert np.array_equal(decode_png(png), decode_png(expected))
        assert np.array_equal(crop, crop_serial)
    assert 1 <= source.open_handles <= 4  # at most one handle per concurrent thread


def test_large_striped_raster_gets_cached_cog(tmp_path, rasters):
    source = rasters["large_striped"]
    workspace = tmp_path / "ws"
    with tiles.Catalog(workspace, cog_threshold_px=1024) as cat:
        raster = cat.get(cat.open(source))
        assert raster.path == source  # reports the analyst's file ...
        assert raster.read_path is not None and raster.read_path.parent.name == "cog-cache"
        assert raster.read_path.exists() and raster.tiled and raster.overviews  # ... reads a COG
        cog_mtime = raster.read_path.stat().st_mtime_ns
        crop = tiles.read_crop(raster, rasterio.windows.Window(100, 200, 300, 300))
    cog_files = list((workspace / "cog-cache").iterdir())
    assert cog_files == [raster.read_path]  # no temp files left behind
    with rasterio.open(raster.read_path) as cog:  # tiled, compressed, overviews to one tile
        assert cog.profile["tiled"] and cog.block_shapes == [(512, 512)] * 3
        assert cog.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
        assert cog.overviews(1) == [2, 4]  # 2048 px -> 512 px: one tile at the smallest level
    with rasterio.open(source) as src:  # lossless copy: same pixels as the original
        expected = src.read(window=rasterio.windows.Window(100, 200, 300, 300))
    assert np.array_equal(crop.image, expected.transpose(1, 2, 0))
    with tiles.Catalog(workspace, cog_threshold_px=1024) as cat:  # a later session reuses it
        again = cat.get(cat.open(source))
        assert again.read_path == raster.read_path
        assert again.read_path.stat().st_mtime_ns == cog_mtime


def test_small_or_tiled_rasters_are_read_in_place(catalog, rasters):
    raster = catalog.get(catalog.open(rasters["utm_rgb"]))
    assert raster.read_path is None and raster.file_to_read == rasters["utm_rgb"]
    assert not tiles.needs_cog(tiles.open_raster(rasters["large_striped"]))  # 2048 <= 4096
    assert tiles.needs_cog(tiles.open_raster(rasters["large_striped"]), threshold_px=1024)


def test_cog_key_changes_when_the_file_changes(tmp_path, rasters):
    copy = tmp_path / "copy.tif"
    copy.write_bytes(rasters["utm_rgb"].read_bytes())
    first = tiles.cog_cache_path(tmp_path, copy)
    copy.write_bytes(rasters["utm_rgb"].read_bytes() + b"\0")
    assert tiles.cog_cache_path(tmp_path, copy) != first
