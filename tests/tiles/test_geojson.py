"""GeoJSON out: RFC 7946 rules, atomic writes, pixel-space marking, GDAL can read it."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import shapely
from rasterio.windows import Window
from shapely.geometry import MultiPolygon, Polygon, box, shape

import tiles

HOLED = Polygon(
    [(10.0, 50.0), (10.0, 51.0), (11.0, 51.0), (11.0, 50.0)],  # clockwise exterior
    [[(10.2, 50.2), (10.8, 50.2), (10.8, 50.8), (10.2, 50.8)]],  # counter-clockwise hole
)


def _signed_area(ring) -> float:
    xs, ys = np.asarray(ring, dtype=float).T
    return 0.5 * float(np.sum(xs[:-1] * ys[1:] - xs[1:] * ys[:-1]))


def test_feature_follows_rfc7946():
    feature = tiles.to_feature(HOLED, {"label": "field", "score": 0.9, "nested": {"a": [1, 2]}})
    assert feature["type"] == "Feature" and "crs" not in feature
    exterior, hole = feature["geometry"]["coordinates"]
    assert _signed_area(exterior) > 0 and _signed_area(hole) < 0  # CCW outside, CW holes
    assert feature["properties"] == {"label": "field", "score": 0.9, "nested": {"a": [1, 2]}}


def test_coordinates_are_rounded_to_7_decimals():
    feature = tiles.to_feature(box(10.123456789, 50.987654321, 10.2, 51.0))
    values = np.asarray(feature["geometry"]["coordinates"][0]).ravel()
    assert np.array_equal(values, np.round(values, 7))
    assert 10.1234568 in values


def test_write_and_read_back(tmp_path):
    features = [tiles.to_feature(HOLED, {"label": "a"}),
                tiles.to_feature(MultiPolygon([box(0, 0, 1, 1), box(2, 2, 3, 3)]), {"label": "b"}),
                tiles.to_feature({"type": "Point", "coordinates": [5.0, 6.0]}, {"label": "c"})]
    path = tiles.write_geojson(tmp_path / "out" / "results.geojson",
                               tiles.to_feature_collection(features))
    data = json.loads(path.read_text())
    assert data == tiles.read_geojson(path)
    assert set(data) == {"type", "features"}  # no crs member
    assert [f["properties"]["label"] for f in data["features"]] == ["a", "b", "c"]
    assert shape(data["features"][0]["geometry"]).equals(HOLED)
    assert os.listdir(path.parent) == ["results.geojson"]  # no temp files left


def test_gdal_reads_our_geojson(tmp_path):
    pyogrio = pytest.importorskip("pyogrio")
    features = [tiles.to_feature(box(10, 50, 10.5, 50.5), {"label": "x", "score": 0.5}),
                tiles.to_feature(box(11, 50, 11.5, 50.5), {"label": "y", "score": 0.25})]
    path = tiles.write_geojson(tmp_path / "r.geojson", tiles.to_feature_collection(features))
    info = pyogrio.read_info(path)
    assert info["driver"] == "GeoJSON" and info["features"] == 2
    assert info["crs"] == "EPSG:4326" and info["geometry_type"] == "Polygon"
    assert list(info["fields"]) == ["label", "score"]
    _, _, geometry, fields = pyogrio.raw.read(path)
    assert [f.tolist() for f in fields] == [["x", "y"], [0.5, 0.25]]
    assert shapely.from_wkb(geometry[0]).equals(box(10, 50, 10.5, 50.5))


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "results.geojson"
    tiles.write_geojson(path, tiles.to_feature_collection([tiles.to_feature(box(0, 0, 1, 1))]))
    before = path.read_text()
    bad = {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": None,
                                                      "properties": {"x": float("nan")}}]}
    with pytest.raises(tiles.GeoJSONWriteError):
        tiles.write_geojson(path, bad)
    assert path.read_text() == before and os.listdir(tmp_path) == ["results.geojson"]


def test_write_into_missing_unwritable_place(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(tiles.GeoJSONWriteError, match="cannot write GeoJSON") as info:
        tiles.write_geojson(blocker / "sub" / "r.geojson", tiles.to_feature_collection([]))
    assert isinstance(info.value, OSError)


def test_crs_member_is_refused(tmp_path):
    fc = tiles.to_feature_collection([])
    fc["crs"] = {"type": "name", "properties": {"name": "EPSG:3857"}}
    with pytest.raises(tiles.GeoJSONWriteError, match="crs"):
        tiles.write_geojson(tmp_path / "x.geojson", fc)


def test_unserialisable_property():
    with pytest.raises(tiles.GeoJSONWriteError, match="'when'"):
        tiles.to_feature(box(0, 0, 1, 1), {"when": object()})


def test_pixel_results_are_marked_and_kept_apart(rasters, tmp_path):
    raster = tiles.open_raster(rasters["plain_png"])
    crop = tiles.read_crop(raster, Window(0, 0, 300, 200))
    polygon = tiles.boxes_to_raster_px(crop, [(10, 10, 50, 30)])[0]
    feature = tiles.to_feature(polygon, {"label": "plane"}, coordinate_space="pixel",
                               image=crop.image_name)
    assert feature["properties"] == {"label": "plane", "coordinate_space": "pixel",
                                     "image": "plain.png"}
    lonlat = tiles.to_feature(box(0, 0, 1, 1))
    with pytest.raises(tiles.GeometryError, match="cannot mix"):
        tiles.to_feature_collection([feature, lonlat])
    with pytest.raises(tiles.GeometryError, match="image="):
        tiles.to_feature(polygon, coordinate_space="pixel")
    with pytest.raises(tiles.GeometryError, match="not lon/lat"):
        tiles.to_feature(box(0, 0, 500, 400))  # pixel-sized numbers passed off as lon/lat


def test_antimeridian_polygon_is_split(rasters):
    raster = tiles.open_raster(rasters["antimeridian_rgb"])
    crop = tiles.read_crop(raster, Window(0, 0, 300, 200))
    polygon = tiles.boxes_to_lonlat(crop, [(10, 10, 290, 190)])[0]
    geometry = tiles.to_feature(polygon)["geometry"]
    assert geometry["type"] == "MultiPolygon"
    parts = [Polygon(p[0]) for p in geometry["coordinates"]]
    assert all(-180 <= b <= 180 for p in parts for b in p.bounds[::2])
    assert sum(p.area for p in parts) == pytest.approx(polygon.area, rel=1e-6)


def test_read_errors(tmp_path):
    with pytest.raises(tiles.GeoJSONReadError, match="check the path"):
        tiles.read_geojson(tmp_path / "missing.geojson")
    (tmp_path / "bad.geojson").write_text("{not json")
    with pytest.raises(tiles.GeoJSONReadError, match="not valid JSON"):
        tiles.read_geojson(tmp_path / "bad.geojson")
    (tmp_path / "point.geojson").write_text('{"type": "Point", "coordinates": [0, 0]}')
    with pytest.raises(tiles.GeoJSONReadError, match="not a GeoJSON FeatureCollection"):
        tiles.read_geojson(tmp_path / "point.geojson")
