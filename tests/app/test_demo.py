"""The built-in demo: a demo raster on a fresh clone, and the demo model when it ships."""

from __future__ import annotations

from pyproj import CRS

from app import handlers
from app.asking import AskRequest
from app.config import parse_launch_config
from app.demo import ensure_demo_raster, write_demo_raster
from app.services import open_services
from engine.types import Task
from tests.app.conftest import write_tiny_demo
from tiles import open_raster


def test_demo_raster_is_made_once_and_georeferenced(tmp_path):
    first = ensure_demo_raster(tmp_path)
    raster = open_raster(first.path)
    assert raster.georeferenced and raster.count == 3 and "Demo raster" in first.label
    mtime = first.path.stat().st_mtime_ns
    again = ensure_demo_raster(tmp_path)
    assert again.path == first.path and again.path.stat().st_mtime_ns == mtime


def test_generated_demo_raster_matches_the_generator(tmp_path):
    info = write_demo_raster(tmp_path, seed=3)
    raster = open_raster(tmp_path / info["file"])
    assert CRS.from_user_input(raster.crs) == CRS.from_user_input(info["crs"])
    assert (raster.width, raster.height) == tuple(info["size_px"])
    assert info["objects"] > 0 and (tmp_path / info["ground_truth"]).is_file()


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
