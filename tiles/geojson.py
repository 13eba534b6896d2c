"""GeoJSON out (and back in), RFC 7946.

Features are written with lon/lat order, counter-clockwise exterior rings and clockwise holes,
coordinates rounded to 7 decimals (~1 cm), and no ``crs`` member. Polygons whose unwrapped
longitudes pass ±180° are split at the antimeridian into a MultiPolygon (RFC 7946 §3.1.9).

Results from non-georeferenced images are *not* lon/lat: :func:`to_feature` with
``coordinate_space="pixel"`` keeps raster pixel coordinates (x = column, y = row, y down) and
marks them with the properties ``coordinate_space: "pixel"`` and ``image: <file name>``; a
FeatureCollection never mixes the two spaces. Files are written atomically
(:func:`tiles.atomic.write_text_atomic`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import shapely
import shapely.affinity
from shapely.geometry import MultiPolygon, Polygon, box, mapping
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient

from tiles.atomic import write_text_atomic
from tiles.errors import GeoJSONReadError, GeoJSONWriteError, GeometryError
from tiles.geometry import LONLAT
from tiles.pixelspace import PIXEL
from tiles.region import as_geometry
from tiles.types import GeoJSONDict, PathLikeStr

__all__ = [
    "COORDINATE_DECIMALS",
    "COORDINATE_SPACE_KEY",
    "read_geojson",
    "to_feature",
    "to_feature_collection",
    "write_geojson",
]

COORDINATE_DECIMALS = 7
COORDINATE_SPACE_KEY = "coordinate_space"
_SPACES = (LONLAT, PIXEL)


def _split_antimeridian(geom: BaseGeometry) -> BaseGeometry:
    """Polygons with longitudes beyond ±180 cut at the antimeridian and shifted into range."""
    minx, _, maxx, _ = geom.bounds
    if minx >= -180.0 and maxx <= 180.0:
        return geom
    pieces = []
    for shift in (-360.0, 0.0, 360.0):
        window = box(-180.0 - shift, -90.0, 180.0 - shift, 90.0)
        piece = geom.intersection(window)
        if not piece.is_empty:
            pieces.extend(shapely.get_parts(shapely.affinity.translate(piece, xoff=shift)))
    polygons = [p for p in pieces if isinstance(p, Polygon) and not p.is_empty]
    return polygons[0] if len(polygons) == 1 else MultiPolygon(polygons)


def _oriented(geom: BaseGeometry) -> BaseGeometry:
    """Exterior rings counter-clockwise, holes clockwise (RFC 7946 §3.1.6)."""
    if isinstance(geom, Polygon):
        return orient(geom, sign=1.0)
    if isinstance(geom, MultiPolygon):
        return MultiPolygon([orient(p, sign=1.0) for p in geom.geoms])
    if geom.geom_type == "GeometryCollection":
        return shapely.GeometryCollection([_oriented(g) for g in geom.geoms])
    return geom


def _rounded(coords: Any) -> Any:
    if isinstance(coords, (list, tuple)) and coords and isinstance(coords[0], (int, float)):
        return [round(float(c), COORDINATE_DECIMALS) for c in coords]
    if isinstance(coords, (list, tuple)):
        return [_rounded(c) for c in coords]
    return coords


def _geometry_dict(geom: BaseGeometry) -> GeoJSONDict:
    data = mapping(geom)
    if data["type"] == "GeometryCollection":
        return {"type": "GeometryCollection",
                "geometries": [_geometry_dict(g) for g in geom.geoms]}
    return {"type": data["type"], "coordinates": _rounded(data["coordinates"])}


def _check_lonlat(geom: BaseGeometry) -> None:
    minx, miny, maxx, maxy = geom.bounds
    if not (-540.0 <= minx and maxx <= 540.0 and -90.0 <= miny and maxy <= 90.0):
        raise GeometryError(
            f"geometry bounds {tuple(round(v, 3) for v in geom.bounds)} are not lon/lat degrees "
            "(lat must be within ±90); pass coordinate_space='pixel' for pixel coordinates or "
            "reproject the geometry to EPSG:4326."
        )


def to_feature(
    geometry: Any,
    properties: dict[str, Any] | None = None,
    *,
    coordinate_space: str = "lonlat",
    image: str | None = None,
) -> GeoJSONDict:
    """An RFC 7946 Feature from a shapely geometry or GeoJSON geometry dict.

    ``coordinate_space="pixel"`` (needs ``image``, the image's file name) writes pixel
    coordinates and adds the marker properties ``coordinate_space`` and ``image``.
    """
    if coordinate_space not in _SPACES:
        raise GeometryError(f"coordinate_space must be one of {_SPACES}, got {coordinate_space!r}")
    geom = as_geometry(geometry)
    props = dict(properties or {})
    if coordinate_space == "pixel":
        if not image:
            raise GeometryError("pixel-space features need image=<image file name>")
        props.update({COORDINATE_SPACE_KEY: "pixel", "image": str(image)})
    else:
        if props.get(COORDINATE_SPACE_KEY) == "pixel":
            raise GeometryError(
                "properties say coordinate_space='pixel' but the feature is built as lon/lat; "
                "pass coordinate_space='pixel' and image=..."
            )
        _check_lonlat(geom)
        geom = _split_antimeridian(geom)
    _check_serialisable(props)
    return {"type": "Feature", "geometry": _geometry_dict(_oriented(geom)), "properties": props}


def _check_serialisable(props: dict[str, Any]) -> None:
    for key, value in props.items():
        if not isinstance(key, str):
            raise GeoJSONWriteError(f"property names must be strings, got {key!r}")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise GeoJSONWriteError(
                f"property {key!r} = {value!r:.100} is not JSON-serialisable ({exc}); convert "
                "it to str/int/float/bool/list/dict (NaN/inf are not allowed)."
            ) from exc


def _space_of(feature: GeoJSONDict) -> str:
    return "pixel" if (feature.get("properties") or {}).get(COORDINATE_SPACE_KEY) == "pixel" \
        else "lonlat"


def to_feature_collection(features: Any) -> GeoJSONDict:
    """A FeatureCollection of Features (from :func:`to_feature`), all in one coordinate space."""
    features = list(features)
    for i, feature in enumerate(features):
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            raise GeometryError(f"item {i} is not a GeoJSON Feature dict: {feature!r:.200}")
    spaces = {_space_of(f) for f in features}
    if len(spaces) > 1:
        raise GeometryError(
            "cannot mix lon/lat features and pixel-space features in one FeatureCollection; "
            "write results of non-georeferenced images to a separate file."
        )
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: PathLikeStr, feature_collection: GeoJSONDict) -> Path:
    """Write ``feature_collection`` atomically (temp file, fsync, rename); returns the path."""
    path = Path(path)
    if feature_collection.get("type") != "FeatureCollection" or "crs" in feature_collection:
        raise GeoJSONWriteError(
            f"write_geojson needs a FeatureCollection without a 'crs' member (RFC 7946); build "
            f"it with tiles.to_feature_collection. Got keys {sorted(feature_collection)}"
        )
    try:
        text = json.dumps(feature_collection, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise GeoJSONWriteError(f"cannot serialise GeoJSON for {str(path)!r}: {exc}") from exc
    try:
        write_text_atomic(path, text)
    except OSError as exc:
        raise GeoJSONWriteError(
            f"cannot write GeoJSON to {str(path)!r}: {exc.strerror or exc}. Check that the "
            "directory exists and is writable and the disk is not full."
        ) from exc
    return path


def read_geojson(path: PathLikeStr) -> GeoJSONDict:
    """Read a GeoJSON FeatureCollection written by :func:`write_geojson` (or any RFC 7946
    FeatureCollection); GeoJSONReadError says what is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise GeoJSONReadError(
            f"cannot read GeoJSON {str(path)!r}: {exc.strerror or exc}; check the path."
        ) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GeoJSONReadError(
            f"{str(path)!r} is not valid JSON ({exc}); it may be truncated or not GeoJSON."
        ) from exc
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection" \
            or not isinstance(data.get("features"), list):
        raise GeoJSONReadError(
            f"{str(path)!r} is not a GeoJSON FeatureCollection (top-level type "
            f"{data.get('type') if isinstance(data, dict) else type(data).__name__!r})."
        )
    return data
