"""Take the README screenshot: the real app in chromium on a real raster.

    python -m tests.e2e.make_screenshot [launch.py flags ...] [--out docs/screenshot.png]
    python -m tests.e2e.make_screenshot --find "storage tank" --out docs/screenshot_search.png

Without ``--raster`` it uses ../shared/data/geotiff/cogeo.tif (real aerial imagery) when that
folder exists, else the demo raster. With a model (``--model`` or the shipped demo model) it
also asks "Describe region" about the drawn rectangle so the answer shows; with ``--find PHRASE``
it runs "Find objects" for the phrase over the drawn rectangle instead (a region larger than one
model input: the tile-by-tile search) on the demo raster and its "before" twin (the demo pair,
shown as a swipe).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from app.config import parse_launch_config
from app.demo import demo_manifest

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_RASTER = REPO_ROOT.parent / "shared" / "data" / "geotiff" / "cogeo.tif"


def main(argv: list[str] | None = None) -> int:
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--out", default=str(REPO_ROOT / "docs" / "screenshot.png"))
    own.add_argument("--find", metavar="PHRASE", help="run 'Find objects' for PHRASE on the demo pair")
    args, launch_argv = own.parse_known_args(argv)
    if "--raster" not in launch_argv and SHARED_RASTER.is_file() and args.find is None:
        launch_argv += ["--raster", str(SHARED_RASTER)]
    if "--workspace" not in launch_argv:
        launch_argv += ["--workspace", tempfile.mkdtemp(prefix="geolens-shot-")]
    launch = parse_launch_config(launch_argv + ["--port", "0"], os.environ, demo_manifest=demo_manifest())

    from playwright.sync_api import sync_playwright

    from app.server import create_server_app, start_server
    from app.services import open_services
    from app.ui import build_blocks
    from tests.e2e.conftest import CHROMIUM_ARGS

    services = open_services(launch)
    server = start_server(create_server_app(services, build_blocks(services), launch.app), "127.0.0.1", 0)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.goto(server.url)
            page.wait_for_function("() => window.geolens && document.querySelectorAll('.leaflet-tile-loaded').length > 3",
                                   timeout=60_000)
            box = page.locator(".gl-map").bounding_box()
            page.locator(".leaflet-draw-draw-rectangle").click()
            page.mouse.move(box["x"] + box["width"] * 0.42, box["y"] + box["height"] * 0.38)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.62, box["y"] + box["height"] * 0.60, steps=8)
            page.mouse.up()
            page.wait_for_function("() => document.querySelector('#geolens-region').innerText.includes('Drawn')")
            if services.model_status.loaded and args.find:
                page.locator("#geolens-task").get_by_text("Find objects", exact=True).click()
                page.locator("#geolens-question textarea").fill(args.find)
                page.locator("#geolens-ask").click()
                page.wait_for_function("() => document.querySelector('#geolens-status').innerText.includes('Searched')",
                                       timeout=600_000)
            elif services.model_status.loaded:
                page.locator("#geolens-task").get_by_text("Describe region", exact=True).click()
                page.locator("#geolens-ask").click()
                page.wait_for_function("() => document.querySelector('#geolens-status').innerText.includes('Answered')",
                                       timeout=600_000)
            page.wait_for_timeout(500)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.out)
            browser.close()
    finally:
        server.stop()
        services.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
