"""Export stored results as GeoJSON files for QGIS, ArcGIS or geopandas.

Georeferenced results go to an RFC 7946 file: lon/lat (EPSG:4326, lon first), no ``crs``
member, exterior rings counter-clockwise and holes clockwise, 7 decimals, polygons split at the
antimeridian (all done by :func:`tiles.to_feature`). Results on plain images have no map
position: they go to a separate ``*_pixel.geojson`` in raster pixels (x right, y down) where the
collection and every Feature say ``"coordinate_space": "pixel"`` (and ``image``), so nobody
mistakes them for degrees. Features name their raster by file name only (``raster``): the
server path stays in the workspace's results store. Files are written atomically by
:func:`tiles.write_geojson`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tiles import to_feature, to_feature_collection, write_geojson

__all__ = ["export_feature_collection", "export_results"]


def _exported_feature(feature: Mapping[str, Any]) -> dict[str, Any]:
    props = dict(feature["properties"])
    space = props.get("coordinate_space", "lonlat")
    props["raster"] = Path(str(props.get("raster", ""))).name
    image = props["raster"] if space == "pixel" else None
    out = to_feature(feature["geometry"], props, coordinate_space=space, image=image)
    if "id" in feature:
        out = {"type": "Feature", "id": feature["id"], "geometry": out["geometry"],
               "properties": out["properties"]}
    return out


def export_feature_collection(
    features: Iterable[Mapping[str, Any]], coordinate_space: str = "lonlat"
) -> dict[str, Any]:
    """A FeatureCollection of the stored Features that are in ``coordinate_space``."""
    chosen = [
        _exported_feature(f) for f in features
        if f["properties"].get("coordinate_space", "lonlat") == coordinate_space
    ]
    collection = to_feature_collection(chosen)
    if coordinate_space == "pixel":
        collection["coordinate_space"] = "pixel"
    return collection


def export_results(
    features: list[dict[str, Any]], out_dir: str | os.PathLike[str], stem: str | None = None
) -> tuple[Path, ...]:
    """Write ``<stem>.geojson`` (RFC 7946) and, when there are pixel results,
    ``<stem>_pixel.geojson``; returns the written paths (none for no features)."""
    out_dir = Path(out_dir)
    stem = stem or "geolens_results_" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    written = []
    for space, suffix in (("lonlat", ""), ("pixel", "_pixel")):
        collection = export_feature_collection(features, space)
        if collection["features"]:
            written.append(write_geojson(out_dir / f"{stem}{suffix}.geojson", collection))
    return tuple(written)
