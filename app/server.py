"""The HTTP server: one FastAPI app serving map tiles, the map's static assets and the Gradio UI.

Routes added next to Gradio (which is mounted at ``/``):

* ``GET /tiles/{raster_id}/{z}/{x}/{y}.png[?preset=NAME]`` renders a 256 px PNG tile of a raster
  the catalog holds. Only catalog ids are accepted; a path never comes from the URL. Unknown ids
  answer 404 with a JSON error. These run in FastAPI's thread pool, not in Gradio's queue, so
  the map stays responsive while the model works.
* ``GET /assets/vendor/...`` and ``GET /assets/map/...`` serve files below those folders of
  ``assets/`` only (Leaflet, Leaflet.draw, our map JS/CSS); anything else is 404. Gradio's own
  ``/assets/<file>`` (flat names) is untouched.

* ``GET /results/features?space=lonlat|pixel&bbox=x0,y0,x1,y1[&raster=ID][&limit=N]`` the
  stored answers whose bounding box meets the map view (lon/lat, or raster pixels of raster
  ``ID``), newest first, at most ``limit`` answers: the map draws results from here, never from
  its component value, so 100,000 stored answers cost a page what 10 do.

Every request passes a Host/Origin check first (loopback names, the bind address and
``--allowed-host`` names only), so a web page that rebinds its DNS name to 127.0.0.1 cannot talk
to GeoLens. With logins every route, Gradio's included, sits behind HTTP basic auth; wrong
passwords are answered ever more slowly per client address, and a burst of them is refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
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

from app.config import AppConfig, Auth, is_loopback
from app.logins import credentials, login_of

if TYPE_CHECKING:
    import gradio as gr
    import uvicorn

    from app.services import AppServices

__all__ = [
    "ASSETS_DIR",
    "SERVED_ASSET_AREAS",
    "RunningServer",
    "allowed_host_names",
    "create_server_app",
    "login_of",
    "start_server",
]

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


class _LoginThrottle:
    """Failed logins per client address: each failure delays the next answer (0.5 s doubling,
    at most 8 s); more than ``burst`` failures in ``window_s`` are refused outright (429)."""

    def __init__(self, burst: int = 20, window_s: float = 600.0) -> None:
        self.burst, self.window_s = burst, window_s
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def recent(self, client: str) -> int:
        now = time.monotonic()
        with self._lock:
            times = [t for t in self._failures.get(client, []) if now - t < self.window_s]
            self._failures[client] = times
            return len(times)

    def fail(self, client: str) -> float:
        """Record a failure; returns the delay before answering it."""
        with self._lock:
            times = self._failures.setdefault(client, [])
            times.append(time.monotonic())
            return min(0.5 * 2 ** (len(times) - 1), 8.0)

    def succeed(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)


class _BasicAuthMiddleware(BaseHTTPMiddleware):
    """HTTP basic auth on every route (tiles and assets included, not only Gradio's)."""

    def __init__(self, app, logins: tuple[Auth, ...]) -> None:
        super().__init__(app)
        self._logins = {a.username.encode(): a.password.encode() for a in logins}
        self.throttle = _LoginThrottle()

    def _allowed(self, creds: tuple[str, str]) -> bool:
        user, password = creds[0].encode(), creds[1].encode()
        ok = False
        for known_user, known_password in self._logins.items():  # constant time per login
            ok |= secrets.compare_digest(user, known_user) & secrets.compare_digest(password, known_password)
        return ok

    async def dispatch(self, request: Request, call_next):
        client = request.client.host if request.client else "?"
        if self.throttle.recent(client) >= self.throttle.burst:
            return Response("Too many failed logins from this address; wait 10 minutes.", status_code=429,
                            headers={"Retry-After": str(int(self.throttle.window_s))})
        creds = credentials(request.headers.get("authorization"))
        if creds is not None and self._allowed(creds):
            self.throttle.succeed(client)
            return await call_next(request)
        if creds is not None:  # a wrong password (no header at all is the browser's first try)
            delay = self.throttle.fail(client)
            log.warning("failed login for user %r from %s", creds[0][:64], client)
            await _sleep(delay)
        return Response("GeoLens needs a login.", status_code=401,
                        headers={"WWW-Authenticate": 'Basic realm="GeoLens"'})


_sleep = asyncio.sleep  # the failed-login delay (tests replace it)
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def allowed_host_names(config: AppConfig) -> frozenset[str]:
    """Host names the server answers to: loopback names, the bind address when it is a specific
    one, and ``--allowed-host`` names (lower case, no port)."""
    names = set(_LOOPBACK_NAMES) | set(config.allowed_hosts)
    if config.host not in ("0.0.0.0", "::", ""):
        names.add(config.host.strip("[]").lower())
    return frozenset(names)


def _host_name(value: str) -> str:
    """``host`` of ``host[:port]`` / ``[v6]:port``, lower case."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _host_allowed(name: str, allowed: frozenset[str]) -> bool:
    if name in allowed:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback and is_loopback(name)
    except ValueError:
        return False


class _HostOriginMiddleware(BaseHTTPMiddleware):
    """Refuse requests whose Host (or Origin) is not a name this server is meant to be reached
    by: a page on evil.example that rebinds its name to 127.0.0.1 still sends
    ``Host: evil.example`` and is refused before any route runs."""

    def __init__(self, app, allowed: frozenset[str]) -> None:
        super().__init__(app)
        self._allowed = allowed

    async def dispatch(self, request: Request, call_next):
        host = _host_name(request.headers.get("host", ""))
        if not _host_allowed(host, self._allowed):
            return _error(421, f"GeoLens does not answer to the host name {host!r} (DNS rebinding "
                               "protection). Open it as http://127.0.0.1:PORT, or start it with "
                               f"--allowed-host {host or 'NAME'} if that name is really yours.")
        origin = request.headers.get("origin")
        if origin is not None:
            origin_host = _host_name(origin.split("://", 1)[-1].split("/", 1)[0]) if "://" in origin else ""
            if not _host_allowed(origin_host, self._allowed):
                return _error(403, f"requests from pages at {origin!r} are refused; GeoLens only "
                                   "answers its own pages")
        return await call_next(request)


def create_server_app(services: AppServices, blocks: gr.Blocks, config: AppConfig) -> FastAPI:
    """FastAPI app with the tile and asset routes, Gradio mounted at ``/``."""
    import gradio as gr

    api = FastAPI(title="GeoLens", docs_url=None, redoc_url=None, openapi_url=None)

    @api.get("/tiles/{raster_id}/{z}/{x}/{y}.png")
    def tile(raster_id: str, z: int, x: int, y: int, preset: str | None = None) -> Response:
        return _tile(services, raster_id, z, x, y, preset)

    for area in SERVED_ASSET_AREAS:
        api.add_api_route(f"/assets/{area}/{{path:path}}", _asset_route(area), methods=["GET"])

    @api.get("/results/features")
    def results_features(request: Request, bbox: str, space: str = "lonlat", raster: str | None = None,
                         limit: int = 1000) -> Response:
        from app.handlers import map_features

        try:
            collection = map_features(services, bbox=bbox, space=space, raster_id=raster, limit=limit,
                                      owner=services.owner_of(request.headers))
        except (ValueError, KeyError) as exc:
            return _error(400, str(exc))
        return JSONResponse(collection, headers={"Cache-Control": "no-store"})

    @api.get("/healthz")
    def healthz() -> dict:
        return {"ok": True, "rasters": len(services.catalog_list()), "model": services.model_status.line}

    # Middlewares run outside-in in reverse order of adding: Host/Origin first, then the login.
    if config.logins:
        api.add_middleware(_BasicAuthMiddleware, logins=config.logins)
    api.add_middleware(_HostOriginMiddleware, allowed=allowed_host_names(config))
    return gr.mount_gradio_app(
        api, blocks, path="/", server_name=config.host, server_port=config.port,
        footer_links=[], show_error=True, ssr_mode=False, mcp_server=False,
        allowed_paths=[str(services.exports_dir.resolve())],
        max_file_size=config.max_upload_mb * 1024 * 1024,
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

