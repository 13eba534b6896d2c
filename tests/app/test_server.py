"""The HTTP routes next to Gradio: tiles by catalog id only, assets below assets/ only, results by
view, Host/Origin checks (DNS rebinding), logins (several users, throttled failures)."""

from __future__ import annotations

import base64
import io

import morecantile
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.config import Auth
from app.server import create_server_app
from app.ui import build_blocks


def _client(services, auth=None, base_url="http://127.0.0.1:7860", **config_fields):
    import dataclasses

    logins = tuple(auth) if isinstance(auth, (tuple, list)) else ((auth,) if auth else ())
    base = services.__dict__.setdefault("_base_config", services.config)
    config = dataclasses.replace(base, logins=logins, **config_fields)
    services.config = config
    return TestClient(create_server_app(services, build_blocks(services), config), base_url=base_url)


@pytest.fixture(scope="module")
def services(tmp_path_factory, geo_tif, plain_png):
    """One set of services (and one Gradio app) for all route tests: they only read."""
    from app.services import open_services
    from tests.app.conftest import make_launch

    svc = open_services(make_launch(tmp_path_factory.mktemp("ws"), rasters=(geo_tif, plain_png)))
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def client(services):
    with _client(services) as c:
        yield c


def _ids(services):
    by_kind = {r.georeferenced: r for r in services.catalog_list()}
    return by_kind[True], by_kind[False]


