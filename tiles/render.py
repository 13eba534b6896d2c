"""Map tiles as PNG bytes: Web Mercator XYZ tiles (rio-tiler) and pixel-space tiles.

:func:`render_tile` serves ``/tiles/{raster_id}/{z}/{x}/{y}.png`` for georeferenced rasters:
rio-tiler reads the tile in EPSG:3857 (WebMercatorQuad) from the raster's pooled datasets
(``source=``, the catalog's), bands are picked by preset/color interpretation, non-uint8 data is
stretched with the raster's cached 2-98 % percentiles, and nodata/alpha/masked pixels become
transparent. Tiles that miss the raster are fully transparent PNGs, not errors.

:func:`render_pixel_tile` serves the pixel-space pyramid of non-georeferenced images (Leaflet
``CRS.Simple``), defined in :mod:`tiles.pixelspace`.
"""

from __future__ import annotations

import functools
import io
import math

import numpy as np
from morecantile import Tile
from PIL import Image
from rasterio.enums import Resampling

from tiles.display import display_stats, needs_stretch, palette_lut, to_display_rgb
from tiles.errors import TileError
from tiles.pixelspace import pixel_tile_scheme
from tiles.presets import select_bands
from tiles.raster import Raster
from tiles.reading import raster_handle, read_display_rgb
from tiles.source import RasterSource

__all__ = [
    "MAX_ZOOM",
    "encode_png",
    "render_pixel_tile",
    "render_tile",
    "tile_bounds_lonlat",
    "tile_intersects",
    "transparent_png",
]

MAX_ZOOM = 24  # deepest WebMercatorQuad level served (~1 cm/px at the equator)
PNG_COMPRESS_LEVEL = 1
_EARTH_RADIUS_M = 6378137.0  # WebMercatorQuad sphere
_MERCATOR_MAX_LAT = 85.0511287798066  # fast zlib level: tiles are served locally, speed beats bytes


def encode_png(rgb: np.ndarray, alpha: np.ndarray | None) -> bytes:
    """(H, W, 3) uint8 RGB plus optional (H, W) uint8 alpha -> PNG bytes."""
    if alpha is None:
        image = Image.fromarray(rgb, "RGB")
    else:
        image = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


@functools.lru_cache(maxsize=8)
def transparent_png(tilesize: int = 256) -> bytes:
    """A fully transparent ``tilesize`` x ``tilesize`` PNG (tiles outside the raster)."""
    zeros = np.zeros((tilesize, tilesize, 3), "uint8")
    return encode_png(zeros, np.zeros((tilesize, tilesize), "uint8"))


def _check_tile(z: int, x: int, y: int, tilesize: int, max_zoom: int) -> None:
    values = (z, x, y, tilesize)
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        raise TileError(f"tile z/x/y and tilesize must be integers, got z={z!r} x={x!r} y={y!r} "
                        f"tilesize={tilesize!r}")
    if not 0 <= z <= max_zoom:
        raise TileError(f"zoom {z} is outside 0..{max_zoom}; request a zoom in that range.")
    if x < 0 or y < 0:
        raise TileError(f"tile x/y must be >= 0, got x={x}, y={y} at zoom {z}")
    if not 16 <= tilesize <= 1024:
        raise TileError(f"tilesize must be within 16..1024 pixels, got {tilesize}")


def tile_bounds_lonlat(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """(west, south, east, north) of WebMercatorQuad tile (z, x, y) in degrees."""
    n = 2.0**z

    def lat(row: float) -> float:
        return math.degrees(math.atan(math.sinh(math.pi * (1.0 - 2.0 * row / n))))

    return (x / n * 360.0 - 180.0, lat(y + 1), (x + 1) / n * 360.0 - 180.0, lat(y))


def tile_intersects(raster: Raster, z: int, x: int, y: int) -> bool:
    """Whether tile (z, x, y) overlaps the raster's lon/lat bounds (conservative: a bounding-box
    test, also across the antimeridian where the raster's east exceeds 180)."""
    if raster.bounds_lonlat is None:
        return False
    west, south, east, north = raster.bounds_lonlat
    t_west, t_south, t_east, t_north = tile_bounds_lonlat(z, x, y)
    if t_north <= south or t_south >= north:
        return False
    return any(t_west < east + shift and t_east > west + shift for shift in (-360.0, 0.0, 360.0))


def render_tile(
    raster: Raster, z: int, x: int, y: int, *, preset: str | None = None, tilesize: int = 256,
    source: RasterSource | None = None,
) -> bytes:
    """PNG of Web Mercator tile (z, x, y) of a georeferenced raster (RGBA, transparent where
    there is no data). ``source``: the raster's open datasets (``catalog.source(raster_id)``;
    None opens the file for this call). Raises TileError for bad indexes or a raster without
    georeferencing."""
    _check_tile(z, x, y, tilesize, MAX_ZOOM)
    if x >= 2**z or y >= 2**z:
        raise TileError(f"tile x/y must be < 2**z = {2**z} at zoom {z}, got x={x}, y={y}")
    if not raster.georeferenced:
        raise TileError(
            f"raster {raster.name!r} is not georeferenced; show it on a CRS.Simple map with "
            "tiles.render_pixel_tile (see tiles.pixelspace)."
        )
    selection = select_bands(raster, preset)  # validates the preset even for empty tiles
    rect = _tile_pixel_rect(raster, z, x, y, tilesize)
    if rect is None:
        return transparent_png(tilesize)
    with raster_handle(raster, f"map tile {z}/{x}/{y}", source=source) as (handle, pool):
        reader = handle.tile_reader()
        image = _read_tile_part(reader, z, x, y, tilesize, rect, selection.indexes)
        stats = (display_stats(handle, pool, raster, selection)
                 if needs_stretch(raster, selection) and not selection.palette else None)
        lut = palette_lut(handle, pool, selection.indexes[0]) if selection.palette else None
    i0, i1, j0, j1 = rect
    rgb = np.zeros((tilesize, tilesize, 3), "uint8")
    alpha = np.zeros((tilesize, tilesize), "uint8")
    rgb[i0:i1, j0:j1] = to_display_rgb(image.array.data, stats, lut)
    mask = image.mask
    alpha[i0:i1, j0:j1] = mask if mask.dtype == np.uint8 else np.where(mask > 0, 255, 0)
    return encode_png(rgb, alpha)


def _mercator_xy(lon: float, lat: float) -> tuple[float, float]:
    lat = min(max(lat, -_MERCATOR_MAX_LAT), _MERCATOR_MAX_LAT)
    return (_EARTH_RADIUS_M * math.radians(lon),
            _EARTH_RADIUS_M * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2)))


