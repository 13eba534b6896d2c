"""The app in a real browser: draw -> ask -> overlay -> export -> reload -> restart.

Real Leaflet + Leaflet.draw in Debian chromium, the real server (FastAPI + Gradio) on
127.0.0.1, real rasters, a real tiny engine (random weights: answers are gibberish, every step
of the wiring is real). Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.e2e.conftest import screenshot
from tests.e2e.server import start_app

pytestmark = pytest.mark.browser

TIMEOUT_MS = 60_000
# Gradio 6 renders table bodies as virtual rows of grid cells; column 1 holds the result id.
ID_CELLS = "#geolens-results .virtual-row [role=gridcell][data-col='1']"
ROWS = "#geolens-results .virtual-row"


@pytest.fixture(scope="module")
def live(tmp_path_factory, e2e_rasters, e2e_engine):
    """The running app; tests may restart it (same workspace) through ``live["restart"]()``."""
    workspace = tmp_path_factory.mktemp("e2e-workspace")
    state = {"app": start_app(workspace, e2e_rasters, engine=e2e_engine)}

    def restart():
        state["app"].stop()
        state["app"] = start_app(workspace, e2e_rasters, engine=e2e_engine)
        return state["app"]

    state["restart"] = restart
    yield state
    state["app"].stop()


# -- page helpers ------------------------------------------------------------------------------
def open_app(page, url: str, tiles: list[int]) -> None:
    page.on("response", lambda r: tiles.append(r.status) if "/tiles/" in r.url else None)
    page.goto(url)
    page.wait_for_function("() => window.geolens && window.geolens.map() && window.geolens.tileLayerUrls().length > 0",
                           timeout=TIMEOUT_MS)
    page.wait_for_function("() => document.querySelectorAll('.gl-map .leaflet-tile-loaded').length > 0",
                           timeout=TIMEOUT_MS)


def map_point(page, fx: float, fy: float) -> tuple[float, float]:
    box = page.locator(".gl-map").bounding_box()
    return box["x"] + box["width"] * fx, box["y"] + box["height"] * fy


def draw_rectangle(page, fx0, fy0, fx1, fy1) -> None:
    page.locator(".leaflet-draw-draw-rectangle").click()
    x0, y0 = map_point(page, fx0, fy0)
    x1, y1 = map_point(page, fx1, fy1)
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=8)
    page.mouse.up()
    expect_region(page, "Drawn rectangle")


def draw_polygon(page, points) -> None:
    page.locator(".leaflet-draw-draw-polygon").click()
    for fx, fy in points:
        x, y = map_point(page, fx, fy)
        page.mouse.click(x, y)
        page.wait_for_timeout(150)
    page.locator(".leaflet-draw-actions a", has_text="Finish").click()
    expect_region(page, "Drawn polygon")


def expect_region(page, text: str) -> None:
    """Python received the drawing (component value + change event) and described it."""
    page.wait_for_function("t => document.querySelector('#geolens-region').innerText.includes(t)", arg=text,
                           timeout=TIMEOUT_MS)


def drawn_lonlat(page) -> list[list[float]]:
    return page.evaluate("() => window.geolens.drawnLatLngs()")


def result_rows(page) -> list[str]:
    """Result ids shown in the history table."""
    cells = page.locator(ID_CELLS).all_inner_texts()
    return [c.strip() for c in cells if re.fullmatch(r"[0-9a-f]{12}", c.strip())]


def ask(page, task: str, question: str) -> str:
    before = set(result_rows(page))
    page.locator("#geolens-task").get_by_text(task, exact=True).click()
    page.locator("#geolens-question textarea").fill(question)
    page.locator("#geolens-ask").click()
    page.wait_for_function(
        "([sel, n]) => Array.from(document.querySelectorAll(sel))"
        ".filter(td => /^[0-9a-f]{12}$/.test(td.innerText.trim())).length > n", arg=[ID_CELLS, len(before)],
        timeout=TIMEOUT_MS)
    (new_id,) = set(result_rows(page)) - before
    assert "Answered" in page.locator("#geolens-status").inner_text()
    assert page.locator("#geolens-answer textarea").input_value().strip()
    return new_id


def close_to(exported_ring, drawn_points, tol=1e-6) -> bool:
    """Every drawn vertex has an exported vertex within ``tol`` degrees, and vice versa."""
    def near(p, pts):
        return any(abs(p[0] - q[0]) <= tol and abs(p[1] - q[1]) <= tol for q in pts)
    return all(near(p, exported_ring) for p in drawn_points) and all(near(q, drawn_points) for q in exported_ring)


# -- tests -------------------------------------------------------------------------------------
def test_draw_ask_overlay_export_reload(live, page_and_log, tmp_path):
    page, log = page_and_log
    tiles: list[int] = []
    open_app(page, live["app"].url, tiles)
    assert tiles and all(s == 200 for s in tiles)
    screenshot(page, "e2e-01-loaded")

    draw_rectangle(page, 0.40, 0.35, 0.55, 0.50)
    rect_lonlat = drawn_lonlat(page)
    assert len(rect_lonlat) == 4
    rect_id = ask(page, "Ask", "Is there a river in this rectangle?")
    assert page.evaluate("() => window.geolens.resultLayerCount()") == 1
    screenshot(page, "e2e-02-rectangle-answered")

    draw_polygon(page, [(0.25, 0.60), (0.40, 0.58), (0.38, 0.75), (0.22, 0.72)])
    poly_lonlat = drawn_lonlat(page)
    assert len(poly_lonlat) == 4
    poly_id = ask(page, "Describe region", "focus on the fields")
    assert page.evaluate("() => window.geolens.resultLayerCount()") == 2
    screenshot(page, "e2e-03-polygon-answered")

    # the overlay's popup holds the answer
    stored = {f["properties"]["result_id"]: f for f in live["app"].services.store.features()}
    answer_text = stored[rect_id]["properties"]["answer"]
    page.evaluate("""id => { const g = window.geolens; g.map().eachLayer(l => {
        if (l.glResultId === id && l.openPopup) { l.openPopup(); } }); }""", rect_id)
    popup = page.locator(".leaflet-popup-content")
    popup.wait_for(timeout=TIMEOUT_MS)
    assert answer_text.strip()[:10] in popup.inner_text()

    # export all -> download -> coordinates match the drawing (1e-6 degrees)
    page.locator("#geolens-export-all").click()
    link = page.locator("#geolens-export-file a").first
    link.wait_for(timeout=TIMEOUT_MS)
    with page.expect_download(timeout=TIMEOUT_MS) as download_info:
        link.click()
    target = tmp_path / "export.geojson"
    download_info.value.save_as(target)
    exported = json.loads(target.read_text())
    assert exported["type"] == "FeatureCollection" and "crs" not in exported
    regions = {f["properties"]["result_id"]: f for f in exported["features"] if f["properties"]["kind"] == "region"}
    assert set(regions) == {rect_id, poly_id}
    assert regions[rect_id]["properties"]["question"] == "Is there a river in this rectangle?"
    assert close_to(regions[rect_id]["geometry"]["coordinates"][0], rect_lonlat)
    assert close_to(regions[poly_id]["geometry"]["coordinates"][0], poly_lonlat)

    # reload: results come back (table and map)
    page.reload()
    page.wait_for_function("() => window.geolens && window.geolens.resultLayerCount() === 2", timeout=TIMEOUT_MS)
    page.wait_for_function("sel => document.querySelectorAll(sel).length >= 2", arg=ROWS, timeout=TIMEOUT_MS)
    assert set(result_rows(page)) == {rect_id, poly_id}
    screenshot(page, "e2e-04-reloaded")
    assert log.foreign() == [], f"requests left 127.0.0.1: {log.foreign()[:5]}"


def test_results_survive_a_server_restart(live, page_and_log):
    page, log = page_and_log
    services = live["app"].services
    assert len(services.store), "runs after test_draw_ask_overlay_export_reload"
    # A stored result with a box (the tiny random model never emits boxes): it must come back
    # after the restart drawn as a labelled box. Built by the app's own record builder from a
    # real crop, i.e. exactly what a grounding answer stores.
    from app.asking import AskRequest, build_record, prepare_crop
    from engine.types import Answer, BoxPx, Task

    geo = next(r for r in services.catalog_list() if r.georeferenced)
    request = AskRequest(geo.raster_id, Task.GROUND, "bright squares")
    prepared = prepare_crop(geo, request, max_crop_px=256, point_size_m=100, point_size_px=256)
    answer = Answer(text="one bright square", task=Task.GROUND, model="stored",
                    boxes_px=(BoxPx(100, 100, 140, 130, label="square", score=0.9),))
    services.store.append(build_record(geo, request, prepared, answer, model="stored", adapter=None))
    before = {f["properties"]["result_id"] for f in services.store.features()}
    n_layers = len(services.store.features())
    app = live["restart"]()
    tiles: list[int] = []
    open_app(page, app.url, tiles)
    page.wait_for_function("n => window.geolens.resultLayerCount() === n", arg=n_layers, timeout=TIMEOUT_MS)
    label = page.locator(".gl-box-label", has_text="square 0.90")
    label.first.wait_for(timeout=TIMEOUT_MS)  # the box is drawn with its label and score ...
    page.wait_for_timeout(500)  # ... once, also after the re-renders that follow zooms and fetches
    assert label.count() == 1, label.count()
    page.wait_for_function("([sel, n]) => document.querySelectorAll(sel).length >= n", arg=[ROWS, len(before)],
                           timeout=TIMEOUT_MS)
    assert set(result_rows(page)) == before
    screenshot(page, "e2e-05-after-restart")
    assert log.foreign() == []


def wait_row_selected(page, result_id: str) -> None:
    """Wait until the server's answer marks ``result_id``'s row with ✓ (the header has a ✓ too,
    so looking for ✓ anywhere in the table passes before the selection reached the server)."""
    page.wait_for_function(
        """([sel, id]) => [...document.querySelectorAll(sel)].some(
            r => r.innerText.includes(id) && r.innerText.includes('✓'))""",
        arg=[ROWS, result_id], timeout=TIMEOUT_MS)


def test_select_and_delete_from_the_table(live, page_and_log):
    page, _ = page_and_log
    open_app(page, live["app"].url, [])
    n_features = len(live["app"].services.store.features())
    assert n_features > 0, "this test works on the results saved by the tests before it in this module"
    page.wait_for_function("n => window.geolens.resultLayerCount() === n", arg=n_features, timeout=TIMEOUT_MS)
    step = "select a row"
    try:
        # the table can render after the map layers under CPU load (failed once that way)
        page.wait_for_function("sel => [...document.querySelectorAll(sel)].some(c => /^[0-9a-f]{12}$/.test(c.innerText.trim()))",
                               arg=ID_CELLS, timeout=TIMEOUT_MS)
        victim = result_rows(page)[0]
        page.locator(ROWS, has_text=victim).locator("[role=gridcell][data-col='3']").click()
        wait_row_selected(page, victim)
        step = "delete it"
        page.locator("#geolens-delete").click()
        page.wait_for_function("id => !document.querySelector('#geolens-results').innerText.includes(id)",
                               arg=victim, timeout=TIMEOUT_MS)
        assert victim not in {f["properties"]["result_id"] for f in live["app"].services.store.features()}
        n_left = len(live["app"].services.store.features())
        page.wait_for_function("n => window.geolens.resultLayerCount() === n", arg=n_left, timeout=TIMEOUT_MS)

        step = "select from a map popup"  # the result's popup has a Select button; the table follows
        remaining = result_rows(page)[0]
        page.evaluate("""id => window.geolens.map().eachLayer(l => {
            if (l.glResultId === id && l.openPopup) { l.openPopup(); } })""", remaining)
        page.locator(".leaflet-popup-content button.gl-select").click()
        wait_row_selected(page, remaining)
        step = "export the selection"
        page.locator("#geolens-export-selected").click()
        page.wait_for_function("() => document.querySelector('#geolens-status').innerText.includes('1 selected')",
                               timeout=TIMEOUT_MS)
    except PlaywrightTimeout:
        screenshot(page, "e2e-failed-select-delete")
        raise AssertionError(f"step {step!r} timed out; table: "
                             f"{page.locator('#geolens-results').inner_text()!r}; status: "
                             f"{page.locator('#geolens-status').inner_text()!r}") from None


def test_plain_image_in_pixel_space(live, page_and_log):
    page, log = page_and_log
    tiles: list[int] = []
    open_app(page, live["app"].url, tiles)
    page.locator("#geolens-raster input").click()
    page.get_by_role("option", name=re.compile(r"photo\.png")).click()
    page.wait_for_function("() => window.geolens.kind() === 'pixel' && "
                           "document.querySelectorAll('.gl-map .leaflet-tile-loaded').length > 0", timeout=TIMEOUT_MS)
    draw_rectangle(page, 0.40, 0.40, 0.55, 0.55)
    drawn = page.evaluate("() => window.geolens.drawnFeature()")
    assert drawn["properties"]["space"] == "pixel"
    xs = [p[0] for p in drawn["geometry"]["coordinates"][0]]
    ys = [p[1] for p in drawn["geometry"]["coordinates"][0]]
    assert 0 <= min(xs) < max(xs) <= 300 and 0 <= min(ys) < max(ys) <= 300  # inside the 300 px image
    new_id = ask(page, "Describe region", "")
    record = [f for f in live["app"].services.store.features([new_id]) if f["properties"]["kind"] == "region"][0]
    assert record["properties"]["coordinate_space"] == "pixel"
    page.wait_for_function("() => window.geolens.resultLayerCount() >= 1", timeout=TIMEOUT_MS)
    screenshot(page, "e2e-06-plain-image")
    assert all(s == 200 for s in tiles) and log.foreign() == []


def test_stream_then_cancel_then_ask_again(tmp_path, e2e_rasters, page_and_log):
    """Stop ends a running answer (nothing stored, no error shown); the engine is free again and
    the next answer streams into the answer box before it is complete."""
    import dataclasses

    from engine.config import GenerationConfig
    from engine.engine import Engine
    from tests.app.conftest import tiny_engine_config

    slow = Engine.from_config(dataclasses.replace(tiny_engine_config(), generation=GenerationConfig(max_new_tokens=400)))  # long enough to see it grow under load
    app = start_app(tmp_path / "ws", e2e_rasters, engine=slow, basemaps=False)
    page, log = page_and_log
    try:
        open_app(page, app.url, [])
        page.locator("#geolens-task").get_by_text("Describe region", exact=True).click()
        page.locator("#geolens-ask").click()
        page.wait_for_function("() => document.querySelector('#geolens-status').innerText.includes('Answering')",
                               timeout=TIMEOUT_MS)
        page.locator("#geolens-stop").click()
        try:
            page.wait_for_function("() => document.querySelector('#geolens-status').innerText.includes('Stopped')",
                                   timeout=TIMEOUT_MS)
        except PlaywrightTimeout:
            screenshot(page, "e2e-07-stop-failed")
            raise AssertionError((page.locator("#geolens-status").inner_text(), len(app.services.store)))
        assert len(app.services.store) == 0  # a stopped answer is not stored
        assert page.get_by_text("Error", exact=True).count() == 0
        screenshot(page, "e2e-07-stopped")
        page.locator("#geolens-stop").click()
        page.wait_for_function("() => document.querySelector('#geolens-stop-note').innerText.includes('Nothing is running')",
                               timeout=TIMEOUT_MS)

        # the engine is free again; this answer streams into the box piece by piece
        page.evaluate("""() => { window.__seen = new Set(); const box = document.querySelector('#geolens-answer textarea');
            window.__poll = setInterval(() => window.__seen.add(box.value), 20); }""")
        draw_rectangle(page, 0.45, 0.45, 0.5, 0.5)
        page.locator("#geolens-ask").click()
        page.wait_for_function("() => document.querySelector('#geolens-status').innerText.includes('Answered')",
                               timeout=3 * TIMEOUT_MS)
        seen = page.evaluate("() => { clearInterval(window.__poll); return Array.from(window.__seen); }")
        final = page.locator("#geolens-answer textarea").input_value()
        partial = [v for v in seen if v and v != final and final.startswith(v)]
        assert len(partial) >= 2, (seen, final)  # the answer grew in front of the analyst
        assert len(app.services.store) == 1
        assert log.foreign() == []
    finally:
        app.stop()


def test_launch_py_with_no_arguments_shows_the_demo_offline(tmp_path, page_and_log, e2e_rasters):
    """`python launch.py` (plus a private workspace and a free port): the demo raster is on the
    map, the shipped demo model is loaded and labelled as a demo, it answers a question about a
    drawn region, and the page contacts nobody but 127.0.0.1."""
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx

    from tests.e2e.conftest import REPO_ROOT

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOLENS_")}
    proc = subprocess.Popen([sys.executable, "launch.py", "--workspace", str(tmp_path / "ws"), "--port", str(port)],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "launch.py did not start serving"
            time.sleep(0.5)
        page, log = page_and_log
        tiles: list[int] = []
        open_app(page, url, tiles)
        assert tiles and all(s == 200 for s in tiles)
        status = page.locator("#geolens-model-status").inner_text()
        assert "GeoLens demo model" in status and "not for real imagery" in status
        assert "demo" in page.locator("#geolens-raster input").input_value()
        assert page.locator("#geolens-ask").is_enabled()
        draw_rectangle(page, 0.4, 0.4, 0.6, 0.6)
        page.locator(".leaflet-draw-draw-marker").click()  # a point asks about a ground square:
        page.mouse.click(*map_point(page, 0.3, 0.3))  # with the demo model, the 64 m it knows
        expect_region(page, "Drawn point (a 64 m square)")
        ask(page, "Classify scene", "")  # default labels with the demo model: its scene classes
        answer = page.locator("#geolens-answer textarea").input_value().strip().lower()
        assert answer in {"rural", "urban", "industrial"}, answer
        assert page.evaluate("() => window.geolens.drawnFeature().geometry.type") == "Point"
        page.get_by_text("Open a raster").click()  # open another raster by its path
        page.locator("#geolens-path textarea, #geolens-path input").first.fill(str(e2e_rasters[1]))
        page.locator("#geolens-open").click()
        page.wait_for_function("() => window.geolens.kind() === 'pixel' && "
                               "document.querySelectorAll('.gl-map .leaflet-tile-loaded').length > 0",
                               timeout=TIMEOUT_MS)
        assert "photo.png" in page.locator("#geolens-raster input").input_value()
        page.locator("#geolens-path").wait_for(state="hidden", timeout=TIMEOUT_MS)  # the open panel closed
        screenshot(page, "e2e-08-launch-demo")
        assert log.foreign() == [], log.foreign()[:5]
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_large_history_stays_a_page_and_a_view(tmp_path, e2e_rasters, e2e_engine, page_and_log):
    """2,500 stored answers: the map draws the newest ones in view (capped, with a note) from the
    results route, the table pages, a row click zooms the map to that result, whole-raster
    answers are outlines; switching rasters clears the drawing visibly; a failed open leaves no
    error badge and says what was wrong in plain text."""
    from tests.app.test_results import _at

    app = start_app(tmp_path / "ws", e2e_rasters, engine=e2e_engine, basemaps=False)
    page, log = page_and_log
    try:
        geo = next(r for r in app.services.catalog_list() if r.georeferenced)
        west, south, east, north = geo.bounds_lonlat
        rng = __import__("random").Random(0)
        records = [_at(rng.uniform(west, east - 0.001), rng.uniform(south, north - 0.001), answer=f"old {i}",
                       raster=str(geo.path)) for i in range(2500)]
        app.services.store.append_many(records)
        open_app(page, app.url, [])
        page.wait_for_function("() => window.geolens.resultsCounts().total === 2500", timeout=TIMEOUT_MS)
        assert page.evaluate("() => window.geolens.resultsCounts().shown") == 1000
        assert "Showing the newest 1,000 of 2,500" in page.locator(".gl-results-note").inner_text()
        page.wait_for_function("() => document.querySelector('#geolens-page').innerText.includes('Results 1–50 of 2,500')",
                               timeout=TIMEOUT_MS)
        page.locator("#geolens-page-next").click()
        page.wait_for_function("() => document.querySelector('#geolens-page').innerText.includes('51–100')",
                               timeout=TIMEOUT_MS)
        target = result_rows(page)[0]
        zoom_before = page.evaluate("() => window.geolens.map().getZoom()")
        page.locator(ROWS, has_text=target).locator("[role=gridcell][data-col='3']").click()
        wait_row_selected(page, target)
        page.wait_for_function("z => window.geolens.map().getZoom() > z + 2", arg=zoom_before, timeout=TIMEOUT_MS)
        (x0, y0, x1, y1) = app.services.store.bounds(target)[1]
        centre = page.evaluate("() => { const c = window.geolens.map().getCenter(); return [c.lng, c.lat]; }")
        assert abs(centre[0] - (x0 + x1) / 2) < 1e-3 and abs(centre[1] - (y0 + y1) / 2) < 1e-3
        screenshot(page, "e2e-09-large-history")

        # a whole-raster answer is an outline, not a fill
        page.locator("#geolens-task").get_by_text("Describe region", exact=True).click()
        page.locator("#geolens-ask").click()
        page.wait_for_function("() => document.querySelector('#geolens-status').innerText.includes('Answered')",
                               timeout=3 * TIMEOUT_MS)
        newest = app.services.store.page(__import__("app.results", fromlist=["ResultQuery"]).ResultQuery(limit=1)).rows[0]
        page.wait_for_function("""id => { let found = null; window.geolens.map().eachLayer(l => {
            if (l.glResultId === id && l.options) { found = l.options.fill; } }); return found === false; }""",
                               arg=newest.result_id, timeout=TIMEOUT_MS)

        # a drawing belongs to its raster
        draw_rectangle(page, 0.45, 0.45, 0.55, 0.55)
        page.locator("#geolens-raster input").click()
        page.get_by_role("option", name=re.compile(r"photo\.png")).click()
        page.wait_for_function("() => window.geolens.kind() === 'pixel'", timeout=TIMEOUT_MS)
        assert page.evaluate("() => window.geolens.drawnFeature()") is None
        assert "The drawing was cleared: it was made on scene.tif" in page.locator(".gl-map-notice").inner_text()
        expect_region(page, "No region drawn")

        # a failed open: a plain-text message, no red badges left behind
        page.get_by_text("Open a raster").click()
        page.locator("#geolens-path textarea, #geolens-path input").first.fill("/nowhere/<b>bold</b>.tif")
        page.locator("#geolens-open").click()
        page.wait_for_function("() => document.querySelector('#geolens-status').innerText.includes('does not exist')",
                               timeout=TIMEOUT_MS)
        assert "<b>bold</b>.tif" in page.locator("#geolens-status").inner_text()
        assert page.locator("#geolens-status b").count() == 0
        assert page.get_by_text("Error", exact=True).count() == 0
        assert log.foreign() == []
    finally:
        app.stop()


def test_a_laptop_screen_shows_ask_answer_and_status_without_scrolling(live, page_and_log):
    """1366 x 768: the map, Ask, Stop, the answer and the status line are all in view at once."""
    page, _ = page_and_log
    page.set_viewport_size({"width": 1366, "height": 768})
    open_app(page, live["app"].url, [])
    for selector in ("#geolens-ask", "#geolens-stop", "#geolens-answer textarea", "#geolens-status", ".gl-map"):
        box = page.locator(selector).bounding_box()
        assert box is not None, selector
        assert box["y"] >= 0 and box["y"] + min(box["height"], 40) <= 768, (selector, box)
    assert page.evaluate("() => document.scrollingElement.scrollTop") == 0
    page.screenshot(path=str(screenshot(page, "e2e-10-laptop").with_name("e2e-10-laptop-viewport.png")))
