"""Drawn region -> raster pixel window: :func:`region_window`.

The geometry (any GeoJSON geometry, a Feature, or a shapely geometry) is densified in its own
CRS, reprojected vertex by vertex into the raster CRS, mapped to raster pixels with the inverse
geotransform (exact for rotated/skewed transforms) and bounded by whole pixels. Points become
squares of ``point_size_m`` metres on the ground (``point_size_px`` pixels in pixel space;
:func:`point_square`).
The window is clipped to the raster; a region that misses the raster entirely raises
RegionOutsideError naming the raster's lon/lat bounds.

``geometry_crs`` is a CRS ("EPSG:4326", the raster's WKT, ...) or a pixel space from
:mod:`tiles.pixelspace`: ``"pixel"`` (or None) for raster pixels, ``"leaflet-simple"`` for
coordinates drawn on a CRS.Simple map. Non-georeferenced rasters accept only pixel spaces.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import shapely
from pyproj import CRS as ProjCRS
from rasterio.windows import Window
from shapely.geometry import Point, Polygon, box, shape
from shapely.geometry.base import BaseGeometry

from tiles.crs import LONLAT_CRS, ground_square_lonlat, parse_crs, transform_xy
from tiles.errors import GeometryError, NotGeoreferencedError, RegionOutsideError
from tiles.pixelspace import LEAFLET_SIMPLE, PIXEL, PIXEL_SPACES, geometry_leaflet_simple_to_px
from tiles.raster import Raster
from tiles.types import CRSLike

__all__ = [
    "DEFAULT_POINT_SIZE_M",
    "DEFAULT_POINT_SIZE_PX",
    "as_geometry",
    "point_square",
    "region_window",
]

DEFAULT_POINT_SIZE_M = 500.0
DEFAULT_POINT_SIZE_PX = 256.0
_DENSIFY_PARTS = 32  # segments along the longer side of a part's bounding box
_SNAP_PX = 1e-6  # float noise tolerated when rounding vertices to whole pixels
SUPPORTED_TYPES = (
    "Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon",
    "GeometryCollection",
)


def as_geometry(geometry: Any) -> BaseGeometry:
    """A non-empty shapely geometry from a GeoJSON geometry/Feature/FeatureCollection dict or a
    shapely geometry; GeometryError says what is wrong."""
    if isinstance(geometry, BaseGeometry):
        geom = geometry
    elif isinstance(geometry, dict):
        geom = _from_geojson(geometry)
    else:
        raise GeometryError(
            f"expected a GeoJSON geometry dict or a shapely geometry, got "
            f"{type(geometry).__name__}: {geometry!r:.200}"
        )
    if geom.is_empty:
        raise GeometryError(f"the geometry is empty: {geom.wkt:.200}; draw a region first.")
    if geom.geom_type not in SUPPORTED_TYPES:
        raise GeometryError(
            f"geometry type {geom.geom_type!r} is not supported; use one of {SUPPORTED_TYPES}"
        )
    if not np.isfinite(shapely.get_coordinates(geom)).all():
        raise GeometryError(f"the geometry has non-finite coordinates: {geom.wkt:.200}")
    return geom


def _from_geojson(obj: dict) -> BaseGeometry:
    kind = obj.get("type")
    if kind == "Feature":
        if obj.get("geometry") is None:
            raise GeometryError("the GeoJSON Feature has no geometry; draw a region first.")
        return _from_geojson(obj["geometry"])
    if kind == "FeatureCollection":
        parts = [_from_geojson(f) for f in obj.get("features") or []]
        if not parts:
            raise GeometryError("the GeoJSON FeatureCollection has no features.")
        return shapely.GeometryCollection(parts)
    try:
        return shape(obj)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError,
            shapely.errors.ShapelyError) as exc:
        raise GeometryError(
            f"not a valid GeoJSON geometry ({type(exc).__name__}: {exc}): {obj!r:.200}. "
            f"Expected {{'type': one of {SUPPORTED_TYPES}, 'coordinates': [...]}}."
        ) from exc


def _parts(geom: BaseGeometry) -> list[BaseGeometry]:
    """Leaf geometries (points, lines, polygons) of any (nested) collection."""
    if geom.geom_type in ("GeometryCollection", "MultiPoint", "MultiLineString", "MultiPolygon"):
        return [leaf for part in shapely.get_parts(geom) for leaf in _parts(part)]
    return [] if geom.is_empty else [geom]


def _densified_coords(part: BaseGeometry) -> np.ndarray:
    """(N, 2) vertices of ``part`` after segmentizing its edges."""
    minx, miny, maxx, maxy = part.bounds
    span = max(maxx - minx, maxy - miny)
    if span > 0 and part.geom_type != "Point":
        part = shapely.segmentize(part, span / _DENSIFY_PARTS)
    return shapely.get_coordinates(part)


def _pixel_space(geometry_crs: CRSLike | None) -> str | None:
    if geometry_crs is None:
        return PIXEL
    if isinstance(geometry_crs, str) and geometry_crs in PIXEL_SPACES:
        return geometry_crs
    return None


def region_window(
    raster: Raster,
    geometry: Any,
    geometry_crs: CRSLike | None = LONLAT_CRS,
    *,
    point_size_m: float = DEFAULT_POINT_SIZE_M,
    point_size_px: float = DEFAULT_POINT_SIZE_PX,
) -> Window:
    """Whole-pixel window of ``raster`` covering ``geometry``, clipped to the raster."""
    geom = as_geometry(geometry)
    space = _pixel_space(geometry_crs)
    if space is not None:
        if space == LEAFLET_SIMPLE:
            geom = geometry_leaflet_simple_to_px(geom)
        cols, rows = _pixel_vertices(geom, point_size_px)
    else:
        if not raster.georeferenced:
            raise NotGeoreferencedError(
                f"raster {raster.name!r} is not georeferenced, so a region in "
                f"{geometry_crs!r:.60} cannot be placed on it; pass pixel coordinates with "
                f"geometry_crs='{PIXEL}' (or '{LEAFLET_SIMPLE}' for shapes drawn on the "
                "CRS.Simple map)."
            )
        cols, rows = _crs_vertices(raster, geom, parse_crs(geometry_crs), point_size_m)
    return _clipped_window(raster, cols, rows, geom, geometry_crs)


def point_square(
    x: float,
    y: float,
    geometry_crs: CRSLike | None = LONLAT_CRS,
    *,
    point_size_m: float = DEFAULT_POINT_SIZE_M,
    point_size_px: float = DEFAULT_POINT_SIZE_PX,
) -> Polygon:
    """The region a clicked point (x, y) stands for, in the point's own coordinates
    (``geometry_crs`` as for :func:`region_window`): a square of ``point_size_px`` pixels in a
    pixel space, else of ``point_size_m`` metres on the ground (densified; lon/lat for
    EPSG:4326). :func:`region_window` reads the same square for a point."""
    if _pixel_space(geometry_crs) is not None:
        return _pixel_square(x, y, point_size_px)
    crs = parse_crs(geometry_crs)
    if crs == parse_crs(LONLAT_CRS):
        if not (math.isfinite(point_size_m) and point_size_m > 0):
            raise GeometryError(f"point_size_m must be > 0 metres, got {point_size_m!r}")
        return ground_square_lonlat(float(x), float(y), point_size_m)
    xs, ys = _ground_square(Point(x, y), crs, crs, point_size_m)
    return Polygon(zip(xs, ys, strict=True))


def _pixel_square(x: float, y: float, size_px: float) -> Polygon:
    if not (math.isfinite(size_px) and size_px > 0):
        raise GeometryError(f"point_size_px must be > 0 pixels, got {size_px!r}")
    half = size_px / 2
    return box(x - half, y - half, x + half, y + half)


def _pixel_vertices(geom: BaseGeometry, point_size_px: float) -> tuple[np.ndarray, np.ndarray]:
    if not (math.isfinite(point_size_px) and point_size_px > 0):
        raise GeometryError(f"point_size_px must be > 0 pixels, got {point_size_px!r}")
    coords = [
        shapely.get_coordinates(_pixel_square(p.x, p.y, point_size_px))
        if isinstance(p, Point) else shapely.get_coordinates(p)
        for p in _parts(geom)
    ]
    xy = np.concatenate(coords)
    return xy[:, 0], xy[:, 1]


def _crs_vertices(
    raster: Raster, geom: BaseGeometry, geom_crs: ProjCRS, point_size_m: float
) -> tuple[np.ndarray, np.ndarray]:
    raster_crs = parse_crs(raster.crs)
    same_crs = geom_crs == raster_crs
    xs, ys = [], []
    for part in _parts(geom):
        if isinstance(part, Point):
            x_crs, y_crs = _ground_square(part, geom_crs, raster_crs, point_size_m)
        else:
            xy = _densified_coords(part)
            x_crs, y_crs = (xy[:, 0], xy[:, 1]) if same_crs else transform_xy(
                geom_crs, raster_crs, xy[:, 0], xy[:, 1])
        xs.append(x_crs)
        ys.append(y_crs)
    x_all, y_all = np.concatenate(xs), np.concatenate(ys)
    if raster_crs.is_geographic:  # keep longitudes on the raster's side of the antimeridian
        centre = (raster.bounds_crs[0] + raster.bounds_crs[2]) / 2
        x_all = x_all - 360.0 * np.round((np.mean(x_all) - centre) / 360.0)
    return ~raster.transform @ (x_all, y_all)


def _ground_square(
    point: Point, point_crs: ProjCRS, target_crs: ProjCRS, size_m: float
) -> tuple[np.ndarray, np.ndarray]:
    """A ground square of ``size_m`` metres around ``point``, vertices in ``target_crs``."""
    if not (math.isfinite(size_m) and size_m > 0):
        raise GeometryError(f"point_size_m must be > 0 metres, got {size_m!r}")
    lon, lat = transform_xy(point_crs, LONLAT_CRS, np.array([point.x]), np.array([point.y]))
    square = ground_square_lonlat(float(lon[0]), float(lat[0]), size_m)
    xy = shapely.get_coordinates(square)
    return transform_xy(LONLAT_CRS, target_crs, xy[:, 0], xy[:, 1])


def _clipped_window(
    raster: Raster, cols: np.ndarray, rows: np.ndarray, geom: BaseGeometry, geometry_crs: Any
) -> Window:
    c0, c1 = math.floor(cols.min() + _SNAP_PX), math.ceil(cols.max() - _SNAP_PX)
    r0, r1 = math.floor(rows.min() + _SNAP_PX), math.ceil(rows.max() - _SNAP_PX)
    c1, r1 = max(c1, c0 + 1), max(r1, r0 + 1)  # lines/edges still get one pixel
    cc0, cc1 = max(c0, 0), min(c1, raster.width)
    rr0, rr1 = max(r0, 0), min(r1, raster.height)
    if cc1 <= cc0 or rr1 <= rr0:
        raise RegionOutsideError(_outside_message(raster, geom, geometry_crs, (c0, r0, c1, r1)))
    return Window(cc0, rr0, cc1 - cc0, rr1 - rr0)


def _outside_message(raster: Raster, geom: BaseGeometry, geometry_crs: Any, px: tuple) -> str:
    if raster.bounds_lonlat is not None:
        west, south, east, north = raster.bounds_lonlat
        where = (f"which covers lon {west:.6f}..{east:.6f}, lat {south:.6f}..{north:.6f} "
                 "(EPSG:4326)")
    else:
        where = f"which covers pixels x 0..{raster.width}, y 0..{raster.height} (pixel space)"
    bounds = tuple(round(v, 6) for v in geom.bounds)
    short = isinstance(geometry_crs, str) and len(geometry_crs) < 40
    space = geometry_crs if short else "its CRS"
    return (
        f"the region (bounds {bounds} in {space}, "
        f"pixels x {px[0]}..{px[2]}, y {px[1]}..{px[3]}) does not overlap raster "
        f"{raster.name!r}, {where}. Zoom to the raster and draw the region over it."
    )
