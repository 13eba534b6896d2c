"""The built-in demo: a raster to open and a model to ask when ``launch.py`` gets no arguments.

The demo raster is ``assets/demo/demo_scene.tif``, shipped with the project: a 2 x 2 mosaic of
synthetic scenes (rural / urban / industrial / rural, 1024 px each at 0.5 m, UTM zone 33N) from
the generator the demo model is trained on (:func:`engine.data.generate_mosaic`), written as a
JPEG-compressed Cloud-Optimized GeoTIFF with overviews by :func:`tiles.write_raster`, with its
object footprints in ``demo_scene_truth.geojson``. :func:`write_demo_raster` makes it (used by
``assets/build_demo.py``); if the shipped file is missing, :func:`ensure_demo_raster` makes the
same raster once in ``<workspace>/demo/``.

Everything about the demo is labelled as a demo in the UI. The demo model is described by
``assets/demo/demo.json`` (read by ``engine.demo.manifest``); it is used only when no
``--model`` is given.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEMO_DIR",
    "DEMO_MANIFEST",
    "DEMO_RASTER",
    "DEMO_RASTER_SEED",
    "DemoRaster",
    "demo_manifest",
    "ensure_demo_raster",
    "write_demo_raster",
]

log = logging.getLogger(__name__)

DEMO_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo"
DEMO_RASTER = DEMO_DIR / "demo_scene.tif"
DEMO_MANIFEST = DEMO_DIR / "demo.json"
DEMO_RASTER_SEED = 7
RASTER_NAME = "demo_scene.tif"
TRUTH_NAME = "demo_scene_truth.geojson"


@dataclass(frozen=True)
class DemoRaster:
    """The demo raster's file and how it came to be (``origin``: shipped or generated)."""

    path: Path
    origin: str
    label: str


def demo_manifest() -> Path | None:
    """``assets/demo/demo.json`` when the demo model ships, else None."""
    return DEMO_MANIFEST if DEMO_MANIFEST.is_file() else None


def write_demo_raster(out_dir: Path, seed: int = DEMO_RASTER_SEED) -> dict:
    """Write the demo mosaic and its ground truth into ``out_dir``; returns facts for demo.json."""
    from affine import Affine

    from engine.data import generate_mosaic
    from tiles import write_raster

    out_dir.mkdir(parents=True, exist_ok=True)
    scene = generate_mosaic(seed)
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
        "layout": [list(row) for row in (("rural", "urban"), ("industrial", "rural"))],
        "class_windows": [list(w) for w in scene.class_windows],
        "size_px": [width, height],
        "crs": scene.crs,
        "transform": list(scene.transform),
        "pixel_size_m": scene.pixel_size_m,
        "objects": len(scene.objects),
    }


def ensure_demo_raster(workspace: Path) -> DemoRaster:
    """The shipped demo raster, or the same raster generated once into ``<workspace>/demo``."""
    if DEMO_RASTER.is_file():
        return DemoRaster(DEMO_RASTER, "shipped", "Demo raster (synthetic scene)")
    generated = workspace / "demo" / RASTER_NAME
    if not generated.is_file():
        write_demo_raster(generated.parent)
        log.info("generated the demo raster %s (assets/demo/%s is missing)", generated, RASTER_NAME)
    return DemoRaster(generated, "generated", "Demo raster (synthetic scene)")
