"""Process-wide resources of a running app: the raster catalog, the results store, the one engine.

:class:`AppServices` is built once by ``launch.py`` (or a test) and handed to the UI and the
server. Per-user state (which raster is shown, what is drawn, what is selected) lives in the
browser and in Gradio components, never here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.config import AppConfig, LaunchConfig, ModelSpec
from app.demo import DemoRaster, demo_before_raster, ensure_demo_raster
from app.map_view import Basemap, basemap_catalog
from app.results import RESULTS_FILENAME, ResultsStore

if TYPE_CHECKING:
    from engine.config import EngineConfig
    from engine.engine import Engine
    from engine.remote import RemoteConfig, RemoteEngine
    from tiles import Catalog, Raster

__all__ = ["CATALOG_STATE", "AppServices", "ModelStatus", "load_engine", "model_status_for", "open_policy",
           "open_services"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelStatus:
    """What the status line says about the model (``loaded`` False: asking is disabled)."""

    line: str
    loaded: bool
    name: str | None = None
    adapter: str | None = None
    is_demo: bool = False


NO_MODEL_LINE = (
    "No model loaded: the map, drawing, results and export work; asking needs a model "
    "(start with --model PATH, or build the demo model: python assets/build_demo.py)."
)


def model_status_for(spec: ModelSpec, engine: Engine | RemoteEngine | None, error: str | None = None) -> ModelStatus:
    """The status of the model after trying to load ``spec`` (``error``: why loading failed)."""
    if engine is None:
        if error is not None:
            return ModelStatus(line=f"Model not loaded ({error}). {NO_MODEL_LINE}", loaded=False)
        return ModelStatus(line=NO_MODEL_LINE, loaded=False)
    from engine.remote import RemoteEngine

    if isinstance(engine, RemoteEngine):  # served: the endpoint and the model name
        return ModelStatus(line=f"Model {engine.model_name} at {engine.endpoint}", loaded=True,
                           name=engine.model_name)
    placement = engine.placement  # where it runs and in which precision, for the header
    precision = "4-bit NF4" if placement.quantize else str(placement.base_dtype).removeprefix("torch.")
    device = f"{placement.device}, {precision}"
    adapter = engine.adapter_name
    if spec.is_demo:
        from engine.demo.manifest import read_demo_manifest

        line = f"{read_demo_manifest(spec.model).label} · on {device}"
    else:
        line = f"Model {engine.model_name}" + (f" + adapter {adapter}" if adapter else "")
        line += f" on {device}"
    return ModelStatus(line=line, loaded=True, name=engine.model_name, adapter=adapter,
                       is_demo=spec.is_demo)


def load_engine(spec: ModelSpec, engine_config: EngineConfig | RemoteConfig | None
                ) -> tuple[Engine | RemoteEngine | None, ModelStatus]:
    """Load the one engine of this process (with a ``RemoteConfig``: connect to the endpoint,
    checking that it serves the model). A demo model that fails to load leaves the app running
    without a model; a model the analyst named raises its ``EngineError``."""
    if engine_config is None:
        return None, model_status_for(spec, None)
    from engine.remote import RemoteConfig, RemoteEngine

    if isinstance(engine_config, RemoteConfig):  # errors (unreachable, unknown model) name the URL
        engine = RemoteEngine.connect(engine_config)
        return engine, model_status_for(spec, engine)
    from engine import EngineError
    from engine.engine import Engine

    try:
        if spec.is_demo:  # the demo's retriever is a saved embedder, not an open_clip name
            from engine.demo.manifest import load_demo_retriever

            engine = Engine.from_config(engine_config, retriever=load_demo_retriever(spec.model))
        else:
            engine = Engine.from_config(engine_config)
    except EngineError as exc:
        if not spec.is_demo:
            raise
        log.warning("the demo model could not be loaded: %s", exc)
        return None, model_status_for(spec, None, error=f"demo model failed to load: {exc}")
    return engine, model_status_for(spec, engine)


class AppServices:
    """Catalog + results store + engine + workspace folders of one running app."""

    def __init__(self, config: AppConfig, catalog: Catalog, store: ResultsStore,
                 engine: Engine | RemoteEngine | None, model_status: ModelStatus,
                 basemaps: tuple[Basemap, ...] = (), demo: DemoRaster | None = None) -> None:
        self.config = config
        self.catalog = catalog
        self.store = store
        self.engine = engine
        self.model_status = model_status
        self.basemaps = basemaps
        self.demo = demo
        self.opened_ids: list[str] = []  # rasters opened at start, first is shown first
        self.notices: list[str] = []  # what the first page should say (rasters not reopened)
        # Ground side (m) of the model's input it was trained on: the demo model's
        # ``recommended_region_m``; None for other models (whole-scene search tiles at native
        # resolution then, see app.scene_search).
        self.recommended_region_m: float | None = None

    @property
    def workspace(self) -> Path:
        return self.config.workspace

    @property
    def exports_dir(self) -> Path:
        return self.config.workspace / "exports"

    @property
    def uploads_dir(self) -> Path:
        return self.config.workspace / "uploads"

    def is_demo_raster(self, raster: Raster) -> bool:
        """True for the built-in demo raster (the demo model knows only such scenes)."""
        return self.demo is not None and raster.path.resolve() == self.demo.path.resolve()

    def owner_of(self, headers) -> str | None:
        """The analyst a request belongs to when several logins keep their results apart."""
        from app.logins import login_of

        return login_of(headers, self.config.logins) if self.config.multi_user else None

    def raster(self, raster_id: str) -> Raster:
        """The open raster with this catalog id (``tiles.UnknownRasterError`` otherwise)."""
        return self.catalog.get(raster_id)

    def catalog_list(self) -> list[Raster]:
        return self.catalog.list()

    def render_tile(self, raster_id: str, z: int, x: int, y: int, preset: str | None) -> bytes:
        """PNG tile of a catalog raster: Web Mercator when georeferenced, else pixel space."""
        from tiles import get_band_preset, render_pixel_tile, render_tile

        raster, source = self.catalog.get(raster_id), self.catalog.source(raster_id)
        preset = None if preset in (None, "", "auto") else preset
        if preset is not None:
            get_band_preset(preset)  # unknown names fail on every tile, not only on covered ones
        render = render_tile if raster.georeferenced else render_pixel_tile
        return render(raster, z, x, y, preset=preset, source=source)

    def warm_up(self) -> None:
        """Render the top tile of every open raster once, single-threaded, before serving: fills
        the display-statistics caches and does the renderers' lazy imports outside the server's
        thread pool (concurrent first imports of rio-tiler can fail)."""
        for raster in self.catalog_list():
            try:
                self.render_tile(raster.raster_id, 0, 0, 0, None)
            except Exception:
                log.warning("warm-up tile of %s failed", raster.path, exc_info=True)

    def close(self) -> None:
        """Release every open dataset and the results database."""
        self.catalog.close_all()
        self.store.close()

    # -- page-level styling (local fonts only: no request leaves the machine) ------------------
    @property
    def theme(self) -> Any:
        import gradio as gr

        return gr.themes.Default(
            font=["system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
            font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"],
        )

    css = """
    #geolens-model-status p { margin: 0; font-size: 0.9em; }
    #geolens-model-status.no-model p { color: #b45309; }
    .gl-title { align-items: baseline; gap: 12px; }
    .gl-title h1 { margin: 0; font-size: 1.5em; }
    .gl-title-name { flex: 0 0 auto !important; min-width: 0 !important; width: auto !important; }
    .gl-side { gap: 8px; }
    #geolens-status p, #geolens-stop-note p, #geolens-page p { margin: 0; }
    """
    page_head = '<meta name="referrer" content="no-referrer">'


CATALOG_STATE = "catalog.json"  # the rasters this workspace has open (ids survive restarts)


def open_policy(config: AppConfig):
    """What analysts may open: safe GDAL formats only (``--trusted-dir`` folders: any driver),
    GDAL's network off unless ``--allow-network-rasters``, and open-by-path limited to the
    ``--data-dir`` folders (plus the uploads folder) when they are set, or when the server is
    reachable from the network (then without ``--data-dir`` only uploads can be opened)."""
    from tiles import OpenPolicy

    uploads = config.workspace / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    if config.data_dirs:
        data_dirs = (*config.data_dirs, uploads)
    elif config.on_network:
        data_dirs = (uploads,)
    else:
        data_dirs = None
    return OpenPolicy(trusted_dirs=config.trusted_dirs, data_dirs=data_dirs,
                      allow_network=config.allow_network_rasters)


def _recommended_region_m(spec: ModelSpec) -> float | None:
    """The demo model's ``recommended_region_m`` (demo.json), None for other models."""
    if not spec.is_demo or spec.model is None:
        return None
    from engine.demo.manifest import read_demo_manifest

    try:
        return read_demo_manifest(spec.model).recommended_region_m
    except Exception:
        log.warning("demo manifest %s has no usable recommended_region_m", spec.model, exc_info=True)
        return None


