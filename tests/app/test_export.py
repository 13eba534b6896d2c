"""GeoJSON export: RFC 7946 (lon/lat order, CCW exterior rings, no crs, 7 decimals), read back
by us and by GDAL's vector driver (pyogrio); pixel results go to a separate, marked file."""

from __future__ import annotations

import json

import pyogrio
import pytest
from shapely.geometry import shape

from app.export import export_feature_collection, export_results
from app.results import RESULTS_FILENAME, ResultBox, ResultRecord, ResultsStore

# Clockwise on purpose (as a user might draw it): export must turn the exterior CCW.
CW_RING = [[15.0, 45.0], [15.0, 45.01], [15.0123456789, 45.01], [15.0123456789, 45.0], [15.0, 45.0]]
WINDOW = {"col_off": 0, "row_off": 0, "width": 10, "height": 10}


def _records():
    geo = ResultRecord(task="ground", question="tanks?", answer="two tanks", model="tiny",
                       raster="/d/scene.tif", window=WINDOW, crs="EPSG:32633",
                       region={"type": "Polygon", "coordinates": [CW_RING]},
                       boxes=(ResultBox({"type": "Polygon", "coordinates": [CW_RING]}, "tank", 0.9),))
    pix = ResultRecord(task="caption", question=None, answer="a field", model="tiny", raster="/d/photo.png",
                       window=WINDOW, coordinate_space="pixel",
                       region={"type": "Polygon", "coordinates": [[[0, 0], [0, 50], [80, 50], [80, 0], [0, 0]]]})
    return geo, pix


def _is_ccw(ring) -> bool:
    area2 = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:]))
    return area2 > 0


def test_lonlat_export_is_rfc7946_and_gdal_reads_it(tmp_path):
    store = ResultsStore(tmp_path / RESULTS_FILENAME)
    geo, pix = _records()
    store.append(geo)
    store.append(pix)
    paths = export_results(store.features(), tmp_path / "out", stem="results")
    assert [p.name for p in paths] == ["results.geojson", "results_pixel.geojson"]
    data = json.loads(paths[0].read_text())
    assert "crs" not in data and data["type"] == "FeatureCollection" and len(data["features"]) == 2
    for feature in data["features"]:
        ring = feature["geometry"]["coordinates"][0]
        assert _is_ccw(ring), ring
        lon, lat = ring[0]
        assert 14.9 < lon < 15.1 and 44.9 < lat < 45.1  # lon first
        assert all(len(str(c).split(".")[-1]) <= 7 for pt in ring for c in pt)
        assert shape(feature["geometry"]).equals_exact(shape({"type": "Polygon", "coordinates": [CW_RING[::-1]]}), 1e-7)
    region, box = data["features"]
    assert region["properties"]["kind"] == "region" and region["properties"]["answer"] == "two tanks"
    assert box["properties"]["label"] == "tank" and box["properties"]["score"] == 0.9
    assert region["properties"]["window"] == WINDOW
    assert region["id"].endswith("-r")

    info = pyogrio.read_info(paths[0])
    assert info["features"] == 2 and info["geometry_type"] == "Polygon"
    assert "4326" in str(info["crs"])
    frame = pyogrio.read_dataframe(paths[0])
    assert list(frame["task"]) == ["ground", "ground"] and list(frame["label"])[1] == "tank"
    assert frame.geometry.iloc[0].bounds == pytest.approx((15.0, 45.0, 15.0123457, 45.01), abs=1e-7)


def test_pixel_results_are_marked(tmp_path):
    _, pix = _records()
    collection = export_feature_collection(pix.to_features(), "pixel")
    assert collection["coordinate_space"] == "pixel"
    props = collection["features"][0]["properties"]
    assert props["coordinate_space"] == "pixel" and props["image"] == "photo.png"
    assert export_feature_collection(pix.to_features(), "lonlat")["features"] == []
    paths = export_results(pix.to_features(), tmp_path, stem="p")
    assert [p.name for p in paths] == ["p_pixel.geojson"]
    assert export_results([], tmp_path, stem="none") == ()


