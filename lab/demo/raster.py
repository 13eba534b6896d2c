"""The demo raster: ``assets/demo/demo_scene.tif`` and its ground truth.

A 2 x 2 mosaic of synthetic scenes (rural / urban / industrial / rural, 1024 px each at 0.5 m,
UTM zone 33N) from the generator the demo model is trained on
(:func:`lab.synthetic.generate_mosaic`), written as a JPEG-compressed Cloud-Optimized GeoTIFF with
overviews by :func:`tiles.write_raster`, with its object footprints (scene CRS) in
``demo_scene_truth.geojson``. ``python assets/build_demo.py`` writes it (``--raster-only``: only
this) and records :func:`write_demo_raster`'s facts in ``demo.json`` under ``raster_info``.

Its "before" twin ``demo_scene_before.tif`` (:func:`write_demo_before`, same grid, an earlier
date drawn by :mod:`lab.synthetic.twin`) comes with ``demo_scene_change_truth.geojson`` (lon/lat
polygons with ``kind``, ``status`` new / removed / changed and ``label``); demo.json names them
under ``before_raster`` and ``change_truth`` (facts under ``before_raster_info``).
``python assets/build_demo.py --before-only`` writes only these.
"""

from __future__ import annotations

import json
from pathlib import Path

from lab.synthetic.mosaic import DEFAULT_LAYOUT, generate_mosaic

__all__ = [
    "BEFORE_NAME",
    "CHANGE_TRUTH_NAME",
    "RASTER_NAME",
    "TRUTH_NAME",
    "write_demo_before",
    "write_demo_raster",
]

RASTER_NAME = "demo_scene.tif"
TRUTH_NAME = "demo_scene_truth.geojson"
BEFORE_NAME = "demo_scene_before.tif"  # the same ground at an earlier date (same grid)
CHANGE_TRUTH_NAME = "demo_scene_change_truth.geojson"  # what changed, lon/lat polygons


def _write_cog(path: Path, scene) -> Path:
    from affine import Affine

    from tiles import write_raster

    return write_raster(
        path,
        scene.image,
        scene.crs,
        Affine(*scene.transform),
        layout="hwc",
        colorinterp=("red", "green", "blue"),
        compress="jpeg",
        cog=True,
    )


def write_demo_before(out_dir: Path, seed: int) -> dict:
    """Write the demo raster's "before" twin (:mod:`lab.synthetic.twin`: the mosaic of ``seed``
    at an earlier date, on the same grid as :data:`RASTER_NAME`) and its change truth (lon/lat
    GeoJSON); returns the facts recorded in demo.json under ``before_raster_info``."""
    from collections import Counter

    from lab.synthetic.twin import demo_twin_edits, twin_truth_geojson

    out_dir.mkdir(parents=True, exist_ok=True)
    edits, changes = demo_twin_edits(seed, DEFAULT_LAYOUT)
    scene = generate_mosaic(seed, DEFAULT_LAYOUT, edits=edits)
    path = _write_cog(out_dir / BEFORE_NAME, scene)
    truth = twin_truth_geojson(changes, scene.transform, scene.crs, BEFORE_NAME, RASTER_NAME)
    (out_dir / CHANGE_TRUTH_NAME).write_text(
        json.dumps(truth, separators=(",", ":")), encoding="utf-8"
    )
    width, height = scene.size_px
    return {
        "file": path.name,
        "change_truth": CHANGE_TRUTH_NAME,
        "after": RASTER_NAME,
        "seed": seed,
        "size_px": [width, height],
        "crs": scene.crs,
        "transform": list(scene.transform),
        "changes": dict(sorted(Counter(f"{c.label}" for c in changes).items())),
    }


def write_demo_raster(out_dir: Path, seed: int) -> dict:
    """Write the demo mosaic of ``seed`` (the shipped one: ``DemoRecipe.raster_seed``) and its
    ground truth into ``out_dir``; returns the facts recorded in demo.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    scene = generate_mosaic(seed, DEFAULT_LAYOUT)
    path = _write_cog(out_dir / RASTER_NAME, scene)
    truth = scene.to_geojson()
    (out_dir / TRUTH_NAME).write_text(json.dumps(truth, separators=(",", ":")), encoding="utf-8")
    width, height = scene.size_px
    return {
        "file": path.name,
        "ground_truth": TRUTH_NAME,
        "seed": seed,
        "layout": [list(row) for row in DEFAULT_LAYOUT],
        "class_windows": [list(w) for w in scene.class_windows],
        "size_px": [width, height],
        "crs": scene.crs,
        "transform": list(scene.transform),
        "pixel_size_m": scene.pixel_size_m,
        "objects": len(scene.objects),
    }
