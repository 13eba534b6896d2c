"""Type aliases used across ``tiles`` so signatures read as domain prose (rio-tiler style).

Only aliases live here, no behaviour. Coordinate spaces follow DESIGN.md: ``px`` crop pixels,
``window`` raster pixels, ``crs`` the raster CRS, ``lonlat`` EPSG:4326 (lon first).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from os import PathLike
from typing import Any, Protocol, TypeAlias

import numpy as np
from pyproj import CRS as ProjCRS
from rasterio.crs import CRS

__all__ = [
    "BoundsCRS",
    "BoundsLonLat",
    "BoxLike",
    "BoxesPx",
    "CRSLike",
    "GeoJSONDict",
    "PathLikeStr",
]

BoundsCRS: TypeAlias = tuple[float, float, float, float]
"""(left, bottom, right, top) in the raster CRS."""

BoundsLonLat: TypeAlias = tuple[float, float, float, float]
"""(west, south, east, north) in degrees; east may exceed 180 when the raster crosses the
antimeridian (longitudes are kept continuous, as Leaflet expects)."""

CRSLike: TypeAlias = str | CRS | ProjCRS
"""Anything ``pyproj.CRS.from_user_input`` accepts: "EPSG:4326", WKT, a rasterio/pyproj CRS."""

GeoJSONDict: TypeAlias = dict[str, Any]
"""A parsed GeoJSON object (geometry, Feature or FeatureCollection)."""

PathLikeStr: TypeAlias = str | PathLike[str]


class BoxLike(Protocol):
    """Duck type of a detected box (e.g. ``engine.types.BoxPx``) without importing engine:
    x0, y0, x1, y1 in crop pixels (or an ``xyxy`` tuple of them instead).

    ``angle_deg`` is optional on the object; when present and non-zero the box is oriented:
    rotated by ``angle_deg`` (counter-clockwise on screen, y down) about its centre.
    """

    x0: float
    y0: float
    x1: float
    y1: float


BoxesPx: TypeAlias = np.ndarray | Iterable[BoxLike | Sequence[float]]
"""Boxes in crop pixels (x right, y down, pixel edges, origin top-left), as users have them: an
(N, 4) array of x0, y0, x1, y1 or (N, 5) with angle_deg, or an iterable of boxes, each a
``(x0, y0, x1, y1[, angle_deg])`` sequence or a :class:`BoxLike`. ``tiles.as_boxes_px`` turns
any of them into the one form tiles computes with: an (N, 5) float64 array."""
