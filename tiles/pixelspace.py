"""Pixel space for rasters without georeferencing (plain PNG/JPEG aerial photos).

Such rasters are shown on a Leaflet map with ``L.CRS.Simple`` and served as pixel tiles.

Coordinates (one convention everywhere):
    * ``"pixel"`` — raster pixel coordinates: x = column, y = row, y pointing down, pixel
      edges, origin at the top-left corner of the image (the same as raster "window" space).
    * ``"leaflet-simple"`` — what the CRS.Simple map draws: ``lng = col``, ``lat = -row``.
      One map unit is one image pixel; GeoJSON from the map is ``[lng, lat] = [col, -row]``.

Tiles (:class:`PixelTileScheme`): ``native_zoom = ceil(log2(max(w, h) / tilesize))`` (0 when
the image fits one tile) shows one image pixel per screen pixel; every zoom level below halves
the scale (zoom 0 shows the whole image in one tile); up to ``overzoom`` levels above enlarge
(nearest neighbour). Tile (x, y) at zoom z covers image pixels
``[x, x+1) * tilesize * 2**(native_zoom - z)`` horizontally (same for y, rows).

Leaflet: ``L.map(el, {crs: L.CRS.Simple, minZoom: -native_zoom, maxZoom: overzoom})`` and
``L.tileLayer(url, scheme.leaflet_options())`` with ``zoomOffset = native_zoom``, so Leaflet
zoom 0 is the native resolution and the map's (lat, lng) are exactly (-row, col).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

__all__ = [
    "DEFAULT_OVERZOOM",
    "LEAFLET_SIMPLE",
    "PIXEL",
    "PIXEL_SPACES",
    "PixelTileScheme",
    "geometry_leaflet_simple_to_px",
    "leaflet_simple_to_px",
    "pixel_tile_scheme",
    "px_to_leaflet_simple",
]

PIXEL = "pixel"
LEAFLET_SIMPLE = "leaflet-simple"
PIXEL_SPACES = (PIXEL, LEAFLET_SIMPLE)
DEFAULT_OVERZOOM = 3


@dataclass(frozen=True)
class PixelTileScheme:
    """Pixel-tile pyramid of one image (see the module docstring for the scheme)."""

    width: int
    height: int
    tilesize: int
    native_zoom: int
    max_zoom: int

    def __post_init__(self) -> None:
        if min(self.width, self.height, self.tilesize) < 1:
            raise ValueError(
                f"pixel tile scheme needs width, height, tilesize >= 1, got "
                f"{self.width}, {self.height}, {self.tilesize}"
            )
        if not 0 <= self.native_zoom <= self.max_zoom:
            raise ValueError(
                f"need 0 <= native_zoom <= max_zoom, got {self.native_zoom}, {self.max_zoom}"
            )

    def image_px_per_tile_px(self, z: int) -> float:
        """Image pixels per screen pixel at zoom ``z`` (1 at native zoom, 2**k below it)."""
        return 2.0 ** (self.native_zoom - z)

    def tile_window(self, z: int, x: int, y: int) -> Window:
        """Raster pixel window covered by tile (z, x, y) (may extend past the image)."""
        span = self.tilesize * self.image_px_per_tile_px(z)
        return Window(x * span, y * span, span, span)

    def tile_count(self, z: int) -> tuple[int, int]:
        """(tiles along x, tiles along y) that touch the image at zoom ``z``."""
        span = self.tilesize * self.image_px_per_tile_px(z)
        return math.ceil(self.width / span), math.ceil(self.height / span)

    def leaflet_options(self) -> dict[str, Any]:
        """Options for ``L.tileLayer`` on a ``L.CRS.Simple`` map (JSON-serialisable)."""
        return {
            "tileSize": self.tilesize,
            "zoomOffset": self.native_zoom,
            "minZoom": -self.native_zoom,
            "maxZoom": self.max_zoom - self.native_zoom,
            "noWrap": True,
            # [[lat_min, lng_min], [lat_max, lng_max]] of the image in CRS.Simple units
            "bounds": [[-self.height, 0], [0, self.width]],
        }


def pixel_tile_scheme(
    width: int, height: int, tilesize: int = 256, overzoom: int = DEFAULT_OVERZOOM
) -> PixelTileScheme:
    """The pixel-tile scheme of a ``width`` x ``height`` image."""
    native = max(0, math.ceil(math.log2(max(width, height) / tilesize))) if tilesize > 0 else 0
    return PixelTileScheme(width, height, tilesize, native, native + max(0, overzoom))


def px_to_leaflet_simple(col: Any, row: Any) -> tuple[np.ndarray, np.ndarray]:
    """Raster pixel (col, row) -> Leaflet CRS.Simple (lat, lng) = (-row, col)."""
    return -np.asarray(row, float), np.asarray(col, float)


def leaflet_simple_to_px(lat: Any, lng: Any) -> tuple[np.ndarray, np.ndarray]:
    """Leaflet CRS.Simple (lat, lng) -> raster pixel (col, row) = (lng, -lat)."""
    return np.asarray(lng, float), -np.asarray(lat, float)


def geometry_leaflet_simple_to_px(geometry: BaseGeometry) -> BaseGeometry:
    """A geometry drawn on the CRS.Simple map ([lng, lat]) -> pixel (x = col, y = row)."""
    return shapely.transform(geometry, lambda xy: xy * np.array([1.0, -1.0]))
