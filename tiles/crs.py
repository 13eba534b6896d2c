"""CRS helpers: parse user CRSs, cached transformers, lon/lat bounds, ground squares in metres.

Everything that turns coordinates from one CRS into another goes through :func:`transformer`
(pyproj, ``always_xy=True``: x/easting/longitude first). Transformers are cached per CRS pair;
pyproj gives each thread its own PROJ context, so a cached transformer is safe to share.

Longitudes that come out of these helpers are *unwrapped*: along a ring or a raster edge they
stay continuous, so a footprint crossing the antimeridian reads 179.5 .. 180.5, never
179.5 .. -179.5 (which would wrap the globe).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from pyproj import CRS as ProjCRS
from pyproj import Transformer
from pyproj.exceptions import CRSError, ProjError
from shapely.geometry import Polygon

from tiles.errors import UnsupportedCRSError
from tiles.types import BoundsLonLat, CRSLike

__all__ = [
    "LONLAT_CRS",
    "crs_label",
    "ground_square_lonlat",
    "lonlat_bounds_of_points",
    "lonlat_bounds_of_ring",
    "parse_crs",
    "transform_xy",
    "transformer",
    "unwrap_lon",
]

LONLAT_CRS = "EPSG:4326"
_LONLAT = ProjCRS.from_epsg(4326)


def parse_crs(crs: CRSLike) -> ProjCRS:
    """A pyproj CRS from anything ``CRS.from_user_input`` takes; raises UnsupportedCRSError."""
    if isinstance(crs, ProjCRS):
        return crs
    try:
        text = crs.to_wkt() if hasattr(crs, "to_wkt") and not isinstance(crs, str) else crs
        return ProjCRS.from_user_input(text)
    except (CRSError, TypeError, ValueError) as exc:
        raise UnsupportedCRSError(
            f"cannot parse CRS {crs!r}: {exc}. Give an authority code such as 'EPSG:4326' "
            "or 'EPSG:32618', or a WKT string."
        ) from exc


def crs_label(crs: CRSLike) -> str:
    """Short human label: 'EPSG:32618' when an authority code matches exactly, else the name."""
    parsed = parse_crs(crs)
    authority = parsed.to_authority(min_confidence=100)
    return f"{authority[0]}:{authority[1]}" if authority else parsed.name


@functools.lru_cache(maxsize=128)
def _cached_transformer(src_wkt: str, dst_wkt: str) -> Transformer:
    return Transformer.from_crs(ProjCRS(src_wkt), ProjCRS(dst_wkt), always_xy=True)


def transformer(src_crs: CRSLike, dst_crs: CRSLike) -> Transformer:
    """A cached ``always_xy`` transformer; raises UnsupportedCRSError when PROJ has no path."""
    src, dst = parse_crs(src_crs), parse_crs(dst_crs)
    try:
        return _cached_transformer(src.to_wkt(), dst.to_wkt())
    except ProjError as exc:
        raise UnsupportedCRSError(
            f"no coordinate operation from {crs_label(src)!r} to {crs_label(dst)!r}: {exc}. "
            "Reproject the raster to a terrestrial CRS first, e.g. "
            "`gdalwarp -t_srs EPSG:4326 in.tif out.tif`."
        ) from exc


def transform_xy(
    src_crs: CRSLike,
    dst_crs: CRSLike,
    x: np.ndarray,
    y: np.ndarray,
    *,
    strict: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Transform coordinate arrays (float64, shapes kept).

    ``strict``: any point PROJ cannot transform raises UnsupportedCRSError; otherwise such points
    come back as ``inf``/``nan`` for the caller to drop.
    """
    tr = transformer(src_crs, dst_crs)
    x = np.asarray(x, dtype="float64")
    y = np.asarray(y, dtype="float64")
    try:
        out_x, out_y = tr.transform(x, y, errcheck=strict)
    except ProjError as exc:
        raise UnsupportedCRSError(
            f"coordinates cannot be transformed from {crs_label(src_crs)!r} to "
            f"{crs_label(dst_crs)!r}: {exc}. Check that the geometry lies inside the CRS's "
            "area of use and that its CRS is the one you meant."
        ) from exc
    out_x = np.asarray(out_x, dtype="float64").reshape(x.shape)
    out_y = np.asarray(out_y, dtype="float64").reshape(y.shape)
    if strict and not (np.isfinite(out_x).all() and np.isfinite(out_y).all()):
        raise UnsupportedCRSError(
            f"transforming from {crs_label(src_crs)!r} to {crs_label(dst_crs)!r} gave non-finite "
            "coordinates; the geometry lies outside the CRS's valid area."
        )
    return out_x, out_y


