"""Crop pixels <-> map coordinates: boxes to lon/lat polygons and back.

A box in crop pixels becomes a polygon with one affine product (``crop.transform``: exact for
rotated and skewed geotransforms), is densified (``DENSIFY_SEGMENTS`` per edge) so its edges
stay correct after reprojection, and is transformed to EPSG:4326. Longitudes are unwrapped
along each ring, so a box straddling the antimeridian spans e.g. 179.9 .. 180.1 instead of
wrapping the globe (:func:`tiles.geojson.to_feature` splits such polygons for RFC 7946).
Crops of non-georeferenced rasters give polygons in raster pixel coordinates.

Oriented boxes: ``angle_deg`` rotates the box about its centre counter-clockwise as seen on
screen (from +x towards -y, y pointing down), the convention of ``engine.types.BoxPx``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import shapely
from shapely.geometry import Polygon

from tiles.crop import Crop
from tiles.crs import LONLAT_CRS, transform_xy, unwrap_lon
from tiles.errors import GeometryError, UnsupportedCRSError

__all__ = [
    "DENSIFY_SEGMENTS",
    "box_to_polygon_px",
    "boxes_to_lonlat",
    "lonlat_to_px",
    "oriented_box_to_polygon",
    "px_to_lonlat",
]

DENSIFY_SEGMENTS = 16
_SIMPLIFY_TOLERANCE = 1e-10  # degrees (~0.01 mm) / pixels: drops only collinear vertices


def oriented_box_to_polygon(cx: float, cy: float, w: float, h: float, angle_deg: float) -> Polygon:
    """Rectangle of size (w, h) centred on (cx, cy), rotated by ``angle_deg`` counter-clockwise
    on screen (y down); corners in order top-left, top-right, bottom-right, bottom-left before
    rotation. Coordinates stay in the caller's pixel space."""
    values = (cx, cy, w, h, angle_deg)
    if not all(math.isfinite(float(v)) for v in values) or w <= 0 or h <= 0:
        raise GeometryError(
            f"oriented box needs finite values with w > 0 and h > 0, got cx={cx}, cy={cy}, "
            f"w={w}, h={h}, angle_deg={angle_deg}"
        )
    theta = math.radians(angle_deg)
    cos, sin = math.cos(theta), math.sin(theta)
    corners = [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)]
    # Counter-clockwise on screen with y down: (dx, dy) -> (dx cos + dy sin, -dx sin + dy cos).
    return Polygon(
        [(cx + dx * cos + dy * sin, cy - dx * sin + dy * cos) for dx, dy in corners]
    )


def box_to_polygon_px(box: Any) -> Polygon:
    """A box as a crop-pixel polygon: an (x0, y0, x1, y1) sequence, or any object with
    x0, y0, x1, y1 attributes and an optional ``angle_deg`` (oriented box)."""
    if all(hasattr(box, k) for k in ("x0", "y0", "x1", "y1")):
        x0, y0, x1, y1 = box.x0, box.y0, box.x1, box.y1
        angle = getattr(box, "angle_deg", None)  # optional field of the duck type
    elif isinstance(box, Sequence) and len(box) == 4 and not isinstance(box, str):
        (x0, y0, x1, y1), angle = box, None
    else:
        raise GeometryError(
            f"a box is (x0, y0, x1, y1) or an object with x0, y0, x1, y1; got {box!r}"
        )
    try:
        x0, y0, x1, y1 = (float(v) for v in (x0, y0, x1, y1))
    except (TypeError, ValueError):
        raise GeometryError(f"box coordinates must be numbers, got {box!r}") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or not (x0 < x1 and y0 < y1):
        raise GeometryError(f"a box needs finite x0 < x1 and y0 < y1 (crop pixels), got {box!r}")
    if angle:
        return oriented_box_to_polygon((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, angle)
    return Polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])


def _densified_ring(polygon: Polygon) -> np.ndarray:
    """(N, 2) exterior ring without the closing point, ``DENSIFY_SEGMENTS`` points per edge."""
    ring = np.asarray(polygon.exterior.coords)[:-1]
    nxt = np.roll(ring, -1, axis=0)
    t = np.linspace(0.0, 1.0, DENSIFY_SEGMENTS, endpoint=False)[None, :, None]
    return (ring[:, None, :] + (nxt - ring)[:, None, :] * t).reshape(-1, 2)


def boxes_to_lonlat(crop: Crop, boxes_px: Iterable[Any]) -> list[Polygon]:
    """Boxes in crop pixels -> polygons in lon/lat (EPSG:4326, lon first); raster pixel
    coordinates instead when the crop is not georeferenced."""
    polygons = []
    for box in boxes_px:
        ring_px = _densified_ring(box_to_polygon_px(box))
        x_crs, y_crs = crop.transform @ (ring_px[:, 0], ring_px[:, 1])
        if crop.crs is None:
            polygons.append(Polygon(zip(x_crs, y_crs, strict=False)))
            continue
        lon, lat = transform_xy(crop.crs, LONLAT_CRS, x_crs, y_crs)
        polygon = Polygon(zip(unwrap_lon(lon), lat, strict=False))
        polygons.append(shapely.simplify(polygon, _SIMPLIFY_TOLERANCE, preserve_topology=True))
    return polygons


def px_to_lonlat(crop: Crop, x_px: Any, y_px: Any) -> tuple[np.ndarray, np.ndarray]:
    """Crop pixel coordinates (arrays, pixel edges) -> (lon, lat) arrays of the same shape."""
    _require_georeferenced(crop, "px_to_lonlat")
    x_crs, y_crs = crop.transform @ (np.asarray(x_px, float), np.asarray(y_px, float))
    return transform_xy(crop.crs, LONLAT_CRS, x_crs, y_crs)


def lonlat_to_px(crop: Crop, lon: Any, lat: Any) -> tuple[np.ndarray, np.ndarray]:
    """(lon, lat) arrays in EPSG:4326 -> crop pixel (x, y) arrays of the same shape."""
    _require_georeferenced(crop, "lonlat_to_px")
    lon, lat = np.asarray(lon, float), np.asarray(lat, float)
    x_crs, y_crs = transform_xy(LONLAT_CRS, crop.crs, lon, lat)
    inverse = ~crop.transform
    return inverse @ (x_crs, y_crs)


def _require_georeferenced(crop: Crop, what: str) -> None:
    if crop.crs is None:
        raise UnsupportedCRSError(
            f"{what}: crop of {crop.image_name!r} is not georeferenced, so it has no lon/lat; "
            "use crop.transform (crop px -> raster px) and the pixel-space helpers instead."
        )
