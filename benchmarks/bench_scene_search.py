"""The app's tile-by-tile search vs the scan core alone, on the whole demo raster, in one run.

The baseline is :func:`app.scanning.scan_raster` called directly (the demo model on the demo
scene: 361 tiles of 128 px). The app path is :func:`app.handlers.ask` with "Find objects" and
nothing drawn, as the Ask button runs it: the scan in a worker thread, an update after each batch
with the objects merged so far (at most once a second), and one stored result at the end. Both
use the same loaded engine; the ratio is app / core, per round. A third run per round is the
app's "search the most likely quarter of the tiles" (``--search-top``: the CLIP pre-filter ranks
every tile, a quarter run), with its speed-up over the app searching every tile. Its objects are
the scan core's with the same pre-filter (tests/app/test_scene_search.py), so the recall it
loses is the one ``benchmarks/bench_scan_quality.py`` measures against the scene's truth.

Usage::

    python benchmarks/bench_scene_search.py [--rounds 2] [--query "storage tank"] [--search-top 0.25]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--query", default="storage tank")
    parser.add_argument("--search-top", type=float, default=0.25,
                        help="share of tiles the pre-filtered app search runs (0 < F <= 1)")
    args = parser.parse_args(argv)

    import torch

    from app import handlers
    from app.asking import AskRequest
    from app.config import AppConfig, LaunchConfig, ModelSpec
    from app.demo import DEMO_MANIFEST
    from app.scanning import scan_raster
    from app.services import model_status_for, open_services
    from engine.demo.manifest import load_demo_engine
    from engine.types import Task

    torch.set_num_threads(1)  # a shared 2-core machine: see docs/BENCHMARKS.md
    engine = load_demo_engine(DEMO_MANIFEST, device="cpu")
    spec = ModelSpec(model=str(DEMO_MANIFEST), device="cpu", is_demo=True)
    with tempfile.TemporaryDirectory(prefix="geolens-bench-search-") as workspace:
        launch = LaunchConfig(app=AppConfig(workspace=Path(workspace), basemaps=False,
                                            use_demo_raster=True),
                              model=spec, engine=None)
        services = open_services(launch, engine=engine, model_status=model_status_for(spec, engine))
        try:
            raster = services.catalog_list()[0]
            source = services.catalog.source(raster.raster_id)
            for round_ in range(1, args.rounds + 1):
                t0 = time.perf_counter()
                core = scan_raster(raster, engine, args.query, source=source)
                t_core = time.perf_counter() - t0
                t0, updates, last = time.perf_counter(), 0, None
                for last in handlers.ask(services, AskRequest(raster.raster_id, Task.GROUND, args.query)):
                    updates += 1
                t_app = time.perf_counter() - t0
                every = last.record
                t0 = time.perf_counter()
                request = AskRequest(raster.raster_id, Task.GROUND, args.query, search_top=args.search_top)
                for last in handlers.ask(services, request):
                    pass
                t_top = time.perf_counter() - t0
                scan = last.record.scan
                sys.stdout.write(
                    f"round {round_}: {core.tiles_total} tiles; scan_raster {t_core:.1f} s "
                    f"({core.count} objects); app search {t_app:.1f} s "
                    f"({every.scan['count']} objects, {updates} updates); "
                    f"app / core {t_app / t_core:.2f}x; most likely {args.search_top:g} "
                    f"({scan['tiles_total'] - scan['prefiltered']} tiles) {t_top:.1f} s, "
                    f"{t_app / t_top:.2f}x faster than every tile ({scan['count']} objects)\n")
        finally:
            services.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