def unwrap_lon(lon: np.ndarray) -> np.ndarray:
    """Longitudes along a path made continuous (no 360° jumps); first value kept in [-180, 180)."""
    lon = np.asarray(lon, dtype="float64")
    if lon.size == 0:
        return lon
    unwrapped = np.unwrap(lon, period=360.0)
    shift = 360.0 * math.floor((unwrapped[0] + 180.0) / 360.0)
    return unwrapped - shift


def lonlat_bounds_of_ring(lon: np.ndarray, lat: np.ndarray) -> BoundsLonLat:
    """(west, south, east, north) of a closed, densified ring given in lon/lat.

    Antimeridian-safe: longitudes are unwrapped along the ring, so a footprint crossing 180°
    gets east > 180. A ring that winds around a pole (its unwrapped longitudes drift by 360°)
    covers every longitude and reaches that pole.
    """
    unwrapped = unwrap_lon(np.append(lon, lon[:1]))
    lat = np.asarray(lat, dtype="float64")
    if abs(unwrapped[-1] - unwrapped[0]) > 180.0:  # winds around a pole
        pole_north = float(np.mean(lat)) > 0
        south = float(lat.min()) if pole_north else -90.0
        north = 90.0 if pole_north else float(lat.max())
        return (-180.0, south, 180.0, north)
    west, east = float(unwrapped.min()), float(unwrapped.max())
    shift = 360.0 * math.floor((west + 180.0) / 360.0)
    return (west - shift, float(lat.min()), east - shift, float(lat.max()))


def lonlat_bounds_of_points(
    lon: np.ndarray, lat: np.ndarray, *, poles: Sequence[float] = ()
) -> BoundsLonLat:
    """(west, south, east, north) of scattered lon/lat points (a footprint's interior samples,
    not a ring): the shortest span of longitudes holding them all, so a footprint across the
    antimeridian gets east > 180. ``poles`` (+90 and/or -90) lie inside the footprint: its
    longitudes then cover the globe and its latitudes reach that pole.
    """
    lon = (np.asarray(lon, dtype="float64") + 180.0) % 360.0 - 180.0
    lat = np.asarray(lat, dtype="float64")
    south = -90.0 if -90.0 in poles else float(lat.min())
    north = 90.0 if 90.0 in poles else float(lat.max())
    if poles:
        return (-180.0, south, 180.0, north)
    ordered = np.sort(lon)
    gaps = np.diff(np.append(ordered, ordered[0] + 360.0))  # gap after each longitude
    largest = int(np.argmax(gaps))
    west = float(ordered[(largest + 1) % ordered.size])
    east = float(ordered[largest])
    if east < west:
        east += 360.0
    return (west, south, east, north)


def ground_square_lonlat(lon: float, lat: float, size_m: float) -> Polygon:
    """A square of ``size_m`` metres on the ground centred on (lon, lat), as a lon/lat polygon.

    Built in an azimuthal equidistant projection centred on the point (true ground metres in
    every direction from the centre), densified to 16 points per edge, then unprojected.
    """
    if not (math.isfinite(size_m) and size_m > 0):
        raise ValueError(f"point size must be a positive number of metres, got {size_m!r}")
    local = ProjCRS.from_proj4(
        f"+proj=aeqd +lat_0={lat:.10f} +lon_0={lon:.10f} +datum=WGS84 +units=m +no_defs"
    )
    half = size_m / 2.0
    t = np.linspace(-half, half, 17)[:-1]
    xs = np.concatenate([t, np.full(16, half), -t, np.full(16, -half)])
    ys = np.concatenate([np.full(16, -half), t, np.full(16, half), -t])
    lon_ring, lat_ring = transform_xy(local, _LONLAT, xs, ys)
    dlon = (lon_ring - lon + 180.0) % 360.0 - 180.0  # continuous around the given longitude
    return Polygon(zip(lon + dlon, lat_ring, strict=False))
