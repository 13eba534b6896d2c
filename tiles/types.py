"""Type aliases used across ``tiles`` so signatures read as domain prose (rio-tiler style).

Only aliases live here, no behaviour. Coordinate spaces follow DESIGN.md: ``px`` crop pixels,
``window`` raster pixels, ``crs`` the raster CRS, ``lonlat`` EPSG:4326 (lon first).
"""

from __future__ import annotations

from os import PathLike
from typing import Any, Protocol, TypeAlias

from pyproj import CRS as ProjCRS
from rasterio.crs import CRS

__all__ = [
    "BoundsCRS",
    "BoundsLonLat",
    "BoxLike",
    "BoxPx",
    "CRSLike",
    "GeoJSONDict",
    "PathLikeStr",
]

BoundsCRS: TypeAlias = tuple[float, float, float, float]
"""(left, bottom, right, top) in the raster CRS."""

BoundsLonLat: TypeAlias = tuple[float, float, float, float]
"""(west, south, east, north) in degrees; east may exceed 180 when the raster crosses the
antimeridian (longitudes are kept continuous, as Leaflet expects)."""

BoxPx: TypeAlias = tuple[float, float, float, float]
"""(x0, y0, x1, y1) in crop pixels, x right, y down, pixel edges, origin top-left."""

CRSLike: TypeAlias = str | CRS | ProjCRS
"""Anything ``pyproj.CRS.from_user_input`` accepts: "EPSG:4326", WKT, a rasterio/pyproj CRS."""

GeoJSONDict: TypeAlias = dict[str, Any]
"""A parsed GeoJSON object (geometry, Feature or FeatureCollection)."""

PathLikeStr: TypeAlias = str | PathLike[str]


class BoxLike(Protocol):
    """Duck type of a detected box (e.g. ``engine.types.BoxPx``) without importing engine.

    ``angle_deg`` is optional on the object; when present and non-zero the box is oriented:
    rotated by ``angle_deg`` (counter-clockwise on screen, y down) about its centre.
    """

    x0: float
    y0: float
    x1: float
    y1: float
