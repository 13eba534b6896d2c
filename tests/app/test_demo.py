"""The built-in demo: a demo raster on a fresh clone, and the demo model when it ships."""

from __future__ import annotations

import json

import pytest

from app import handlers
from app.asking import AskRequest
from app.config import parse_launch_config
from app.demo import DEMO_MANIFEST, demo_labels, ensure_demo_raster
from app.errors import AssetNotFoundError
from app.services import open_services
from engine.types import Task
from tests.app.conftest import write_tiny_demo
from tiles import open_raster


def test_shipped_demo_raster_is_georeferenced():
    demo = ensure_demo_raster()
    raster = open_raster(demo.path)
    assert raster.georeferenced and raster.count == 3 and "Demo raster" in demo.label


def test_missing_demo_raster_names_the_file_and_the_build_command(tmp_path):
    missing = tmp_path / "demo_scene.tif"
    with pytest.raises(AssetNotFoundError) as err:
        ensure_demo_raster(missing)
    assert str(missing) in str(err.value) and "python assets/build_demo.py" in str(err.value)


def test_demo_labels_come_from_demo_json(tmp_path):
    manifest = tmp_path / "demo.json"
    data = json.loads(DEMO_MANIFEST.read_text(encoding="utf-8"))
    manifest.write_text(json.dumps({**data, "scene_classes": ["a", "b"]}), encoding="utf-8")
    assert demo_labels(manifest) == ("a", "b")
    assert demo_labels() == tuple(data["scene_classes"])


def _services_with_demo(manifest, raster, workspace):
    args = ["--raster", str(raster), "--device", "cpu", "--workspace", str(workspace)]
    launch = parse_launch_config([*args, "--no-basemaps"], {}, demo_manifest=manifest)
    return open_services(launch)


def test_demo_model_loads_labelled_and_answers(tmp_path, tiny_engine, geo_tif):
    manifest = write_tiny_demo(tmp_path / "demo", engine=tiny_engine)
    services = _services_with_demo(manifest, geo_tif, tmp_path / "ws")
    try:
        status = services.model_status
        assert status.loaded and status.is_demo
        assert status.line.startswith("GeoLens demo model (test build)") and "cpu" in status.line
        raster_id = services.opened_ids[0]
        final = list(handlers.ask(services, AskRequest(raster_id, Task.CAPTION)))[-1]
        assert final.record is not None and final.record.adapter is not None
    finally:
        services.close()


def test_a_broken_demo_model_leaves_the_app_running(tmp_path, geo_tif):
    manifest = write_tiny_demo(tmp_path / "demo")  # manifest only: no adapter weights
    services = _services_with_demo(manifest, geo_tif, tmp_path / "ws")
    try:
        assert services.engine is None and not services.model_status.loaded
        assert "demo model failed to load" in services.model_status.line
    finally:
        services.close()
