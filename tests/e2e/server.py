"""Start the real GeoLens app (services, Gradio UI, FastAPI routes, uvicorn) in this process
on a free port of 127.0.0.1, with the tiny engine, for the browser and queue tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.config import AppConfig, LaunchConfig, ModelSpec
from app.server import RunningServer, create_server_app, start_server
from app.services import AppServices, model_status_for, open_services
from app.ui import build_blocks

__all__ = ["LiveApp", "start_app"]


@dataclass
class LiveApp:
    """A running app: its URL, its services (catalog, store, engine) and its server thread."""

    services: AppServices
    server: RunningServer

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        self.server.stop()
        self.services.close()


def start_app(workspace: Path, rasters: tuple[Path, ...], engine=None, basemaps: bool = True) -> LiveApp:
    """Serve the app over ``workspace`` (results persist there across restarts)."""
    app_config = AppConfig(rasters=rasters, workspace=workspace, port=0, basemaps=basemaps,
                           use_demo_raster=not rasters)
    launch = LaunchConfig(app=app_config, model=ModelSpec(model="tiny" if engine else None, device="cpu"),
                          engine=None)
    services = open_services(launch, engine=engine, model_status=model_status_for(launch.model, engine))
    api = create_server_app(services, build_blocks(services), app_config)
    return LiveApp(services=services, server=start_server(api, "127.0.0.1", 0))
