"""The built-in demo: a raster to open and a model to ask when ``launch.py`` gets no arguments.

Where the demo raster comes from, first match wins:

1. ``assets/demo/demo_scene.tif`` shipped with the project (the demo-model issue ships it);
2. a copy generated earlier into ``<workspace>/demo/``;
3. generated now by the synthetic scene generator ``engine.data.synthetic.generate_scene`` (the
   same generator the demo model is trained on), when that module exists;
4. generated now by :func:`fallback_scene` below: a small, deterministic, clearly labelled
   synthetic scene (fields, a river, roads, buildings) so the map works on a fresh clone.

Everything about the demo is labelled as a demo in the UI. The demo model is described by
``assets/demo/demo.json`` (written by ``assets/build_demo.py``, read by
``engine.demo.manifest``); it is used only when no ``--model`` is given.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DEMO_DIR",
    "DEMO_MANIFEST",
    "DEMO_RASTER",
    "DemoRaster",
    "demo_manifest",
    "ensure_demo_raster",
    "fallback_scene",
]

log = logging.getLogger(__name__)

DEMO_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo"
DEMO_RASTER = DEMO_DIR / "demo_scene.tif"
DEMO_MANIFEST = DEMO_DIR / "demo.json"
_GENERATED_NAME = "demo_scene.tif"
_FALLBACK_NAME = "demo_scene_fallback.tif"

# Fallback scene georeferencing: 1 m pixels in UTM zone 33N, north-up (about 45.1 N, 15.0 E).
FALLBACK_CRS = "EPSG:32633"
FALLBACK_ORIGIN_M = (500_000.0, 4_995_000.0)  # (left, top) in metres
FALLBACK_PIXEL_M = 1.0


@dataclass(frozen=True)
class DemoRaster:
    """The demo raster's file and how it came to be (``origin``: shipped, generated, fallback)."""

    path: Path
    origin: str
    label: str


def demo_manifest() -> Path | None:
    """``assets/demo/demo.json`` when the demo model ships, else None."""
    return DEMO_MANIFEST if DEMO_MANIFEST.is_file() else None


def fallback_scene(size_px: int = 512, seed: int = 7) -> np.ndarray:
    """A synthetic aerial-looking RGB scene, ``(size_px, size_px, 3)`` uint8, deterministic.

    Field patches, a meandering river, two roads and blocks of buildings; no real place.
    """
    rng = np.random.default_rng(seed)
    n = size_px
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    field_colors = np.array([[96, 140, 64], [150, 160, 80], [190, 170, 110], [70, 115, 55]], np.float32)
    cell = max(n // 6, 8)
    patch = (xx // cell + 3 * (yy // cell)).astype(int) % len(field_colors)
    image = field_colors[patch] + rng.normal(0.0, 6.0, (n, n, 3)).astype(np.float32)
    river_x = 0.3 * n + 0.08 * n * np.sin(yy / n * 2 * np.pi * 1.5)
    image[np.abs(xx - river_x) < n * 0.025] = (52, 92, 140)
    road = (np.abs(yy - 0.62 * n) < n * 0.008) | (np.abs(xx - 0.72 * n) < n * 0.008)
    image[road] = (128, 128, 128)
    for i in range(12):
        x0 = int(0.76 * n + (i % 3) * 0.07 * n)
        y0 = int(0.12 * n + (i // 3) * 0.11 * n)
        w, h = int(0.045 * n), int(0.06 * n)
        image[y0:y0 + h, x0:x0 + w] = (170, 70, 60) if i % 2 else (200, 200, 195)
    return np.clip(image, 0, 255).astype(np.uint8)


def _fallback_transform():
    from affine import Affine

    left, top = FALLBACK_ORIGIN_M
    return Affine(FALLBACK_PIXEL_M, 0.0, left, 0.0, -FALLBACK_PIXEL_M, top)


def _write_rgb(path: Path, image: np.ndarray, crs: str, transform) -> None:
    from tiles import write_raster

    write_raster(path, image, crs, transform, layout="hwc", colorinterp=("red", "green", "blue"),
                 tiled=True, overviews=(2, 4))


def _from_synthetic_generator(path: Path) -> bool:
    """Generate with ``engine.data.synthetic.generate_scene`` if that module exists."""
    if importlib.util.find_spec("engine.data.synthetic") is None:
        return False
    synthetic = importlib.import_module("engine.data.synthetic")
    scene = synthetic.generate_scene(seed=0, size_px=512)
    from affine import Affine

    image = np.asarray(scene.image)
    transform = scene.transform if isinstance(scene.transform, Affine) else Affine(*scene.transform)
    _write_rgb(path, image, scene.crs, transform)
    return True


def ensure_demo_raster(workspace: Path) -> DemoRaster:
    """The demo raster, generating it into ``<workspace>/demo`` on first launch if needed."""
    if DEMO_RASTER.is_file():
        return DemoRaster(DEMO_RASTER, "shipped", "Demo raster (synthetic scene)")
    generated = workspace / "demo" / _GENERATED_NAME
    fallback = workspace / "demo" / _FALLBACK_NAME
    if generated.is_file():
        return DemoRaster(generated, "generated", "Demo raster (synthetic scene)")
    if _from_synthetic_generator(generated):
        log.info("generated the demo raster %s with engine.data.synthetic", generated)
        return DemoRaster(generated, "generated", "Demo raster (synthetic scene)")
    if not fallback.is_file():
        _write_rgb(fallback, fallback_scene(), FALLBACK_CRS, _fallback_transform())
        log.info("wrote the fallback demo raster %s", fallback)
    return DemoRaster(fallback, "fallback", "Demo raster (built-in synthetic placeholder)")
