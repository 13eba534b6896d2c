"""The built-in demo: a raster to open and a model to ask when ``launch.py`` gets no arguments.

The demo raster is ``assets/demo/demo_scene.tif``, shipped with the project: a 2 x 2 mosaic of
synthetic scenes (rural / urban / industrial / rural, UTM zone 33N) with its object footprints in
``demo_scene_truth.geojson``. ``python assets/build_demo.py`` writes both (``lab.demo.raster``);
:func:`ensure_demo_raster` only opens the shipped file and says how to rebuild it when missing.

Everything about the demo is labelled as a demo in the UI. The demo model is described by
``assets/demo/demo.json`` (read by ``engine.demo.manifest``: label, scene classes, region size);
it is used only when no ``--model`` is given. The raster's "before" twin
(``demo_scene_before.tif``, ``before_raster`` in demo.json) makes the demo pair for two dates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from app.errors import AssetNotFoundError

__all__ = [
    "DEMO_DIR",
    "DEMO_MANIFEST",
    "DEMO_RASTER",
    "DemoRaster",
    "demo_before_raster",
    "demo_labels",
    "demo_manifest",
    "ensure_demo_raster",
]

DEMO_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo"
DEMO_RASTER = DEMO_DIR / "demo_scene.tif"
DEMO_MANIFEST = DEMO_DIR / "demo.json"


@dataclass(frozen=True)
class DemoRaster:
    """The shipped demo raster's file and the name the raster list shows."""

    path: Path
    label: str


def demo_manifest() -> Path | None:
    """``assets/demo/demo.json`` when the demo model ships, else None."""
    return DEMO_MANIFEST if DEMO_MANIFEST.is_file() else None


def demo_labels(manifest: Path = DEMO_MANIFEST) -> tuple[str, ...]:
    """The scene classes the demo model was trained to name (``scene_classes`` in demo.json)."""
    from engine.demo.manifest import read_demo_manifest

    return read_demo_manifest(manifest).scene_classes


def ensure_demo_raster(path: Path = DEMO_RASTER) -> DemoRaster:
    """The shipped demo raster; :class:`AssetNotFoundError` naming the file when it is missing."""
    if not path.is_file():
        raise AssetNotFoundError(
            f"the demo raster {str(path)!r} is missing (a broken checkout?); write it again with "
            "`python assets/build_demo.py --raster-only`, or start with --raster PATH"
        )
    return DemoRaster(path, "Demo raster (synthetic scene)")


def demo_before_raster(manifest: Path | None = None) -> Path | None:
    """The demo raster's "before" twin (``before_raster`` in ``assets/demo/demo.json``), None
    when the manifest names none or the file is missing."""
    manifest = manifest or DEMO_MANIFEST
    try:
        name = json.loads(manifest.read_text(encoding="utf-8")).get("before_raster")
    except (OSError, ValueError):
        return None
    path = manifest.parent / str(name) if name else None
    return path if path is not None and path.is_file() else None
