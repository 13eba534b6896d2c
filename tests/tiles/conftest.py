"""Fixtures for tests/tiles: the generated rasters (built once per session) and a catalog."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.tiles import rasters as gen
from tests.tiles.http_recorder import RequestRecorder
from tiles import Catalog


@pytest.fixture(scope="session")
def rasters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> path of every raster in tests/tiles/rasters.py (read-only for tests)."""
    return gen.build_all(tmp_path_factory.mktemp("rasters"))


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    with Catalog(tmp_path / "workspace") as cat:
        yield cat


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> (H, W, 4) uint8 RGBA."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


def tile_pixel_of(lon: float, lat: float, z: int, tilesize: int = 256) -> tuple[int, int, int, int]:
    """(x, y, col, row): the WebMercatorQuad tile holding (lon, lat) and the pixel inside it."""
    import morecantile

    tms = morecantile.tms.get("WebMercatorQuad")
    tile = tms.tile(lon, lat, z)
    left, bottom, right, top = tms.xy_bounds(tile)
    mx, my = tms.xy(lon, lat)
    col = int((mx - left) / (right - left) * tilesize)
    row = int((top - my) / (top - bottom) * tilesize)
    return tile.x, tile.y, col, row


def raster_px_to_lonlat(raster_path: Path, col: float, row: float) -> tuple[float, float]:
    """Lon/lat of raster pixel position (col, row), straight from rasterio + pyproj."""
    import rasterio
    from pyproj import Transformer

    with rasterio.open(raster_path) as ds:
        x, y = ds.transform @ (col, row)
        to_lonlat = Transformer.from_crs(ds.crs, "EPSG:4326", always_xy=True)
    return to_lonlat.transform(x, y)


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[RequestRecorder]:
    """A local HTTP server (own process) that records the requests it receives."""
    with RequestRecorder(tmp_path) as server:
        yield server
