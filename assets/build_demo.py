"""Rebuild everything in ``assets/demo``: the demo model (engine) and the demo raster (tiles).

    python assets/build_demo.py                  # full build (about 3-4 h on 2 CPU cores)
    python assets/build_demo.py --raster-only    # only demo_scene.tif (+ ground truth), seconds
    python assets/build_demo.py --no-ablations   # the shipped model only

The model side is :func:`engine.demo.build.build_demo` (work files in ``workspace/demo_build``,
resumable). The raster is a 2 x 2 mosaic of synthetic scenes (rural / urban / industrial /
rural, 1024 px each at 0.5 m, UTM zone 33N) from :func:`engine.data.generate_mosaic`, written as
a JPEG-compressed Cloud-Optimized GeoTIFF with overviews by :func:`tiles.write_raster`; its
object footprints go to ``demo_scene_truth.geojson`` (map coordinates of the raster CRS). This
script lives outside both packages because it needs both: ``engine`` never imports rasterio.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RASTER_NAME = "demo_scene.tif"
TRUTH_NAME = "demo_scene_truth.geojson"


def build_raster(out: Path, seed: int) -> dict:
    """Write the demo mosaic and its ground truth to ``out``; returns facts for demo.json."""
    from affine import Affine

    from engine.data import generate_mosaic
    from tiles import write_raster

    scene = generate_mosaic(seed)
    path = write_raster(
        out / RASTER_NAME,
        scene.image,
        scene.crs,
        Affine(*scene.transform),
        layout="hwc",
        colorinterp=("red", "green", "blue"),
        compress="jpeg",
        cog=True,
    )
    truth = scene.to_geojson()
    (out / TRUTH_NAME).write_text(json.dumps(truth, separators=(",", ":")), encoding="utf-8")
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


def _record_raster(out: Path, info: dict) -> None:
    manifest = out / "demo.json"
    data = json.loads(manifest.read_text(encoding="utf-8")) if manifest.is_file() else {}
    data["raster"] = info["file"]
    data["raster_info"] = info
    manifest.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "assets" / "demo")
    parser.add_argument("--work", type=Path, default=REPO / "workspace" / "demo_build")
    parser.add_argument("--raster-only", action="store_true")
    parser.add_argument("--no-ablations", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from engine.demo.recipe import DemoRecipe

    recipe = DemoRecipe()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.raster_only:
        import torch

        from engine.demo.build import build_demo

        torch.set_num_threads(args.threads)
        build_demo(args.out, args.work, recipe, ablations=not args.no_ablations)
    info = build_raster(args.out, recipe.raster_seed)
    _record_raster(args.out, info)
    print(f"demo written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
