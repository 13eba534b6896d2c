"""Rebuild everything in ``assets/demo``: the demo model and the demo raster.

    python assets/build_demo.py                  # full build (about 9 h on 2 CPU cores)
    python assets/build_demo.py --raster-only    # only demo_scene.tif (+ ground truth), seconds
    python assets/build_demo.py --before-only    # only the before twin demo_scene_before.tif
                                                 # (+ change truth), seconds
    python assets/build_demo.py --no-ablations   # the shipped model only
    python assets/build_demo.py --device cuda --steps-scale 20 --work workspace/demo_x20
                                                 # 20x longer training stages on a GPU

The model side is :func:`lab.demo.build.build_demo` (work files in ``workspace/demo_build``,
resumable); the raster is :func:`lab.demo.raster.write_demo_raster` (through ``tiles``: the
engine never imports rasterio). ``assets/build_demo.py`` only calls :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from engine.atomic import write_text_atomic
from engine.errors import ConfigError
from lab.demo.build import build_demo
from lab.demo.raster import write_demo_before, write_demo_raster
from lab.demo.recipe import DemoRecipe, scale_steps

__all__ = ["main"]

REPO = Path(__file__).resolve().parents[2]


def _record_raster(out: Path, info: dict) -> None:
    manifest = out / "demo.json"
    data = json.loads(manifest.read_text(encoding="utf-8")) if manifest.is_file() else {}
    data["raster"] = info["file"]
    data["raster_info"] = info
    write_text_atomic(manifest, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _record_before(out: Path, info: dict) -> None:
    manifest = out / "demo.json"
    data = json.loads(manifest.read_text(encoding="utf-8")) if manifest.is_file() else {}
    data["before_raster"] = info["file"]
    data["change_truth"] = info["change_truth"]
    data["before_raster_info"] = info
    write_text_atomic(manifest, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    """The ``assets/build_demo.py`` command line (see the module docstring); returns 0."""
    parser = argparse.ArgumentParser(
        prog="python assets/build_demo.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, default=REPO / "assets" / "demo")
    parser.add_argument("--work", type=Path, default=REPO / "workspace" / "demo_build")
    parser.add_argument("--raster-only", action="store_true")
    parser.add_argument(
        "--before-only", action="store_true", help="only the before twin and its change truth"
    )
    parser.add_argument("--no-ablations", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument(
        "--device", default="cpu", help="where training runs: cpu (default) or cuda"
    )
    parser.add_argument(
        "--steps-scale",
        type=float,
        default=1.0,
        help="multiply every training stage's steps (needs a --work folder of its own)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        recipe = DemoRecipe(train_device=args.device)
        if args.steps_scale != 1.0:
            recipe = scale_steps(recipe, args.steps_scale)
    except ConfigError as exc:
        parser.error(str(exc))
    args.out.mkdir(parents=True, exist_ok=True)
    if args.before_only:
        _record_before(args.out, write_demo_before(args.out, recipe.raster_seed))
        print(f"before twin written to {args.out}")
        return 0
    if not args.raster_only:
        import torch

        torch.set_num_threads(args.threads)
        if recipe.train_device != "cpu" and not torch.cuda.is_available():
            parser.error(f"--device {recipe.train_device}: torch sees no CUDA GPU here")
        try:
            build_demo(args.out, args.work, recipe, ablations=not args.no_ablations)
        except ConfigError as exc:
            parser.error(str(exc))
    info = write_demo_raster(args.out, recipe.raster_seed)
    _record_raster(args.out, info)
    _record_before(args.out, write_demo_before(args.out, recipe.raster_seed))
    print(f"demo written to {args.out}")
    return 0
