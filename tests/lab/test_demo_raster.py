"""The demo raster written by the build (lab.demo.raster): a georeferenced COG of the generator's
mosaic, with its ground truth and the facts recorded in demo.json."""

from __future__ import annotations

import json

from pyproj import CRS

from lab.demo.raster import write_demo_raster
from lab.synthetic import generate_mosaic
from tiles import open_raster


def test_generated_demo_raster_matches_the_generator(tmp_path):
    info = write_demo_raster(tmp_path, seed=3)
    raster = open_raster(tmp_path / info["file"])
    assert CRS.from_user_input(raster.crs) == CRS.from_user_input(info["crs"])
    assert (raster.width, raster.height) == tuple(info["size_px"])
    assert info["objects"] > 0 and (tmp_path / info["ground_truth"]).is_file()


def test_shipped_demo_raster_is_what_the_recorded_seed_generates():
    from engine.demo import DEMO_MANIFEST

    recorded = json.loads(DEMO_MANIFEST.read_text(encoding="utf-8"))["raster_info"]
    scene = generate_mosaic(recorded["seed"])
    assert list(scene.transform) == recorded["transform"]
    assert [list(w) for w in scene.class_windows] == recorded["class_windows"]
    assert len(scene.objects) == recorded["objects"]
