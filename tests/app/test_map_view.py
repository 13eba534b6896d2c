"""The map component's contract: local assets only, raster layers, drawn regions, values."""

from __future__ import annotations

import json
import re
from dataclasses import asdict

import pytest

from app.errors import UserInputError
from app.map_view import (
    DrawnRegion,
    basemap_catalog,
    build_map,
    drawn_region,
    map_head,
    map_js,
    map_raster,
    map_value,
)


def test_head_loads_only_local_versioned_assets():
    head = map_head()
    urls = re.findall(r'(?:href|src)="([^"]+)"', head)
    assert len(urls) == 8  # Leaflet, Leaflet.draw, leaflet-side-by-side (2 CSS + loader), map.css
    assert all(u.startswith("/assets/") and "?v=" in u for u in urls)
    assert head.index("leaflet/leaflet.js") < head.index("leaflet.draw.js")  # Leaflet first
    assert head.index("leaflet/leaflet.js") < head.index("leaflet-side-by-side.js")


def test_map_js_uses_the_gradio_html_contract():
    js = map_js()
    for needle in ("props.value", "watch(\"value\"", "L.Control.Draw", "L.CRS.Simple", "toGeoJSON(false)"):
        assert needle in js
    assert "http://" not in js and "https://" not in js


def test_build_map_is_a_gradio_html_with_head_and_js():
    component = build_map({"rasters": []})
    assert component.head == map_head() and component.js_on_load == map_js()
    assert "gl-map" in component.html_template and "${" not in component.html_template


def test_map_raster_for_geotiff_and_plain_image(services):
    by_kind = {r.georeferenced: r for r in services.catalog_list()}
    geo = map_raster(by_kind[True], "naip-rgb")
    assert geo.kind == "lonlat" and geo.crs == "EPSG:32633"
    assert geo.tile_url == f"/tiles/{geo.id}/{{z}}/{{x}}/{{y}}.png?preset=naip-rgb"
    (south, west), (north, east) = geo.fit_bounds
    assert 14.9 < west < east < 15.1 and 45.0 < south < north < 45.2
    assert 15 <= geo.tile_options["maxNativeZoom"] <= 18  # 2 m pixels
    assert "source" not in asdict(geo) and str(by_kind[True].path.parent) not in json.dumps(asdict(geo))
    plain = map_raster(by_kind[False])
    assert plain.kind == "pixel" and plain.fit_bounds == ((-300.0, 0.0), (0.0, 300.0))
    assert plain.tile_options["zoomOffset"] == 1 and plain.tile_url.endswith(".png")


def test_map_value_keeps_the_browser_drawing():
    drawn = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [15.0, 45.0]},
             "properties": {"space": "lonlat", "shape": "point"}}
    value = map_value([], None, results_seq=7, previous={"drawn": drawn, "drawn_seq": 4, "fit_seq": 2})
    assert value["drawn"] == drawn and value["drawn_seq"] == 4
    assert value["results_seq"] == 7 and "results" not in value  # results come from /results/features


def test_drawn_region_parsing_and_errors():
    assert drawn_region(None) is None and drawn_region({"drawn": None}) is None
    rect = {"drawn": {"type": "Feature", "properties": {"space": "lonlat", "shape": "rectangle", "raster_id": "r1"},
                      "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}}}
    region = drawn_region(rect)
    assert region == DrawnRegion(rect["drawn"]["geometry"], "lonlat", "rectangle", "r1")
    with pytest.raises(UserInputError, match="not a GeoJSON Feature"):
        drawn_region({"drawn": "garbage"})
    with pytest.raises(UserInputError, match="must be a Point"):
        DrawnRegion({"type": "Polygon", "coordinates": [[[0, 0]]]}, "lonlat", "point")
    with pytest.raises(UserInputError, match="non-finite"):
        DrawnRegion({"type": "Point", "coordinates": [float("nan"), 1]}, "lonlat", "point")
    with pytest.raises(UserInputError, match="space"):
        DrawnRegion({"type": "Point", "coordinates": [0, 1]}, "EPSG:3857", "point")


def test_basemaps_come_from_leafmaps_catalog():
    names = [b.name for b in basemap_catalog()]
    assert names == ["OpenStreetMap", "Esri.WorldImagery"]
    assert all(b.url.startswith("https://") and "{z}" in b.url for b in basemap_catalog())
