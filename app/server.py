"""The HTTP server: one FastAPI app serving map tiles, the map's static assets and the Gradio UI.

Routes added next to Gradio (which is mounted at ``/``):

* ``GET /tiles/{raster_id}/{z}/{x}/{y}.png[?preset=NAME]`` renders a 256 px PNG tile of a raster
  the catalog holds. Only catalog ids are accepted; a path never comes from the URL. Unknown ids
  answer 404 with a JSON error. These run in FastAPI's thread pool, not in Gradio's queue, so
  the map stays responsive while the model works.
* ``GET /assets/vendor/...`` and ``GET /assets/map/...`` serve files below those folders of
  ``assets/`` only (Leaflet, Leaflet.draw, our map JS/CSS); anything else is 404. Gradio's own
  ``/assets/<file>`` (flat names) is untouched.

With ``--auth`` every route, Gradio's included, sits behind HTTP basic auth.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.middleware.base import BaseHTTPMiddleware

from app.config import AppConfig, Auth

if TYPE_CHECKING:
    import gradio as gr
    import uvicorn

    from app.services import AppServices

__all__ = ["ASSETS_DIR", "SERVED_ASSET_AREAS", "RunningServer", "create_server_app", "start_server"]

log = logging.getLogger(__name__)

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
SERVED_ASSET_AREAS = ("vendor", "map")
_TILE_CACHE = "private, max-age=300"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _tile(services: AppServices, raster_id: str, z: int, x: int, y: int, preset: str | None) -> Response:
    from tiles import BandPresetError, TileError, TilesError, UnknownRasterError

    try:
        png = services.render_tile(raster_id, z, x, y, preset)
    except UnknownRasterError:
        return _error(404, f"no open raster has id {raster_id!r}; open the raster in the app first")
    except (TileError, BandPresetError) as exc:
        return _error(400, str(exc))
    except TilesError as exc:
        log.warning("tile %s/%d/%d/%d failed: %s", raster_id, z, x, y, exc)
        return _error(500, str(exc))
    except Exception as exc:
        log.exception("tile %s/%d/%d/%d failed unexpectedly", raster_id, z, x, y)
        return _error(500, f"tile rendering failed ({type(exc).__name__}: {exc}); see the server log")
    return Response(content=png, media_type="image/png", headers={"Cache-Control": _TILE_CACHE})


def _asset(area: str, path: str) -> Response:
    base = (ASSETS_DIR / area).resolve()
    try:
        target = (base / path).resolve()
    except (OSError, ValueError):
        return _error(404, "no such asset")
    if not target.is_relative_to(base) or not target.is_file():
        return _error(404, f"no such asset: /assets/{area}/{path}")
    return FileResponse(target, headers={"Cache-Control": "no-cache"})


def _asset_route(area: str):
    """Endpoint serving ``assets/<area>/<path>``; its only parameter is the path."""

    def endpoint(path: str) -> Response:
        return _asset(area, path)

    return endpoint


class _BasicAuthMiddleware(BaseHTTPMiddleware):
    """HTTP basic auth on every route (tiles and assets included, not only Gradio's)."""

    def __init__(self, app, auth: Auth) -> None:
        super().__init__(app)
        self._user = auth.username.encode()
        self._password = auth.password.encode()

    def _allowed(self, header: str | None) -> bool:
        if not header or not header.lower().startswith("basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        user_ok = secrets.compare_digest(user, self._user)
        password_ok = secrets.compare_digest(password, self._password)
        return user_ok and password_ok

    async def dispatch(self, request: Request, call_next):
        if self._allowed(request.headers.get("authorization")):
            return await call_next(request)
        return Response("GeoLens needs a login.", status_code=401,
                        headers={"WWW-Authenticate": 'Basic realm="GeoLens"'})


def create_server_app(services: AppServices, blocks: gr.Blocks, config: AppConfig) -> FastAPI:
    """FastAPI app with the tile and asset routes, Gradio mounted at ``/``."""
    import gradio as gr

    api = FastAPI(title="GeoLens", docs_url=None, redoc_url=None, openapi_url=None)

    @api.get("/tiles/{raster_id}/{z}/{x}/{y}.png")
    def tile(raster_id: str, z: int, x: int, y: int, preset: str | None = None) -> Response:
        return _tile(services, raster_id, z, x, y, preset)

    for area in SERVED_ASSET_AREAS:
        api.add_api_route(f"/assets/{area}/{{path:path}}", _asset_route(area), methods=["GET"])

    @api.get("/healthz")
    def healthz() -> dict:
        return {"ok": True, "rasters": len(services.catalog_list()), "model": services.model_status.line}

    if config.auth is not None:
        api.add_middleware(_BasicAuthMiddleware, auth=config.auth)
    return gr.mount_gradio_app(
        api, blocks, path="/", server_name=config.host, server_port=config.port,
        footer_links=[], show_error=True, ssr_mode=False, mcp_server=False,
        allowed_paths=[str(services.exports_dir.resolve())],
        theme=services.theme, css=services.css, head=services.page_head,
    )


@dataclass
class RunningServer:
    """A uvicorn server running in a background thread (tests, notebooks)."""

    server: uvicorn.Server
    thread: threading.Thread
    url: str

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask uvicorn to exit and wait for its thread."""
        self.server.should_exit = True
        self.thread.join(timeout_s)


def start_server(app: FastAPI, host: str, port: int, timeout_s: float = 60.0) -> RunningServer:
    """Serve ``app`` from a daemon thread; returns once it accepts connections."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           timeout_graceful_shutdown=3))
    thread = threading.Thread(target=server.run, name="geolens-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the GeoLens server did not start on {host}:{port}")
        time.sleep(0.05)
    bound_port = server.servers[0].sockets[0].getsockname()[1] if port == 0 else port
    return RunningServer(server=server, thread=thread, url=f"http://{host}:{bound_port}")

