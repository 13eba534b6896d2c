"""Fixtures for the app tests: real rasters on disk, services over a tmp workspace, and (once per
session) a tiny random engine built by tests/engine/tiny.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import AppConfig, LaunchConfig, ModelSpec
from tests.app.rasters import write_geo_raster, write_plain_png


@pytest.fixture(scope="session")
def raster_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("rasters")
    write_geo_raster(folder / "scene.tif")
    write_plain_png(folder / "photo.png")
    return folder


@pytest.fixture(scope="session")
def geo_tif(raster_dir) -> Path:
    return raster_dir / "scene.tif"


@pytest.fixture(scope="session")
def plain_png(raster_dir) -> Path:
    return raster_dir / "photo.png"


def make_launch(workspace: Path, rasters=(), model: str | None = None, **app_fields) -> LaunchConfig:
    """A LaunchConfig for tests: no basemaps (no leafmap import), given rasters, optional model."""
    app = AppConfig(rasters=tuple(rasters), workspace=workspace, basemaps=app_fields.pop("basemaps", False),
                    use_demo_raster=not rasters, **app_fields)
    return LaunchConfig(app=app, model=ModelSpec(model=model, device="cpu"), engine=None)


@pytest.fixture()
def services(tmp_path, geo_tif, plain_png):
    """Services without a model over a fresh workspace, with the GeoTIFF and the PNG open."""
    from app.services import open_services

    svc = open_services(make_launch(tmp_path / "ws", rasters=(geo_tif, plain_png)))
    yield svc
    svc.close()


def tiny_engine_config():
    """The tiny random 'paper' model on CPU, with short answers so tests stay fast."""
    from engine.config import EngineConfig, GenerationConfig, PrompterConfig
    from tests.engine.tiny import cached_tiny_model_dir

    return EngineConfig(backbone="paper", model_path=cached_tiny_model_dir("paper"), device="cpu",
                        generation=GenerationConfig(max_new_tokens=12), prompter=PrompterConfig(num_tokens=8))


@pytest.fixture(scope="session")
def tiny_engine():
    """A real engine (tiny random weights: answers are gibberish, the wiring is real)."""
    from engine.engine import Engine

    return Engine.from_config(tiny_engine_config())


@pytest.fixture()
def engine_services(tmp_path, geo_tif, plain_png, tiny_engine):
    """Services with the tiny engine over a fresh workspace, GeoTIFF and PNG open."""
    from app.services import model_status_for, open_services

    launch = make_launch(tmp_path / "ws", rasters=(geo_tif, plain_png), model="tiny")
    svc = open_services(launch, engine=tiny_engine,
                        model_status=model_status_for(launch.model, tiny_engine))
    yield svc
    svc.close()


def write_tiny_demo(folder: Path, engine=None) -> Path:
    """A demo laid out like assets/demo (``demo.json`` + model + adapter) around the tiny model.

    Without ``engine`` only the manifest is written (enough for config parsing); with one, its
    (untrained) adapter is saved so that the demo really loads.
    """
    import json

    from tests.engine.tiny import cached_tiny_model_dir

    folder.mkdir(parents=True, exist_ok=True)
    if engine is not None:
        from engine.model.adapter import save_adapter

        save_adapter(engine.vlm, folder / "adapter")
    manifest = {"label": "GeoLens demo model (test build)", "backbone": "paper",
                "model": str(cached_tiny_model_dir("paper")), "adapter": "adapter",
                "scene_classes": ["rural", "urban", "industrial"], "recommended_region_m": 64.0}
    path = folder / "demo.json"
    path.write_text(json.dumps(manifest), encoding="utf-8")
    return path
