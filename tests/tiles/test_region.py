"""region_window: drawn geometry -> whole-pixel raster window, in any CRS or pixel space."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pyproj import Geod
from rasterio.windows import Window
from shapely.geometry import MultiPolygon, Point, Polygon, box, mapping

import tiles
from tests.tiles.conftest import raster_px_to_lonlat


def _pixel_rect_in_crs(raster, c0, r0, c1, r1) -> Polygon:
    return Polygon([raster.transform @ (c, r) for c, r in [(c0, r0), (c1, r0), (c1, r1), (c0, r1)]])


def _pixel_rect_in_lonlat(path, c0, r0, c1, r1) -> dict:
    ring = [raster_px_to_lonlat(path, c, r) for c, r in [(c0, r0), (c1, r0), (c1, r1), (c0, r1)]]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


@pytest.mark.parametrize("name", ["utm_rgb", "rotated_rgb", "geographic_rgb", "webmercator_rgb"])
def test_polygon_in_raster_crs_is_exact(rasters, name):
    raster = tiles.open_raster(rasters[name])
    polygon = _pixel_rect_in_crs(raster, 100, 50, 200, 150)
    assert tiles.region_window(raster, polygon, raster.crs) == Window(100, 50, 100, 100)


@pytest.mark.parametrize("name", ["utm_rgb", "rotated_rgb", "webmercator_rgb"])
def test_polygon_in_lonlat(rasters, name):
    raster = tiles.open_raster(rasters[name])
    window = tiles.region_window(raster, _pixel_rect_in_lonlat(rasters[name], 100, 50, 200, 150))
    # straight lon/lat edges bow by a fraction of a pixel in the raster CRS: at most 1 px more
    assert 99 <= window.col_off <= 100 and 49 <= window.row_off <= 50
    assert 100 <= window.width <= 102 and 100 <= window.height <= 102


def test_feature_and_shapely_inputs_agree(rasters):
    raster = tiles.open_raster(rasters["utm_rgb"])
    geometry = _pixel_rect_in_lonlat(rasters["utm_rgb"], 10, 10, 60, 40)
    feature = {"type": "Feature", "geometry": geometry, "properties": {}}
    from shapely.geometry import shape

    assert tiles.region_window(raster, feature) == tiles.region_window(raster, geometry) \
        == tiles.region_window(raster, shape(geometry))


def test_multipolygon_covers_all_parts(rasters):
    raster = tiles.open_raster(rasters["utm_rgb"])
    parts = MultiPolygon([_pixel_rect_in_crs(raster, 10, 10, 20, 20),
                          _pixel_rect_in_crs(raster, 300, 200, 310, 250)])
    assert tiles.region_window(raster, mapping(parts), raster.crs) == Window(10, 10, 300, 240)


def test_partly_outside_is_clipped(rasters):
    raster = tiles.open_raster(rasters["utm_rgb"])
    polygon = _pixel_rect_in_crs(raster, -50, 300, 100, 500)
    assert tiles.region_window(raster, polygon, raster.crs) == Window(0, 300, 100, 84)


def test_fully_outside_names_the_raster_bounds(rasters):
    raster = tiles.open_raster(rasters["utm_rgb"])
    with pytest.raises(tiles.RegionOutsideError) as info:
        tiles.region_window(raster, box(2.0, 48.0, 2.1, 48.1))  # Paris, not Austria
    message = str(info.value)
    west, _, _, north = raster.bounds_lonlat
    assert f"{west:.6f}" in message and f"{north:.6f}" in message and "utm_rgb.tif" in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "name, size_m, px_size_x_m, px_size_y_m",
    [
        ("utm_rgb", 200.0, 10.0, 10.0),
        # 0.0005 degree pixels at ~52.52 N: x = 0.0005 deg of longitude, y = of latitude
        ("geographic_rgb", 500.0, None, None),
        # Web Mercator metres are not ground metres: 2 m pixels are 2 cos(lat) m on the ground
        ("webmercator_rgb", 100.0, None, None),
    ],
)
def test_point_becomes_a_ground_square(rasters, name, size_m, px_size_x_m, px_size_y_m):
    raster = tiles.open_raster(rasters[name])
    lon, lat = raster_px_to_lonlat(rasters[name], 150, 150)
    if px_size_x_m is None:
        g = Geod(ellps="WGS84")
        lon2, lat2 = raster_px_to_lonlat(rasters[name], 151, 150)
        px_size_x_m = g.inv(lon, lat, lon2, lat2)[2]
        lon3, lat3 = raster_px_to_lonlat(rasters[name], 150, 151)
        px_size_y_m = g.inv(lon, lat, lon3, lat3)[2]
    window = tiles.region_window(raster, {"type": "Point", "coordinates": [lon, lat]},
                                 point_size_m=size_m)
    # whole pixels covering the square: its size in pixels plus at most one pixel each side
    assert -0.5 <= window.width - size_m / px_size_x_m <= 2.0
    assert -0.5 <= window.height - size_m / px_size_y_m <= 2.0
    centre = (window.col_off + window.width / 2, window.row_off + window.height / 2)
    assert math.dist(centre, (150, 150)) <= 1.0


def test_point_in_raster_crs(rasters):
    raster = tiles.open_raster(rasters["utm_rgb"])
    x, y = raster.transform @ (100, 100)
    window = tiles.region_window(raster, Point(x, y), raster.crs, point_size_m=100.0)
    assert window == Window(95, 95, 10, 10)


def test_point_square_is_the_square_region_window_reads(rasters):
    raster = tiles.open_raster(rasters["utm_rgb"])
    lon, lat = raster_px_to_lonlat(rasters["utm_rgb"], 150, 150)
    square = tiles.point_square(lon, lat, point_size_m=100.0)
    area, _ = Geod(ellps="WGS84").geometry_area_perimeter(square)
    assert abs(area) == pytest.approx(100.0 * 100.0, rel=1e-3)
    assert tiles.region_window(raster, square) == tiles.region_window(
        raster, Point(lon, lat), point_size_m=100.0)
    x, y = raster.transform @ (100, 100)
    in_crs = tiles.point_square(x, y, raster.crs, point_size_m=100.0)
    assert in_crs.bounds == pytest.approx((x - 50, y - 50, x + 50, y + 50), abs=0.5)
    assert tiles.point_square(100, 100, "pixel", point_size_px=20).bounds == (90, 90, 110, 110)
    assert tiles.point_square(100, -100, "leaflet-simple", point_size_px=20).bounds \
        == (90, -110, 110, -90)
    for bad in ({"point_size_m": 0.0}, {"point_size_px": -1.0, "geometry_crs": "pixel"}):
        with pytest.raises(tiles.GeometryError, match="point_size"):
            tiles.point_square(lon, lat, **bad)


def test_geographic_raster_accepts_unwrapped_longitudes(rasters):
    raster = tiles.open_raster(rasters["geographic_rgb"])
    inside = box(13.25, 52.5, 13.3, 52.55)
    shifted = box(13.25 + 360, 52.5, 13.3 + 360, 52.55)
    assert tiles.region_window(raster, shifted) == tiles.region_window(raster, inside)


def test_region_across_the_antimeridian(rasters):
    path = rasters["antimeridian_rgb"]
    raster = tiles.open_raster(path)
    lon0, lat0 = raster_px_to_lonlat(path, 100, 80)
    lon1, lat1 = raster_px_to_lonlat(path, 200, 120)
    lon1 = lon1 + 360 if lon1 < lon0 else lon1  # unwrapped, as Leaflet reports it
    window = tiles.region_window(raster, box(lon0, lat1, lon1, lat0))
    assert 90 <= window.col_off <= 100 and window.col_off + window.width >= 200
    assert window.width < 130  # not the whole raster, no wrap around the globe


def test_pixel_space_geometries(rasters):
    raster = tiles.open_raster(rasters["plain_png"])
    assert tiles.region_window(raster, box(10, 20, 50, 60), "pixel") == Window(10, 20, 40, 40)
    assert tiles.region_window(raster, box(10, 20, 50, 60), None) == Window(10, 20, 40, 40)
    drawn = {"type": "Polygon", "coordinates": [[[10, -20], [50, -20], [50, -60], [10, -60],
                                                 [10, -20]]]}  # Leaflet CRS.Simple [lng, lat]
    assert tiles.region_window(raster, drawn, "leaflet-simple") == Window(10, 20, 40, 40)
    assert tiles.region_window(raster, Point(100, 100), "pixel", point_size_px=20) \
        == Window(90, 90, 20, 20)
    with pytest.raises(tiles.RegionOutsideError, match="pixel space"):
        tiles.region_window(raster, box(400, 400, 500, 500), "pixel")


def test_lonlat_region_on_plain_image_says_what_to_do(rasters):
    raster = tiles.open_raster(rasters["plain_png"])
    with pytest.raises(tiles.UnsupportedCRSError, match="geometry_crs='pixel'"):
        tiles.region_window(raster, box(1, 1, 2, 2))


def test_line_gets_at_least_one_pixel(rasters):
    raster = tiles.open_raster(rasters["plain_png"])
    line = {"type": "LineString", "coordinates": [[10, 20], [10, 80]]}
    assert tiles.region_window(raster, line, "pixel") == Window(10, 20, 1, 60)


@pytest.mark.parametrize(
    "geometry, match",
    [
        ({"type": "Polygon"}, "not a valid GeoJSON geometry"),
        ({"type": "Circle", "coordinates": [0, 0]}, "not a valid GeoJSON geometry"),
        ({"type": "Polygon", "coordinates": []}, "empty"),
        ({"type": "Feature", "geometry": None, "properties": {}}, "no geometry"),
        ({"type": "FeatureCollection", "features": []}, "no features"),
        ({"type": "Point", "coordinates": [float("nan"), 1.0]}, "non-finite"),
        ("POLYGON ((0 0, 1 0, 1 1, 0 0))", "GeoJSON geometry dict or a shapely geometry"),
    ],
)
def test_bad_geometries(rasters, geometry, match):
    raster = tiles.open_raster(rasters["utm_rgb"])
    with pytest.raises(tiles.GeometryError, match=match):
        tiles.region_window(raster, geometry)


def test_bad_point_size(rasters):
    raster = tiles.open_raster(rasters["utm_rgb"])
    lon, lat = raster_px_to_lonlat(rasters["utm_rgb"], 10, 10)
    with pytest.raises(tiles.GeometryError, match="point_size_m"):
        tiles.region_window(raster, Point(lon, lat), point_size_m=-5)


def test_bad_geometry_crs(rasters):
    raster = tiles.open_raster(rasters["utm_rgb"])
    with pytest.raises(tiles.UnsupportedCRSError, match="EPSG:4326"):
        tiles.region_window(raster, box(0, 0, 1, 1), "not a crs")


def test_ground_square_is_square_in_metres():
    square = tiles.crs.ground_square_lonlat(15.0, 60.0, 1000.0)
    xs, ys = np.asarray(square.exterior.coords).T
    g = Geod(ellps="WGS84")
    width = g.inv(xs.min(), 60.0, xs.max(), 60.0)[2]
    height = g.inv(15.0, ys.min(), 15.0, ys.max())[2]
    assert width == pytest.approx(1000.0, rel=2e-3) and height == pytest.approx(1000.0, rel=2e-3)
