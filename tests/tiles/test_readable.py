"""Unreadable pixels (issue 18, item 4): a truncated COG is refused at open; a file that breaks
after it was opened gives a TilesError naming the read, not a raw RasterioIOError."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine

import tiles
from tests.tiles import rasters as gen
from tests.tiles.conftest import raster_px_to_lonlat, tile_pixel_of

TRANSFORM = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_300_000.0)


def _noise(size: int) -> np.ndarray:
    """(3, size, size) uint8 noise: DEFLATE cannot shrink it, so offsets are predictable."""
    return np.random.default_rng(2).integers(0, 256, (3, size, size), dtype="uint8")


def _truncate(path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def test_truncated_cog_is_refused_at_open(tmp_path):
    path = tmp_path / "cut.tif"
    tiles.write_raster(path, _noise(1024), gen.UTM33, TRANSFORM, cog=True)
    with rasterio.open(path) as ds:
        assert ds.overviews(1)  # a real COG: header and overviews first, full resolution last
    _truncate(path, 0.6)
    with rasterio.open(path) as ds:  # GDAL itself opens it without complaint
        assert ds.width == 1024
    with pytest.raises(tiles.RasterOpenError) as info:
        tiles.open_raster(path)
    message = str(info.value)
    assert str(path) in message and "cannot be read at the last block" in message
    assert "truncated or corrupt" in message and "re-export" in message
    with tiles.Catalog(tmp_path / "ws") as cat:
        with pytest.raises(tiles.RasterOpenError, match="truncated"):
            cat.open(path)
        assert len(cat) == 0


def test_broken_smallest_overview_is_refused_at_open(tmp_path):
    path = tmp_path / "ovr.tif"
    tiles.write_raster(path, _noise(1024), gen.UTM33, TRANSFORM, cog=True)
    with rasterio.open(path) as ds:
        factors = ds.overviews(1)
        smallest = len(factors) - 1
        offset = int(ds.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1, ovr=smallest))
        size = int(ds.get_tag_item("BLOCK_SIZE_0_0", "TIFF", bidx=1, ovr=smallest))
    data = bytearray(path.read_bytes())
    data[offset:offset + size] = np.random.default_rng(3).bytes(size)  # garbage, not DEFLATE
    path.write_bytes(bytes(data))
    with pytest.raises(tiles.RasterOpenError, match=f"at overview 1/{factors[-1]} of band 1"):
        tiles.open_raster(path)


def test_read_errors_after_open_become_tiles_errors(tmp_path):
    path = tmp_path / "later.tif"
    tiles.write_raster(path, _noise(1024), gen.UTM33, TRANSFORM)
    with tiles.Catalog(tmp_path / "ws") as cat:
        raster = cat.get(cat.open(path))  # fine at open
        _truncate(path, 0.5)  # ... then the file is cut under the open handles
        window = rasterio.windows.Window(0, 700, 256, 256)
        with pytest.raises(tiles.RasterReadError) as info:
            tiles.read_crop(raster, window)
        message = str(info.value)
        assert "cannot be read at pixels x 0..256, y 700..956" in message
        assert "truncated or corrupt" in message and str(path) in message
        assert isinstance(info.value, tiles.TilesError) and isinstance(info.value, OSError)
        lon, lat = raster_px_to_lonlat(path, 600, 900)
        x, y, _, _ = tile_pixel_of(lon, lat, 15)
        with pytest.raises(tiles.RasterReadError, match=f"map tile 15/{x}/{y}"):
            tiles.render_tile(raster, 15, x, y)
        with pytest.raises(tiles.RasterReadError, match="pixel-space tile"):
            tiles.render_pixel_tile(raster, 2, 3, 3)