def _tile_pixel_rect(
    raster: Raster, z: int, x: int, y: int, tilesize: int
) -> tuple[int, int, int, int] | None:
    """(row0, row1, col0, col1): the tile pixels the raster's bounding box covers, or None when
    the tile misses the raster. Reading only that part keeps zoomed-out tiles of small rasters
    cheap (rio-tiler sizes its warp at the raster's resolution over the whole requested box)."""
    if not tile_intersects(raster, z, x, y):
        return None
    west, south, east, north = raster.bounds_lonlat
    if east > 180.0:  # crosses the antimeridian: let the warper handle the whole tile
        return 0, tilesize, 0, tilesize
    t_west, t_south, t_east, t_north = tile_bounds_lonlat(z, x, y)
    tx0, ty1 = _mercator_xy(t_west, t_north)
    tx1, _ = _mercator_xy(t_east, t_south)
    rx0, ry0 = _mercator_xy(west, south)
    rx1, ry1 = _mercator_xy(east, north)
    px = (tx1 - tx0) / tilesize
    j0 = min(max(math.floor((rx0 - tx0) / px), 0), tilesize)
    j1 = min(max(math.ceil((rx1 - tx0) / px), 0), tilesize)
    i0 = min(max(math.floor((ty1 - ry1) / px), 0), tilesize)
    i1 = min(max(math.ceil((ty1 - ry0) / px), 0), tilesize)
    if j1 <= j0 or i1 <= i0:
        return None
    return i0, i1, j0, j1


def _read_tile_part(reader, z: int, x: int, y: int, tilesize: int,
                    rect: tuple[int, int, int, int], indexes: tuple[int, ...]):
    """rio-tiler ImageData of tile pixels rect = (row0, row1, col0, col1), in EPSG:3857.

    This is ``Reader.tile`` restricted to the covered pixels and without its own
    ``tile_exists`` check (which builds a fresh GDAL transformer per call: ~15 ms with datum
    shifts); the pixel grid stays exactly the tile's.
    """
    left, bottom, right, top = reader.tms.xy_bounds(Tile(x=x, y=y, z=z))
    px_x, px_y = (right - left) / tilesize, (top - bottom) / tilesize
    i0, i1, j0, j1 = rect
    bbox = (left + j0 * px_x, top - i1 * px_y, left + j1 * px_x, top - i0 * px_y)
    crs = reader.tms.rasterio_crs
    return reader.part(bbox, dst_crs=crs, bounds_crs=crs, height=i1 - i0, width=j1 - j0,
                       max_size=None, indexes=indexes)


def render_pixel_tile(
    raster: Raster, z: int, x: int, y: int, *, preset: str | None = None, tilesize: int = 256,
    source: RasterSource | None = None,
) -> bytes:
    """PNG of pixel-space tile (z, x, y) (scheme in :mod:`tiles.pixelspace`); any raster works,
    georeferenced or not, since pixel space ignores the CRS. ``source`` as for
    :func:`render_tile`."""
    scheme = pixel_tile_scheme(raster.width, raster.height, tilesize)
    _check_tile(z, x, y, tilesize, scheme.max_zoom)
    selection = select_bands(raster, preset)
    window = scheme.tile_window(z, x, y)
    if window.col_off >= raster.width or window.row_off >= raster.height:
        return transparent_png(tilesize)
    with raster_handle(raster, f"pixel-space tile {z}/{x}/{y}", source=source) as (handle, pool):
        rgb, valid = read_display_rgb(
            handle, pool, raster, selection, window, (tilesize, tilesize), Resampling.nearest
        )
    return encode_png(rgb, np.where(valid, 255, 0).astype("uint8"))
