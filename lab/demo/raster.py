"""The demo raster: ``assets/demo/demo_scene.tif`` and its ground truth.

A 2 x 2 mosaic of synthetic scenes (rural / urban / industrial / rural, 1024 px each at 0.5 m,
UTM zone 33N) from the generator the demo model is trained on
(:func:`lab.synthetic.generate_mosaic`), written as a JPEG-compressed Cloud-Optimized GeoTIFF with
overviews by :func:`tiles.write_raster`, with its object footprints (scene CRS) in
``demo_scene_truth.geojson``. ``python assets/build_demo.py`` writes it (``--raster-only``: only
this) and records :func:`write_demo_raster`'s facts in ``demo.json`` under ``raster_info``.
"""

from __future__ import annotations

import json
from pathlib import Path

from lab.synthetic.mosaic import DEFAULT_LAYOUT, generate_mosaic

__all__ = ["RASTER_NAME", "TRUTH_NAME", "write_demo_raster"]

RASTER_NAME = "demo_scene.tif"
TRUTH_NAME = "demo_scene_truth.geojson"


def write_demo_raster(out_dir: Path, seed: int) -> dict:
    """Write the demo mosaic of ``seed`` (the shipped one: ``DemoRecipe.raster_seed``) and its
    ground truth into ``out_dir``; returns the facts recorded in demo.json."""
    from affine import Affine

    from tiles import write_raster

    out_dir.mkdir(parents=True, exist_ok=True)
    scene = generate_mosaic(seed, DEFAULT_LAYOUT)
    path = write_raster(
        out_dir / RASTER_NAME,
        scene.image,
        scene.crs,
        Affine(*scene.transform),
        layout="hwc",
        colorinterp=("red", "green", "blue"),
        compress="jpeg",
        cog=True,
    )
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
