"""Whole-scene search in a real browser: the demo model searches a drawn region of the demo scene
tile by tile; the status line shows tiles done/total and the time left, boxes appear on the map
while it runs, Stop keeps what was found as one result, and the GeoPackage export holds it.

Real Leaflet + Leaflet.draw in Debian chromium, the real server on 127.0.0.1, the shipped demo
raster and demo model (assets/demo). Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.e2e.conftest import screenshot
from tests.e2e.server import start_app
from tests.e2e.test_browser import TIMEOUT_MS, expect_region, open_app

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def demo_live(tmp_path_factory):
    from app.demo import DEMO_MANIFEST, DEMO_RASTER
    from engine.demo.manifest import load_demo_engine

    engine = load_demo_engine(DEMO_MANIFEST, device="cpu")
    app = start_app(tmp_path_factory.mktemp("scan-ws"), (DEMO_RASTER,), engine=engine, basemaps=False)
    yield app
    app.stop()


def draw_pixel_rectangle(page, raster, x0, y0, x1, y1) -> None:
    """Drag a rectangle with Leaflet.draw around raster pixels (x0, y0)-(x1, y1)."""
    from pyproj import Transformer

    to_lonlat = Transformer.from_crs(raster.crs, "EPSG:4326", always_xy=True)
    box = page.locator(".gl-map").bounding_box()

    def screen(x, y):
        lon, lat = to_lonlat.transform(*(raster.transform * (x, y)))
        p = page.evaluate("([lat, lng]) => { const p = window.geolens.map().latLngToContainerPoint([lat, lng]);"
                          " return [p.x, p.y]; }", [lat, lon])
        return box["x"] + p[0], box["y"] + p[1]

    page.locator(".leaflet-draw-draw-rectangle").click()
    page.mouse.move(*screen(x0, y0))
    page.mouse.down()
    page.mouse.move(*screen(x1, y1), steps=8)
    page.mouse.up()
    expect_region(page, "Drawn rectangle")


def open_result_popup(page, result_id: str):
    """Open the popup of a stored result (its region is drawn first) and return its content."""
    page.evaluate("""id => { let done = false; window.geolens.map().eachLayer(l => {
        if (!done && l.glResultId === id && l.openPopup) { l.openPopup(); done = true; } }); }""", result_id)
    popup = page.locator(".leaflet-popup-content")
    popup.wait_for(timeout=TIMEOUT_MS)
    return popup


def status(page) -> str:
    return page.locator("#geolens-status").inner_text()


def test_search_a_region_tile_by_tile_stop_keeps_the_boxes_and_export_holds_them(demo_live, page_and_log, tmp_path):
    import geopandas as gpd

    page, log = page_and_log
    open_app(page, demo_live.url, [])
    raster = demo_live.services.catalog_list()[0]
    # the scene's bottom half, about 190 tiles; its first row starts in the industrial quarter
    draw_pixel_rectangle(page, raster, 0, 1024, 2048, 2048)

    page.locator("#geolens-task").get_by_text("Find objects", exact=True).click()
    page.locator("#geolens-question textarea").fill("storage tank")
    page.locator("#geolens-ask").click()
    # progress: tiles done of the total and the time left, boxes on the map as they arrive
    page.wait_for_function(
        "() => /Searching tile by tile: [1-9]\\d* of \\d+ tiles/.test(document.querySelector('#geolens-status')"
        ".innerText) && /left/.test(document.querySelector('#geolens-status').innerText)"
        " && window.geolens.pendingCount() > 0", timeout=TIMEOUT_MS)
    running, answer_so_far = status(page), page.locator("#geolens-answer textarea").input_value()
    page.locator("#geolens-stop").click()  # at once: this machine may be fast
    screenshot(page, "e2e-scan-01-stopping")
    done, total = map(int, re.search(r"(\d+) of (\d+) tiles", running).groups())
    assert 0 < done < total and re.search(r"so far \(\d+ of \d+ tiles\)", answer_so_far)
    try:
        page.wait_for_function("() => document.querySelector('#geolens-status').innerText.includes('Stopped after')",
                               timeout=TIMEOUT_MS)
    except PlaywrightTimeout:
        screenshot(page, "e2e-scan-stop-failed")
        raise AssertionError((status(page), page.locator("#geolens-stop-note").inner_text())) from None
    (record,) = [f for f in demo_live.services.store.features() if f["properties"]["kind"] == "region"]
    scan = record["properties"]["scan"]
    assert scan["stopped"] and 0 < scan["tiles_done"] < scan["tiles_total"] == total
    n = scan["count"]
    assert n > 0  # boxes were on the map before Stop: they are kept
    answer = page.locator("#geolens-answer textarea").input_value()
    assert answer.startswith(f"Stopped after {scan['tiles_done']} of {total} tiles: {n} storage tank")
    # the stored result replaces the pending boxes: its region and n boxes, one unit
    page.wait_for_function("n => window.geolens.pendingCount() === 0 && window.geolens.resultLayerCount() === n + 1",
                           arg=n, timeout=TIMEOUT_MS)
    screenshot(page, "e2e-scan-02-stopped")
    # the result's popup (its region is drawn first) says how many were found in how many tiles
    popup = open_result_popup(page, record["properties"]["result_id"])
    assert f"{n} ({scan['tiles_done']} of {total} tiles, stopped)" in popup.inner_text()

    page.locator("#geolens-export-format").get_by_text("GeoPackage", exact=True).click()
    page.locator("#geolens-export-all").click()
    link = page.locator("#geolens-export-file a").first
    link.wait_for(timeout=TIMEOUT_MS)
    with page.expect_download(timeout=TIMEOUT_MS) as download_info:
        link.click()
    target = tmp_path / "export.gpkg"
    download_info.value.save_as(target)
    frame = gpd.read_file(target, layer="ground: storage tank")
    assert frame.crs.to_epsg() == 4326
    assert set(frame["result_id"]) == {record["properties"]["result_id"]}
    assert (frame["kind"] == "box").sum() == n and frame["score"].notna().sum() == n
    assert frame.loc[frame["kind"] == "region", "count"].tolist() == [n]
    assert log.foreign() == [], log.foreign()[:5]


def test_search_only_the_tiles_clip_ranks_most_likely(demo_live, page_and_log):
    """'Search the most likely quarter of the tiles': CLIP ranks the drawn region's tiles, a
    quarter of them run, and the status, answer and popup say how many of how many."""
    page, log = page_and_log
    open_app(page, demo_live.url, [])
    raster = demo_live.services.catalog_list()[0]
    before = {f["properties"]["result_id"] for f in demo_live.services.store.features()}
    draw_pixel_rectangle(page, raster, 0, 1024, 1024, 2048)  # the industrial quarter

    page.locator("#geolens-task").get_by_text("Find objects", exact=True).click()
    page.locator("#geolens-question textarea").fill("storage tank")
    page.locator("#geolens-search-tiles input").click()
    page.get_by_role("option", name=re.compile(r"most likely quarter")).click()
    page.locator("#geolens-ask").click()
    page.wait_for_function("() => document.querySelector('#geolens-status').innerText.includes('Searched')",
                           timeout=TIMEOUT_MS)
    (record,) = [f for f in demo_live.services.store.features()
                 if f["properties"]["kind"] == "region" and f["properties"]["result_id"] not in before]
    scan = record["properties"]["scan"]
    total, left_out = scan["tiles_total"], scan["prefiltered"]
    run = total - left_out
    assert run == -(-total // 4) and scan["tiles_done"] == run and not scan["stopped"]
    assert f"Searched {run} tiles (the most likely of {total})" in status(page)
    answer = page.locator("#geolens-answer textarea").input_value()
    assert f"found in {run} tiles, the most likely of {total} (CLIP left out {left_out})" in answer
    popup = open_result_popup(page, record["properties"]["result_id"])
    assert f"({run} of {run} tiles, the most likely of {total})" in popup.inner_text()
    screenshot(page, "e2e-scan-03-most-likely-quarter")
    assert log.foreign() == [], log.foreign()[:5]
