"""Two dates in a real browser: the demo pair opens with the swipe comparison, a drawn region is
asked "What changed?" and "Find new …" by the real demo engine, change boxes (when the model
returns any) are drawn on the map, and the export names both rasters.

Real Leaflet + Leaflet.draw + leaflet-side-by-side in Debian chromium, the real server on
127.0.0.1, the shipped demo model. The demo pair is the shipped one (``before_raster`` in
assets/demo/demo.json, opened by the app itself when started without rasters); until that twin
ships, the test writes a "before" of the demo raster re-projected to Web Mercator with a dated
TIFF tag and opens both (said in the test's output).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import calculate_default_transform, reproject

from app.demo import DEMO_RASTER, demo_before_raster
from tests.e2e.conftest import screenshot
from tests.e2e.server import start_app
from tests.e2e.test_browser import ID_CELLS, TIMEOUT_MS, draw_rectangle, open_app, result_rows

pytestmark = pytest.mark.browser


def _generated_twin(folder: Path) -> Path:
    """The demo raster in EPSG:3857 (another grid), dated 2019-06-01, with a patch painted over."""
    out = folder / "demo_scene_before.tif"
    with rasterio.open(DEMO_RASTER) as src:
        transform, width, height = calculate_default_transform(src.crs, "EPSG:3857", src.width, src.height,
                                                               *src.bounds)
        data = np.zeros((3, height, width), "uint8")
        reproject(src.read([1, 2, 3]), data, src_transform=src.transform, src_crs=src.crs,
                  dst_transform=transform, dst_crs="EPSG:3857", resampling=Resampling.bilinear)
    data[:, height // 2: height // 2 + 60, width // 2: width // 2 + 60] = 110
    with rasterio.open(out, "w", driver="GTiff", count=3, width=width, height=height, dtype="uint8",
                       crs="EPSG:3857", transform=transform, tiled=True) as dst:
        dst.write(data)
        dst.update_tags(TIFFTAG_DATETIME="2019:06:01 10:00:00")
    return out


@pytest.fixture(scope="module")
def demo_engine():
    from engine.demo.manifest import load_demo_engine

    return load_demo_engine(device="cpu")


@pytest.fixture(scope="module")
def pair_app(tmp_path_factory, demo_engine):
    workspace = tmp_path_factory.mktemp("change-ws")
    twin = demo_before_raster()
    if twin is not None:  # the shipped demo pair: started like `python launch.py` (no rasters)
        app = start_app(workspace, (), engine=demo_engine, basemaps=False)
    else:
        twin = _generated_twin(tmp_path_factory.mktemp("twin"))
        print(f"no shipped demo twin yet: using a generated one, {twin}")
        app = start_app(workspace, (DEMO_RASTER, twin), engine=demo_engine, basemaps=False)
    yield app, twin
    app.stop()


def _ask(page, task: str, question: str) -> str:
    before = set(result_rows(page))
    page.locator("#geolens-task").get_by_text(task, exact=True).click()
    page.locator("#geolens-question textarea").fill(question)
    page.locator("#geolens-ask").click()
    page.wait_for_function(
        "([sel, n]) => Array.from(document.querySelectorAll(sel))"
        ".filter(td => /^[0-9a-f]{12}$/.test(td.innerText.trim())).length > n", arg=[ID_CELLS, len(before)],
        timeout=TIMEOUT_MS * 3)
    (new_id,) = set(result_rows(page)) - before
    assert "Answered" in page.locator("#geolens-status").inner_text()
    assert page.locator("#geolens-answer textarea").input_value().strip()
    return new_id


def test_demo_pair_what_changed_boxes_and_export(pair_app, page_and_log, tmp_path):
    app, twin = pair_app
    services = app.services
    ids = {services.raster(i).path.name: i for i in services.opened_ids}
    after_id, before_id = ids[DEMO_RASTER.name], ids[twin.name]
    page, log = page_and_log
    tile_urls: list[str] = []
    page.on("response", lambda r: tile_urls.append(r.url) if "/tiles/" in r.url else None)
    open_app(page, app.url, [])

    # the overlapping twin is offered as "before" at once, and the map shows the swipe
    page.wait_for_function("() => window.geolens.compare() !== null", timeout=TIMEOUT_MS)
    assert page.evaluate("() => window.geolens.compare()") == {"before": before_id, "after": after_id}
    page.wait_for_function("name => document.querySelector('#geolens-before input').value.includes(name)",
                           arg=twin.name, timeout=TIMEOUT_MS)
    assert page.locator(".gl-map .leaflet-sbs-divider").count() == 1
    assert page.locator(".gl-map .leaflet-sbs-range").count() == 1
    page.wait_for_function(f"() => document.querySelectorAll('.gl-map img.leaflet-tile-loaded[src*=\"/tiles/{before_id}/\"]').length > 0",
                           timeout=TIMEOUT_MS)
    assert "Comparing before" in page.locator("#geolens-compare").inner_text()
    screenshot(page, "e2e-11-compare-swipe")

    draw_rectangle(page, 0.56, 0.30, 0.70, 0.46)
    caption_id = _ask(page, "What changed?", "")
    ground_id = _ask(page, "Find new …", "buildings")

    # stored with both rasters and the task; the map draws each stored Feature (region + boxes)
    stored = services.store.features([caption_id, ground_id])
    by_result: dict[str, list[dict]] = {}
    for f in stored:
        by_result.setdefault(f["properties"]["result_id"], []).append(f)
    for rid, task in ((caption_id, "change_caption"), (ground_id, "change_ground")):
        props = [f["properties"] for f in by_result[rid]]
        assert all(p["task"] == task and p["before_raster"] == twin.name and p["after_raster"] == DEMO_RASTER.name
                   for p in props)
    n_boxes = sum(1 for f in stored if f["properties"]["kind"] == "box")
    print(f"demo model change boxes: {n_boxes} (caption answer: "
          f"{by_result[caption_id][0]['properties']['answer']!r})")
    page.wait_for_function("n => window.geolens.resultLayerCount() === n", arg=len(stored), timeout=TIMEOUT_MS)
    if n_boxes:  # change boxes are drawn in the change colour over the after raster
        colours = page.evaluate("""() => { const out = []; window.geolens.map().eachLayer(l => {
            if (l.glResultId && l.options && l.options.weight === 3) { out.push(l.options.color); } }); return out; }""")
        assert colours.count("#e11d48") == n_boxes
    screenshot(page, "e2e-12-what-changed")

    # the export holds both answers with both raster names (and the before date)
    page.locator("#geolens-export-all").click()
    link = page.locator("#geolens-export-file a").first
    link.wait_for(timeout=TIMEOUT_MS)
    with page.expect_download(timeout=TIMEOUT_MS) as download_info:
        link.click()
    target = tmp_path / "export.geojson"
    download_info.value.save_as(target)
    exported = [f for f in json.loads(target.read_text())["features"]
                if f["properties"]["result_id"] in (caption_id, ground_id)]
    assert len(exported) == len(stored)
    assert all(f["properties"]["before_raster"] == twin.name and f["properties"]["after_raster"] == DEMO_RASTER.name
               for f in exported)
    assert sum(f["properties"]["kind"] == "box" for f in exported) == n_boxes
    if demo_before_raster() is None:
        assert all(f["properties"]["before_date"] == "2019-06-01" for f in exported)
    assert any(f"/tiles/{before_id}/" in u for u in tile_urls)
    assert log.foreign() == [], log.foreign()[:5]
