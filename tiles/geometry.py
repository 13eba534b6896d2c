"""Boxes in crop pixels -> polygons in lon/lat or in raster pixels, and points back.

Boxes come in whatever form the caller has (:data:`tiles.types.BoxesPx`: an (N, 4) or (N, 5)
array, tuples, objects with x0/y0/x1/y1 or ``xyxy`` such as ``engine.types.BoxPx``);
:func:`as_boxes_px` turns them into the one form computed with, an (N, 5) float64 array
``[x0, y0, x1, y1, angle_deg]``. Polygons come out in a space the function names:

* :func:`boxes_to_lonlat`: EPSG:4326 (lon first), for georeferenced crops only
  (NotGeoreferencedError otherwise). A box becomes a polygon with one affine product
  (``crop.transform``: exact for rotated and skewed geotransforms), is densified
  (``DENSIFY_SEGMENTS`` per edge) so its edges stay correct after reprojection, and is
  transformed to lon/lat. Longitudes are unwrapped along each ring, so a box straddling the
  antimeridian spans e.g. 179.9 .. 180.1 instead of wrapping the globe
  (:func:`tiles.geojson.to_feature` splits such polygons for RFC 7946).
* :func:`boxes_to_raster_px`: raster pixels (x = column, y = row), for any crop.
* :func:`boxes_to_result_space`: lon/lat when the crop is georeferenced, else raster pixels,
  returned with the space's name (``"lonlat"`` or ``"pixel"``, as ``to_feature`` takes it).

Oriented boxes: ``angle_deg`` rotates the box about its centre counter-clockwise as seen on
screen (from +x towards -y, y pointing down), the convention of ``engine.types.BoxPx``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely
from affine import Affine
from shapely.geometry import Polygon

from tiles.crop import Crop
from tiles.crs import LONLAT_CRS, transform_xy
from tiles.errors import GeometryError, NotGeoreferencedError
from tiles.pixelspace import PIXEL
from tiles.types import BoxesPx

__all__ = [
    "DENSIFY_SEGMENTS",
    "LONLAT",
    "as_boxes_px",
    "box_to_polygon_px",
    "boxes_to_lonlat",
    "boxes_to_raster_px",
    "boxes_to_result_space",
    "lonlat_to_px",
    "oriented_box_to_polygon",
    "px_to_lonlat",
]

DENSIFY_SEGMENTS = 16
LONLAT = "lonlat"  # name of the EPSG:4326 result space (``to_feature(coordinate_space=...)``)
_SIMPLIFY_TOLERANCE = 1e-10  # degrees (~0.01 mm): drops only collinear vertices
_BOX_FORMS = ("a box is (x0, y0, x1, y1[, angle_deg]) in crop pixels or an object with x0, y0, "
              "x1, y1 (or xyxy) and an optional angle_deg")


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


def as_boxes_px(boxes_px: BoxesPx) -> np.ndarray:
    """(N, 5) float64 ``[x0, y0, x1, y1, angle_deg]`` in crop pixels from any
    :data:`tiles.types.BoxesPx` (angle 0 where none is given). GeometryError names the bad box:
    coordinates must be finite with x0 < x1 and y0 < y1."""
    if isinstance(boxes_px, np.ndarray):
        rows = _array_rows(boxes_px)
    elif isinstance(boxes_px, (str, bytes, dict)) or _is_one_box(boxes_px):
        raise GeometryError(f"expected a list of boxes, got one value {boxes_px!r:.200}; "
                            f"pass [box] ({_BOX_FORMS}) or an N x 4 array")
    else:
        try:
            items = list(boxes_px)
        except TypeError:
            raise GeometryError(f"expected a list of boxes, got {type(boxes_px).__name__}: "
                                f"{boxes_px!r:.200}; {_BOX_FORMS}") from None
        if items and all(isinstance(v, (int, float, np.number)) for v in items):
            raise GeometryError(f"expected a list of boxes, got one box {boxes_px!r:.200}; "
                                "pass [box] or an N x 4 array")
        rows = np.array([_box_row(item, i) for i, item in enumerate(items)], "float64")
        rows = rows.reshape(-1, 5)
    _check_rows(rows, boxes_px)
    return rows


def _is_one_box(value: Any) -> bool:
    return hasattr(value, "xyxy") or all(hasattr(value, k) for k in ("x0", "y0", "x1", "y1"))


def _array_rows(array: np.ndarray) -> np.ndarray:
    if array.size == 0:
        return np.zeros((0, 5))
    if array.ndim != 2 or array.shape[1] not in (4, 5):
        raise GeometryError(
            f"boxes as an array are N x 4 (x0, y0, x1, y1) or N x 5 (+ angle_deg) in crop "
            f"pixels, got shape {array.shape}; one box is np.array([[x0, y0, x1, y1]])"
        )
    try:
        values = array.astype("float64")
    except (TypeError, ValueError):
        raise GeometryError(f"box coordinates must be numbers, got dtype {array.dtype}") from None
    if values.shape[1] == 4:
        values = np.concatenate([values, np.zeros((len(values), 1))], axis=1)
    return values


def _box_row(box: Any, index: int) -> tuple[float, ...]:
    """One box as (x0, y0, x1, y1, angle_deg) floats (not yet validated)."""
    angle = getattr(box, "angle_deg", None)  # optional field of the duck type
    if all(hasattr(box, k) for k in ("x0", "y0", "x1", "y1")):
        values = (box.x0, box.y0, box.x1, box.y1, angle or 0.0)
    elif hasattr(box, "xyxy"):
        values = (*box.xyxy, angle or 0.0)
    elif isinstance(box, (Sequence, np.ndarray)) and not isinstance(box, (str, bytes)) \
            and len(box) in (4, 5):
        values = (*box, 0.0) if len(box) == 4 else tuple(box)
    else:
        raise GeometryError(f"box {index}: {_BOX_FORMS}; got {box!r:.200}")
    try:
        return tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise GeometryError(f"box {index}: coordinates must be numbers, got {box!r:.200}") from None


def _check_rows(rows: np.ndarray, given: Any) -> None:
    finite = np.isfinite(rows).all(axis=1)
    ordered = (rows[:, 0] < rows[:, 2]) & (rows[:, 1] < rows[:, 3])
    bad = np.flatnonzero(~(finite & ordered))
    if bad.size:
        i = int(bad[0])
        raise GeometryError(
            f"box {i} needs finite x0 < x1 and y0 < y1 (crop pixels), got "
            f"{tuple(float(v) for v in rows[i, :4])} (angle {rows[i, 4]:g}); "
            f"{bad.size} of {len(rows)} boxes are invalid"
        )


def _polygon_px(row: np.ndarray) -> Polygon:
    """The crop-pixel polygon of one ``[x0, y0, x1, y1, angle_deg]`` row."""
    x0, y0, x1, y1, angle = (float(v) for v in row)
    if angle:
        return oriented_box_to_polygon((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, angle)
    return Polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])


def box_to_polygon_px(box: Any) -> Polygon:
    """One box (any form :func:`as_boxes_px` takes for a single box) as a crop-pixel
    polygon; oriented when the box has a non-zero angle."""
    return _polygon_px(as_boxes_px([box])[0])


def _densified_rings(rows: np.ndarray) -> np.ndarray:
    """(N, 4 * DENSIFY_SEGMENTS, 2) rings of ``[x0, y0, x1, y1, angle_deg]`` rows,
    ``DENSIFY_SEGMENTS`` points per edge, without the closing point (axis-aligned rows vectorised; oriented rows
    rotated by :func:`_polygon_px`)."""
    x0, y0, x1, y1, angle = (rows[:, i] for i in range(5))
    corners = np.stack([np.stack([x0, y0], -1), np.stack([x1, y0], -1),
                        np.stack([x1, y1], -1), np.stack([x0, y1], -1)], axis=1)  # (N, 4, 2)
    for i in np.flatnonzero(angle):  # oriented boxes: their rotated corners
        corners[i] = np.asarray(_polygon_px(rows[i]).exterior.coords)[:-1]
    nxt = np.roll(corners, -1, axis=1)
    t = np.linspace(0.0, 1.0, DENSIFY_SEGMENTS, endpoint=False)[None, None, :, None]
    rings = corners[:, :, None, :] + (nxt - corners)[:, :, None, :] * t  # (N, 4, S, 2)
    return rings.reshape(len(rows), -1, 2)


def boxes_to_lonlat(crop: Crop, boxes_px: BoxesPx) -> list[Polygon]:
    """Boxes in crop pixels -> polygons in lon/lat (EPSG:4326, lon first), one per box.
    NotGeoreferencedError for a crop of a plain image: use :func:`boxes_to_raster_px` (or
    :func:`boxes_to_result_space`) there."""
    _require_georeferenced(crop, "boxes_to_lonlat")
    rows = as_boxes_px(boxes_px)
    if len(rows) == 0:
        return []
    # One CRS transform for every box's densified ring (per-box calls cost ~1 ms each).
    rings_px = _densified_rings(rows)  # (N, P, 2)
    x_crs, y_crs = crop.transform @ (rings_px[..., 0].ravel(), rings_px[..., 1].ravel())
    lon, lat = transform_xy(crop.crs, LONLAT_CRS, x_crs, y_crs)
    lon = np.unwrap(np.reshape(lon, rings_px.shape[:2]), period=360.0, axis=1)  # (N, P)
    lon -= 360.0 * np.floor((lon[:, :1] + 180.0) / 360.0)  # as unwrap_lon, ring by ring
    rings = np.stack([lon, np.reshape(lat, rings_px.shape[:2])], axis=-1)  # (N, P, 2)
    polygons = shapely.polygons(rings)
    return list(shapely.simplify(polygons, _SIMPLIFY_TOLERANCE, preserve_topology=True))


def boxes_to_raster_px(crop: Crop, boxes_px: BoxesPx) -> list[Polygon]:
    """Boxes in crop pixels -> polygons in raster pixels (x = column, y = row, pixel edges), one
    per box; any crop, georeferenced or not."""
    to_raster = crop.raster_px_transform
    return [_affine_polygon(to_raster, _polygon_px(row)) for row in as_boxes_px(boxes_px)]


def boxes_to_result_space(crop: Crop, boxes_px: BoxesPx) -> tuple[str, list[Polygon]]:
    """(space, polygons): ``("lonlat", boxes_to_lonlat(...))`` for a georeferenced crop, else
    ``("pixel", boxes_to_raster_px(...))``; the space is what ``tiles.to_feature`` takes as
    ``coordinate_space``."""
    if crop.georeferenced:
        return LONLAT, boxes_to_lonlat(crop, boxes_px)
    return PIXEL, boxes_to_raster_px(crop, boxes_px)


def _affine_polygon(transform: Affine, polygon: Polygon) -> Polygon:
    x, y = np.asarray(polygon.exterior.coords)[:-1].T
    xt, yt = transform @ (x, y)
    return Polygon(zip(xt, yt, strict=True))


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
        raise NotGeoreferencedError(
            f"{what}: crop of {crop.image_name!r} is not georeferenced, so it has no lon/lat; "
            "use tiles.boxes_to_raster_px (raster pixels) or tiles.boxes_to_result_space "
            "(lon/lat or raster pixels, whichever the crop has) instead."
        )
