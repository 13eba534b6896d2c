"""GeoLens app: the Gradio UI (map, panels, results store). Thin wiring over tiles and engine.

Modules, edge to core:

* :mod:`app.config`    flags + ``GEOLENS_*`` environment -> :class:`AppConfig` / ``EngineConfig``
* :mod:`app.services`  the process's catalog, results store and one engine (:class:`AppServices`)
* :mod:`app.server`    FastAPI: ``/tiles/{id}/{z}/{x}/{y}.png``, ``/assets/...``, Gradio at ``/``
* :mod:`app.ui`        Gradio layout and event wiring (errors -> ``gr.Error``)
* :mod:`app.handlers`  every UI action as a plain typed function (tested without a browser)
* :mod:`app.asking`    drawn region -> crop -> engine -> result record
* :mod:`app.map_view`  the Leaflet map component (``assets/map``) and its value contract
* :mod:`app.results`   the results store (SQLite in the workspace: history, R*-tree, counts)
* :mod:`app.export`    GeoJSON (RFC 7946) and GeoPackage export (pixel results kept apart)
* :mod:`app.demo`      the built-in demo raster / model
* :mod:`app.scanning`  whole-scene search core: tiles -> engine -> merged objects, checkpoints
* :mod:`app.scene_search` the app's tile-by-tile search (progress, Stop, one record)
* :mod:`app.scan`      ``python -m app.scan`` (batch scans to GeoPackage); :mod:`app.scan_ray` Ray
* :mod:`app.compare`   two dates: before/after pairs, change questions
* :mod:`app.diagnostics` ``launch.py --check``
* :mod:`app.logins`    who is logged in (results per analyst)

Importing ``app`` stays light (no gradio, no torch); import the submodules you need.
"""

from app.config import AppConfig, Auth, LaunchConfig, ModelSpec, parse_launch_config
from app.errors import (
    AppConfigError,
    AppError,
    AssetNotFoundError,
    NoModelError,
    ResultsStoreError,
    UserInputError,
)
from app.results import ResultBox, ResultRecord, ResultsStore

__all__ = [
    "AppConfig",
    "AppConfigError",
    "AppError",
    "AssetNotFoundError",
    "Auth",
    "LaunchConfig",
    "ModelSpec",
    "NoModelError",
    "ResultBox",
    "ResultRecord",
    "ResultsStore",
    "ResultsStoreError",
    "UserInputError",
    "parse_launch_config",
]
