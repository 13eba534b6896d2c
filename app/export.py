"""Export stored results as GeoJSON files or a GeoPackage for QGIS, ArcGIS or geopandas.

Georeferenced results go to an RFC 7946 file: lon/lat (EPSG:4326, lon first), no ``crs``
member, exterior rings counter-clockwise and holes clockwise, 7 decimals, polygons split at the
antimeridian (all done by :func:`tiles.to_feature`). Results on plain images have no map
position: they go to a separate ``*_pixel.geojson`` in raster pixels (x right, y down) where the
collection and every Feature say ``"coordinate_space": "pixel"`` (and ``image``), so nobody
mistakes them for degrees. Features name their raster by file name only (``raster``): the
server path stays in the workspace's results store. Files are written atomically by
:func:`tiles.write_geojson`.

The GeoPackage (:func:`export_geopackage`) holds the same Features, one layer per task and query:
``ground: storage tank`` (every "Find objects" answer and whole-scene search for that phrase),
``ask: storage tank`` (counting questions searched tile by tile), and one layer per other task
(``ask``, ``caption``, ``classify``, ``region``). Lon/lat layers are EPSG:4326; results on plain
images go to ``<layer> (pixel)`` layers without a CRS (as ``python -m app.scan`` writes them).
Each row is a region or a box (``kind``) with its answer's ``result_id``, so one answer's
region and boxes stay one unit (filter or join on ``result_id``); boxes of a whole-scene search
carry ``score`` and ``tiles``, their region ``count`` and ``tiles_done``/``tiles_total``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tiles import to_feature, to_feature_collection, write_geojson

__all__ = ["EXPORT_FORMATS", "GPKG_COLUMNS", "export_feature_collection", "export_geopackage",
           "export_results", "geopackage_layer"]

EXPORT_FORMATS = ("geojson", "geopackage")
# Columns of every GeoPackage layer (one row per region or box Feature).
GPKG_COLUMNS = ("result_id", "kind", "task", "question", "answer", "label", "score", "tiles", "count",
                "tiles_done", "tiles_total", "prefiltered", "stopped", "model", "adapter", "raster", "crs",
                "created_at", "whole_raster")


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

_GPKG_TYPES = {"score": "Float64", "count": "Int64", "tiles_done": "Int64", "tiles_total": "Int64",
               "prefiltered": "Int64", "stopped": "boolean", "whole_raster": "boolean"}


def geopackage_layer(properties: Mapping[str, Any]) -> str:
    """The layer of a stored Feature: ``<task>: <query>`` for tasks that look for something
    (ground, and whole-scene searches), else ``<task>``; ``(pixel)`` appended for results on
    plain images (:func:`app.scanning.layer_name`). At most 80 characters."""
    from app.scanning import layer_name

    task = str(properties.get("task") or "result")
    scan = properties.get("scan") if isinstance(properties.get("scan"), Mapping) else None
    query = scan.get("query") if scan else (properties.get("question") if task == "ground" else None)
    name = f"{task}: {' '.join(str(query).split())}" if query else task
    name = name if len(name) <= 80 else name[:79] + "…"
    return layer_name(name, str(properties.get("coordinate_space", "lonlat")))


def _gpkg_row(feature: Mapping[str, Any], scans: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    from shapely.geometry import shape

    props = feature["properties"]
    scan = scans.get(props.get("result_id"), {})
    row = {c: props.get(c) for c in GPKG_COLUMNS}
    row["raster"] = Path(str(props.get("raster", ""))).name
    if props.get("kind") != "box":  # the answer's totals go on its region row
        row.update(count=scan.get("count"), tiles_done=scan.get("tiles_done"),
                   tiles_total=scan.get("tiles_total"), prefiltered=scan.get("prefiltered"),
                   stopped=scan.get("stopped"))
    row["geometry"] = shape(feature["geometry"])
    return row


def export_geopackage(
    features: list[dict[str, Any]], out_dir: str | os.PathLike[str], stem: str | None = None
) -> Path | None:
    """Write ``<stem>.gpkg`` (one layer per task/query, see the module) from stored Features;
    returns its path, None when there are no features. Written to a temporary file and renamed."""
    import warnings

    import geopandas as gpd
    import pyogrio

    from tiles import LONLAT_CRS

    if not features:
        return None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = stem or "geolens_results_" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    scans = {f["properties"]["result_id"]: f["properties"]["scan"] for f in features
             if isinstance(f["properties"].get("scan"), Mapping)}
    layers: dict[str, tuple[str, list[dict[str, Any]]]] = {}
    for feature in features:
        props = feature["properties"]
        space = props.get("coordinate_space", "lonlat")
        layers.setdefault(geopackage_layer(props), (space, []))[1].append(_gpkg_row(feature, scans))
    out = out_dir / f"{stem}.gpkg"
    tmp = out_dir / f".{stem}.tmp.gpkg"
    tmp.unlink(missing_ok=True)
    try:
        for name, (space, rows) in layers.items():
            frame = gpd.GeoDataFrame(rows, columns=[*GPKG_COLUMNS, "geometry"], geometry="geometry",
                                     crs=LONLAT_CRS if space == "lonlat" else None)
            frame = frame.astype(_GPKG_TYPES)  # None stays null (not the text "None")
            if space == "pixel":
                frame.insert(len(GPKG_COLUMNS), "coordinate_space", "pixel")
            polygonal = bool(frame.geom_type.isin(["Polygon", "MultiPolygon"]).all())
            with warnings.catch_warnings():  # pixel layers have no CRS on purpose
                warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)
                pyogrio.write_dataframe(frame, tmp, layer=name, driver="GPKG", append=tmp.exists(),
                                        promote_to_multi=polygonal or None)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
