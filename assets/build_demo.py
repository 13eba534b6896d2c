"""Rebuild everything in ``assets/demo``: the demo model (engine) and the demo raster (tiles).

    python assets/build_demo.py                  # full build (about 9 h on 2 CPU cores)
    python assets/build_demo.py --raster-only    # only demo_scene.tif (+ ground truth), seconds
    python assets/build_demo.py --no-ablations   # the shipped model only
    python assets/build_demo.py --device cuda --steps-scale 20 --work workspace/demo_x20
                                                 # 20x longer training stages on a GPU

The model side is :func:`engine.demo.build.build_demo` (work files in ``workspace/demo_build``,
resumable). The raster is written by :func:`app.demo.write_demo_raster` (see there). This script lives
outside ``engine`` and ``tiles`` because it needs both: ``engine`` never imports rasterio.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


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
    from app.demo import write_demo_raster
    from engine.demo.recipe import DemoRecipe, scale_steps
    from engine.errors import ConfigError

    try:
        recipe = DemoRecipe(train_device=args.device)
        if args.steps_scale != 1.0:
            recipe = scale_steps(recipe, args.steps_scale)
    except ConfigError as exc:
        parser.error(str(exc))
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.raster_only:
        import torch

        from engine.demo.build import build_demo

        torch.set_num_threads(args.threads)
        if recipe.train_device != "cpu" and not torch.cuda.is_available():
            parser.error(f"--device {recipe.train_device}: torch sees no CUDA GPU here")
        try:
            build_demo(args.out, args.work, recipe, ablations=not args.no_ablations)
        except ConfigError as exc:
            parser.error(str(exc))
    info = write_demo_raster(args.out, recipe.raster_seed)
    _record_raster(args.out, info)
    print(f"demo written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