def open_services(launch: LaunchConfig, *, engine: Engine | RemoteEngine | None = None,
                  model_status: ModelStatus | None = None) -> AppServices:
    """Workspace, catalog (with the configured or demo rasters), results store, engine.

    ``engine``/``model_status`` let a caller that already holds an engine (tests) pass it in;
    otherwise the engine described by ``launch.engine`` is loaded here.
    """
    from tiles import Catalog

    config = launch.app
    config.workspace.mkdir(parents=True, exist_ok=True)
    store = ResultsStore(config.workspace / RESULTS_FILENAME)
    demo = ensure_demo_raster() if config.use_demo_raster else None
    catalog = Catalog(config.workspace / "cache", policy=open_policy(config),
                      state_path=config.workspace / CATALOG_STATE)
    paths = list(config.rasters) or ([demo.path] if demo else [])
    if demo is not None and not config.rasters:  # the demo pair: its "before" twin (two dates)
        twin = demo_before_raster()
        paths += [twin] if twin is not None else []
    try:
        problems = catalog.restore()  # rasters opened before a restart keep their ids
        # The operator's own rasters (command line, demo) are trusted: any GDAL driver.
        opened_ids = [catalog.open(p, trusted=True) for p in paths]  # bad paths fail before a slow model load
        if engine is None and model_status is None:
            engine, model_status = load_engine(launch.model, launch.engine)
        elif model_status is None:
            model_status = model_status_for(launch.model, engine)
        basemaps = basemap_catalog() if config.basemaps else ()
    except BaseException:
        catalog.close_all()
        raise
    services = AppServices(config=config, catalog=catalog, store=store, engine=engine,
                           model_status=model_status, basemaps=basemaps, demo=demo)
    services.opened_ids = opened_ids
    services.notices = [str(p) for p in problems]
    services.recommended_region_m = _recommended_region_m(launch.model) if engine is not None else None
    services.warm_up()
    return services
