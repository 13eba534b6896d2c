"""GeoLens: ``python launch.py [--raster PATH ...] [--model PATH_OR_NAME] ...``.

Parses flags and ``GEOLENS_*`` environment variables once (``app.config``), opens the rasters
(or the demo raster), loads the model (or the demo model, or none), and serves the map app at
http://127.0.0.1:7860 by default. ``python launch.py --help`` lists every flag; ``python launch.py
--check`` prints a diagnostics report (``app.diagnostics``) instead of starting the app.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

# No usage reporting to gradio.app: GeoLens never phones home. Set before gradio is imported.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from app.config import LaunchConfig, build_arg_parser, parse_launch_config
from app.demo import demo_manifest
from app.errors import AppError

log = logging.getLogger("geolens")


def build_app(launch: LaunchConfig):
    """Services, UI and server app for ``launch`` (everything except listening on a port)."""
    from app.server import create_server_app
    from app.services import open_services
    from app.ui import build_blocks

    services = open_services(launch)
    blocks = build_blocks(services)
    return create_server_app(services, blocks, launch.app), services


def main(argv: Sequence[str] | None = None) -> int:
    """Run the app until interrupted; returns the process exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if build_arg_parser().parse_args(argv).check:  # the diagnostics report, not the app
        from app.diagnostics import main as check_main

        return check_main(argv, os.environ, demo_manifest())
    from engine.errors import EngineError
    from tiles import TilesError

    try:
        launch = parse_launch_config(argv, os.environ, demo_manifest=demo_manifest())
        api, services = build_app(launch)
    except (AppError, TilesError, EngineError) as exc:
        print(f"geolens: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    config = launch.app
    if not config.allow_network_rasters and (os.environ.get("NO_PROXY") or os.environ.get("no_proxy")):
        log.warning("NO_PROXY is set: GDAL's network guard relies on a proxy setting that libcurl skips for "
                    "the hosts NO_PROXY lists, so trusted VRTs/WMS files could still reach them; unset NO_PROXY "
                    "to keep GDAL fully offline")
    print(f"GeoLens: {services.model_status.line}")
    print(f"GeoLens: serving http://{config.host}:{config.port} (Ctrl+C to stop)")
    try:
        # Open event streams (a browser tab) must not keep Ctrl+C from stopping the server.
        uvicorn.run(api, host=config.host, port=config.port, log_level="warning", timeout_graceful_shutdown=3)
    finally:
        services.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