def test_geotiff_tile_is_a_png_with_data(client, services):
    geo, _ = _ids(services)
    west, south, east, north = geo.bounds_lonlat
    tile = morecantile.tms.get("WebMercatorQuad").tile((west + east) / 2, (south + north) / 2, 15)
    r = client.get(f"/tiles/{geo.raster_id}/{tile.z}/{tile.x}/{tile.y}.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(r.content))
    assert image.size == (256, 256)
    alpha = image.convert("RGBA").getchannel("A")
    assert alpha.getextrema()[1] == 255  # some opaque pixels: the raster is there
    far = client.get(f"/tiles/{geo.raster_id}/15/0/0.png")  # far away: transparent, not an error
    assert far.status_code == 200
    assert Image.open(io.BytesIO(far.content)).convert("RGBA").getchannel("A").getextrema() == (0, 0)


def test_pixel_tile_for_a_plain_image(client, services):
    _, plain = _ids(services)
    r = client.get(f"/tiles/{plain.raster_id}/0/0/0.png")
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (256, 256)


def test_tile_errors_are_json(client, services):
    geo, _ = _ids(services)
    r = client.get("/tiles/not-an-id/1/0/0.png")
    assert r.status_code == 404 and "not-an-id" in r.json()["error"]
    r = client.get(f"/tiles/{geo.raster_id}/3/99/0.png")
    assert r.status_code == 400 and "2**z" in r.json()["error"]
    r = client.get(f"/tiles/{geo.raster_id}/10/0/0.png?preset=no-such-preset")
    assert r.status_code == 400 and "no-such-preset" in r.json()["error"]
    assert client.get(f"/tiles/{geo.raster_id}/a/b/c.png").status_code == 422


@pytest.mark.parametrize("path", [
    "/tiles/..%2F..%2Fetc%2Fpasswd/0/0/0.png",
    "/tiles/%2Fetc%2Fpasswd/0/0/0.png",
])
def test_tile_route_never_takes_a_path(client, path):
    r = client.get(path)
    assert r.status_code == 404
    assert b"root:" not in r.content


@pytest.mark.parametrize("path", [
    "/assets/vendor/..%2F..%2Fapp%2Fconfig.py",
    "/assets/vendor/%2E%2E/%2E%2E/app/config.py",
    "/assets/map/..%2Fvendor%2F..%2F..%2Flaunch.py",
    "/assets/vendor/%2Fetc%2Fpasswd",
    "/assets/vendor/leaflet",  # a folder, not a file
    "/assets/demo/anything",
    "/assets/vendor/app/config.py?_area=..",  # no hidden parameter picks the folder
    "/assets/vendor/app/config.py?area=..",
])
def test_assets_route_refuses_traversal(client, path):
    r = client.get(path)
    assert r.status_code == 404
    assert b"AppConfig" not in r.content and b"root:" not in r.content


def test_assets_are_served(client):
    r = client.get("/assets/vendor/leaflet/leaflet.js")
    assert r.status_code == 200 and b"Leaflet 1.9.4" in r.content[:300]
    assert client.get("/assets/vendor/leaflet-draw/images/spritesheet.svg").status_code == 200
    assert client.get("/assets/map/map.css").status_code == 200
    assert client.get("/").status_code == 200  # the Gradio page


def test_auth_protects_every_route(services):
    geo, _ = _ids(services)
    with _client(services, auth=Auth("ana", "s3cret")) as c:
        for url in ("/", f"/tiles/{geo.raster_id}/0/0/0.png", "/assets/map/map.js", "/config",
                    "/results/features?bbox=0,0,1,1"):
            r = c.get(url)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
        bad = base64.b64encode(b"ana:wrong").decode()
        assert c.get("/", headers={"Authorization": f"Basic {bad}"}).status_code == 401
        good = {"Authorization": "Basic " + base64.b64encode(b"ana:s3cret").decode()}
        assert c.get(f"/tiles/{geo.raster_id}/0/0/0.png", headers=good).status_code == 200
        assert c.get("/", headers=good).status_code == 200


def test_band_presets_on_a_multispectral_raster(client, services, tmp_path):
    """A 4-band uint16 NAIP-like raster: presets pick the bands; a preset that needs bands the
    raster lacks is a 400 with the reason."""
    import numpy as np

    from tests.app.rasters import GEO_CRS, GEO_TRANSFORM
    from tiles import write_raster

    rng = np.random.default_rng(0)
    bands = rng.integers(100, 4000, (4, 256, 256)).astype("uint16")
    path = write_raster(tmp_path / "naip.tif", bands, GEO_CRS, GEO_TRANSFORM, descriptions=("R", "G", "B", "NIR"))
    raster = services.raster(services.catalog.open(path))
    west, south, east, north = raster.bounds_lonlat
    t = morecantile.tms.get("WebMercatorQuad").tile((west + east) / 2, (south + north) / 2, 15)
    base = f"/tiles/{raster.raster_id}/{t.z}/{t.x}/{t.y}.png"
    natural = client.get(base + "?preset=naip-rgb")
    false_colour = client.get(base + "?preset=naip-false-color")
    assert natural.status_code == 200 and false_colour.status_code == 200
    assert natural.content != false_colour.content
    r = client.get(base + "?preset=sentinel2-false-color")
    assert r.status_code == 400 and "naip.tif" in r.json()["error"]


@pytest.mark.parametrize("host", ["evil.example", "evil.example:7860", "127.0.0.1.nip.io", "10.0.0.8", ""])
def test_foreign_host_names_are_refused_on_every_route(services, host):
    """DNS rebinding: a page on evil.example whose name now points at 127.0.0.1 still sends its
    own Host header; nothing is served to it, not the catalog, tiles, results or uploads."""
    geo, _ = _ids(services)
    with _client(services) as c:
        for url in ("/", "/config", f"/tiles/{geo.raster_id}/0/0/0.png", "/results/features?bbox=0,0,1,1",
                    "/assets/map/map.js", "/healthz"):
            r = c.get(url, headers={"Host": host})
            assert r.status_code == 421, url
            assert "DNS rebinding" in r.json()["error"]
        assert c.post("/gradio_api/upload", headers={"Host": host}, files={"files": ("x.tif", b"x")}).status_code == 421


@pytest.mark.parametrize("host", ["127.0.0.1:7860", "localhost:7860", "[::1]:7860", "127.0.0.2", "LOCALHOST"])
def test_loopback_host_names_are_served(services, host):
    with _client(services) as c:
        assert c.get("/healthz", headers={"Host": host}).status_code == 200


def test_allowed_host_and_origin(services):
    with _client(services, allowed_hosts=("geolens.lab.internal",)) as c:
        assert c.get("/healthz", headers={"Host": "geolens.lab.internal:7860"}).status_code == 200
        ok = c.get("/healthz", headers={"Origin": "http://127.0.0.1:7860"})
        assert ok.status_code == 200
        r = c.get("/healthz", headers={"Origin": "http://evil.example"})
        assert r.status_code == 403 and "evil.example" in r.json()["error"]
        assert c.get("/healthz", headers={"Origin": "null"}).status_code == 403


def test_results_route_serves_the_view_without_server_paths(services):
    from tests.app.test_results import _at

    geo, _ = _ids(services)
    for i in range(30):
        services.store.append(_at(15.0 + i * 0.01, 45.0, answer=f"r{i}", raster=str(geo.path)))
    with _client(services) as c:
        r = c.get("/results/features", params={"bbox": "14.9,44.9,15.055,45.1", "limit": 3})
        body = r.json()
        assert r.status_code == 200 and body["type"] == "FeatureCollection"
        assert body["total"] == 6 and body["shown"] == 3
        assert [f["properties"]["answer"] for f in body["features"]] == ["r3", "r4", "r5"]
        assert all(f["properties"]["raster"] == geo.path.name for f in body["features"])
        assert str(geo.path.parent) not in r.text
        assert c.get("/results/features", params={"bbox": "a,b,c,d"}).status_code == 400
        assert c.get("/results/features", params={"bbox": "0,0,1,1", "space": "pixel"}).status_code == 400
        assert c.get("/results/features", params={"bbox": "0,0,1,1", "limit": 10**6}).status_code == 400
    services.store.clear()


def test_several_logins_and_throttled_failures(services, monkeypatch):
    from app import server

    delays = []

    async def no_sleep(seconds):
        delays.append(seconds)

    monkeypatch.setattr(server, "_sleep", no_sleep)
    logins = (Auth("ana", "s3cret"), Auth("bob", "hunter2"))
    with _client(services, auth=logins) as c:
        for user, password in (("ana", "s3cret"), ("bob", "hunter2")):
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            assert c.get("/healthz", headers={"Authorization": f"Basic {token}"}).status_code == 200
        crossed = base64.b64encode(b"ana:hunter2").decode()
        statuses = [c.get("/healthz", headers={"Authorization": f"Basic {crossed}"}).status_code for _ in range(25)]
        assert statuses[:20] == [401] * 20 and set(statuses[20:]) == {429}
        assert delays[:5] == [0.5, 1.0, 2.0, 4.0, 8.0] and max(delays) == 8.0
        good = base64.b64encode(b"ana:s3cret").decode()  # the address is blocked for a while
        assert c.get("/healthz", headers={"Authorization": f"Basic {good}"}).status_code == 429


def test_uploads_over_the_limit_are_refused(services):
    with _client(services, max_upload_mb=1) as c:
        small = c.post("/gradio_api/upload", files={"files": ("small.tif", b"x" * 1000)})
        assert small.status_code == 200
        big = c.post("/gradio_api/upload", files={"files": ("big.tif", b"x" * (2 * 1024 * 1024))})
        assert big.status_code == 413 and "1" in big.text
