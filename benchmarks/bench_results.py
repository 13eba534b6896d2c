"""Results history at scale: the app's own steps with 100,000 stored answers vs 10, in one run.

For each history size N (default 10 and 100,000 answers spread over the demo raster, a region
and 0-3 boxes each, as the app stores them) it builds the app's services over a fresh
workspace with the shipped demo model and raster, and times the steps an analyst waits for:

* **page ready**: the page-load handler (raster list, map value, first table page) plus the map's
  first ``GET /results/features`` for the whole raster (through the real FastAPI app);
* **draw -> region line**: the handler that answers a drawing with its window line;
* **Ask overhead**: one whole "Ask" (``Describe region`` on a drawn rectangle) through the UI
  handler, including reading the crop, storing the result, the new map value and the table page,
  *minus* the time spent inside the model (measured around the engine's stream);
* **map value size**: bytes of the component value sent to the browser.

Each step is repeated (median reported) and printed with its ratio ``N / 10``.

Usage::

    python benchmarks/bench_results.py                 # 10 vs 100,000
    python benchmarks/bench_results.py --sizes 10 3000 100000 --repeats 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np


class TimedEngine:
    """The engine, with the time spent producing its stream's events added up (model time)."""

    def __init__(self, engine) -> None:
        self._engine = engine
        self.model_s = 0.0

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def stream(self, *args, **kwargs):
        events = self._engine.stream(*args, **kwargs)
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    event = next(events)
                finally:
                    self.model_s += time.perf_counter() - t0
                yield event
        except StopIteration:
            return
        finally:
            events.close()


def _records(raster, n: int, seed: int = 0):
    from app.results import ResultBox, ResultRecord

    rng = np.random.default_rng(seed)
    west, south, east, north = raster.bounds_lonlat
    d = (east - west) / 40
    for i in range(n):
        x, y = rng.uniform(west, east - d), rng.uniform(south, north - d)
        ring = [[x, y], [x + d, y], [x + d, y + d], [x, y + d], [x, y]]
        boxes = tuple(
            ResultBox({"type": "Polygon", "coordinates": [[[x + k * d / 4, y], [x + (k + 1) * d / 4, y],
                                                           [x + (k + 1) * d / 4, y + d / 4],
                                                           [x + k * d / 4, y + d / 4], [x + k * d / 4, y]]]},
                      label="building", score=0.8)
            for k in range(int(rng.integers(0, 4)))
        )
        yield ResultRecord(task="ground" if boxes else "caption", question="buildings" if boxes else None,
                           answer=f"answer {i}", model="demo", raster=str(raster.path),
                           window={"col_off": 0, "row_off": 0, "width": 100, "height": 100},
                           region={"type": "Polygon", "coordinates": [ring]}, crs=raster.crs_label, boxes=boxes)


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(n: int, repeats: int, engine) -> dict:
    from fastapi.testclient import TestClient

    from app import ui
    from app.config import AppConfig, LaunchConfig, ModelSpec
    from app.demo import DEMO_MANIFEST
    from app.server import create_server_app
    from app.services import model_status_for, open_services

    with tempfile.TemporaryDirectory() as tmp:
        spec = ModelSpec(model=str(DEMO_MANIFEST), device="cpu", is_demo=True)
        launch = LaunchConfig(app=AppConfig(workspace=Path(tmp), basemaps=False, use_demo_raster=True),
                              model=spec, engine=None)
        services = open_services(launch, engine=engine, model_status=model_status_for(spec, engine))
        try:
            raster = services.catalog_list()[0]
            t0 = time.perf_counter()
            services.store.append_many(_records(raster, n))
            fill_s = time.perf_counter() - t0
            blocks = ui.build_blocks(services)
            act = ui._Actions(services)
            client = TestClient(create_server_app(services, blocks, services.config), base_url="http://127.0.0.1")
            west, south, east, north = raster.bounds_lonlat
            bbox = f"{west},{south},{east},{north}"

            def page_ready():
                act.load(None)
                r = client.get("/results/features", params={"bbox": bbox})
                assert r.status_code == 200

            w, s = west + (east - west) * 0.30, south + (north - south) * 0.30
            e, nn = west + (east - west) * 0.34, south + (north - south) * 0.34
            drawn = {"drawn": {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
                [[w, s], [e, s], [e, nn], [w, nn], [w, s]]]},
                "properties": {"space": "lonlat", "shape": "rectangle", "raster_id": raster.raster_id}}}
            value = {**ui.handlers.map_update(services, raster.raster_id, "auto"), **drawn}

            def region_line():
                act.map_changed(raster.raster_id, value)

            ask_overheads = []

            def ask():
                engine.model_s = 0.0
                t0 = time.perf_counter()
                for _ in act.ask(raster.raster_id, "auto", "Describe region", "", "", value, None, None, [],
                                 0, None, None, None):
                    pass
                ask_overheads.append(time.perf_counter() - t0 - engine.model_s)

            page_ready()  # warm-up (imports, first queries)
            ask()
            ask_overheads.clear()
            out = {
                "answers": len(services.store),
                "fill_s": fill_s,
                "page_ready_s": _median(page_ready, repeats),
                "region_line_s": _median(region_line, repeats),
            }
            for _ in range(repeats):
                ask()
            out["ask_overhead_s"] = statistics.median(ask_overheads)
            out["map_value_bytes"] = len(json.dumps(ui.handlers.map_update(services, raster.raster_id, "auto")))
            return out
        finally:
            services.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from app.config import ModelSpec, engine_config_for
    from app.demo import DEMO_MANIFEST
    from app.services import load_engine

    spec = ModelSpec(model=str(DEMO_MANIFEST), device="cpu", is_demo=True)
    engine, _ = load_engine(spec, engine_config_for(spec))
    if engine is None:
        raise SystemExit("the demo model did not load; rebuild it with python assets/build_demo.py")
    timed = TimedEngine(engine)
    results = {n: measure(n, args.repeats, timed) for n in args.sizes}
    base = results[min(args.sizes)]
    print(f"{'answers':>9} {'fill s':>7} {'page ready ms':>14} {'draw->line ms':>14} {'Ask overhead ms':>16} "
          f"{'value B':>8}")
    for r in results.values():
        print(f"{r['answers']:>9,} {r['fill_s']:>7.1f} {r['page_ready_s'] * 1e3:>9.1f} ({r['page_ready_s'] / base['page_ready_s']:.2f}x)"
              f" {r['region_line_s'] * 1e3:>8.1f} ({r['region_line_s'] / base['region_line_s']:.2f}x)"
              f" {r['ask_overhead_s'] * 1e3:>9.1f} ({r['ask_overhead_s'] / base['ask_overhead_s']:.2f}x)"
              f" {r['map_value_bytes']:>8}")
    if args.json:
        args.json.write_text(json.dumps({str(k): v for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