def _scan_record(n_boxes: int = 3, stopped: bool = False) -> ResultRecord:
    """A whole-scene search result as app.scene_search stores it: region + scored boxes with tiles."""
    boxes = tuple(
        ResultBox({"type": "Polygon", "coordinates": [[[15.0 + i * 0.001, 45.0], [15.0005 + i * 0.001, 45.0],
                                                      [15.0005 + i * 0.001, 45.0005], [15.0 + i * 0.001, 45.0005],
                                                      [15.0 + i * 0.001, 45.0]]]},
                  "storage tank", 0.5 + i / 10, tiles=f"{i},{i + 1}")
        for i in range(n_boxes))
    scan = {"query": "storage tank", "count": n_boxes, "tiles_done": 7 if stopped else 12, "tiles_total": 12,
            "skipped": 0, "stopped": stopped, "tile_px": 128, "decimation": 1.0}
    return ResultRecord(task="ground", question="storage tank", answer=f"{n_boxes} storage tanks found in 12 tiles",
                        model="demo", raster="/d/scene.tif", window=WINDOW, crs="EPSG:32633",
                        region={"type": "Polygon", "coordinates": [CW_RING]}, boxes=boxes, scan=scan)


def test_geopackage_has_one_layer_per_task_and_query_in_lonlat(tmp_path):
    import geopandas as gpd

    from app.export import export_geopackage

    store = ResultsStore(tmp_path / RESULTS_FILENAME)
    geo, pix = _records()
    scan = _scan_record(3)
    for record in (geo, pix, scan):
        store.append(record)
    path = export_geopackage(store.features(), tmp_path / "out", stem="results")
    assert path == tmp_path / "out" / "results.gpkg" and not list((tmp_path / "out").glob(".*tmp*"))
    layers = dict(pyogrio.list_layers(path))
    assert set(layers) == {"ground: tanks?", "ground: storage tank", "caption (pixel)"}

    tanks = gpd.read_file(path, layer="ground: storage tank")
    assert tanks.crs.to_epsg() == 4326
    assert list(tanks["kind"]) == ["region", "box", "box", "box"]  # one answer, one unit
    assert set(tanks["result_id"]) == {scan.result_id}
    region, boxes = tanks.iloc[0], tanks.iloc[1:]
    assert region["count"] == 3 and region["tiles_done"] == 12 and region["tiles_total"] == 12
    assert list(boxes["score"]) == pytest.approx([0.5, 0.6, 0.7])
    assert list(boxes["tiles"]) == ["0,1", "1,2", "2,3"]
    assert (boxes["label"] == "storage tank").all() and (tanks["raster"] == "scene.tif").all()
    for got, want in zip(boxes.geometry, scan.boxes, strict=True):  # lon/lat, as stored
        assert got.equals_exact(shape(want.geometry), 1e-7) or got.geoms[0].equals_exact(shape(want.geometry), 1e-7)

    pixel = gpd.read_file(path, layer="caption (pixel)")
    assert pixel.crs is None and list(pixel["coordinate_space"]) == ["pixel"]
    assert pixel.geometry.iloc[0].bounds == (0.0, 0.0, 80.0, 50.0)


def test_geopackage_export_from_the_handler(services, tmp_path):
    import geopandas as gpd

    from app import handlers
    from app.errors import UserInputError

    stopped = _scan_record(2, stopped=True)
    services.store.append(stopped)
    (path,) = handlers.export_results(services, [stopped.result_id], fmt="geopackage")
    assert path.suffix == ".gpkg" and path.parent == services.exports_dir
    frame = gpd.read_file(path, layer="ground: storage tank")
    assert len(frame) == 3 and bool(frame.iloc[0]["stopped"]) is True and frame.iloc[0]["tiles_done"] == 7
    with pytest.raises(UserInputError, match="unknown export format"):
        handlers.export_results(services, None, fmt="shapefile")
