"""The HTTP path's cost: RemoteEngine -> engine.serve vs Engine.run in process, on the demo model.

Starts ``python -m engine.serve --device cpu`` (the shipped demo model) as a separate process on
127.0.0.1, loads the same demo model in this process, and for the same crops of the demo raster
measures, in one run:

* per request, for ``ground`` and ``caption``: the in-process ``Engine.run`` time and the
  ``RemoteEngine.run`` time through the server (PNG encode, HTTP, SSE stream, the server's own
  ``Engine.stream``); the median of N each (the two alternate, so machine noise hits both), the
  overhead (HTTP - in process) and the ratio; and whether the answers are identical;
* throughput: the same ground request from 1 client and from 4 concurrent clients (threads, each with
  its own ``RemoteEngine``), requests per second, and the ratio 4 / 1 (the server answers one
  request at a time on its one model, so this shows what the queue and the HTTP overlap give).

Both processes use ``--threads`` torch threads (default 1), so the two paths do the same compute.

Usage::

    nice -n 10 python benchmarks/bench_api.py                  # N=15, 60 requests per throughput run
    python benchmarks/bench_api.py --repeats 5 --requests 20 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np

from engine.demo.manifest import DEMO_MANIFEST, load_demo_engine, read_demo_manifest
from engine.remote import RemoteConfig, RemoteEngine
from engine.types import Task

CROP_PX = 128  # the demo model's training crop (64 m at 0.5 m)
TASKS = {"ground": (Task.GROUND, "building"), "caption": (Task.CAPTION, None)}


def demo_crops(count: int) -> list[np.ndarray]:
    """``count`` CROP_PX x CROP_PX RGB crops along the demo raster's diagonal (all four scenes)."""
    import rasterio
    from rasterio.windows import Window

    raster = read_demo_manifest().raster
    with rasterio.open(raster) as src:
        step = (min(src.width, src.height) - CROP_PX) // max(count - 1, 1)
        crops = []
        for i in range(count):
            off = i * step
            data = src.read((1, 2, 3), window=Window(off, off, CROP_PX, CROP_PX))
            crops.append(np.ascontiguousarray(np.moveaxis(data, 0, -1)))
    return crops


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, threads: int) -> subprocess.Popen:
    """``python -m engine.serve`` with the demo model on 127.0.0.1:port, ``threads`` torch
    threads; waits until it accepts connections."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.serve", "--device", "cpu", "--port", str(port)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads),
             "MKL_NUM_THREADS": str(threads)},
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"engine.serve exited ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("engine.serve did not start within 300 s")


def per_request(engine, remote: RemoteEngine, crops, repeats: int) -> dict:
    """Median seconds per request in process and over HTTP, per task (same crops, alternating)."""
    rows = {}
    for name, (task, question) in TASKS.items():
        local_s, http_s, same = [], [], True
        for crop in crops:  # warm both paths (first calls import and allocate)
            engine.run(crop, task, question)
            remote.run(crop, task, question)
        for r in range(repeats):
            crop = crops[r % len(crops)]
            t0 = time.perf_counter()
            a = engine.run(crop, task, question)
            t1 = time.perf_counter()
            b = remote.run(crop, task, question)
            t2 = time.perf_counter()
            local_s.append(t1 - t0)
            http_s.append(t2 - t1)
            same = same and a.text == b.text and [x.xyxy for x in a.boxes_px] == [x.xyxy for x in b.boxes_px]
        lm, hm = statistics.median(local_s), statistics.median(http_s)
        rows[name] = {"in_process_ms": lm * 1e3, "http_ms": hm * 1e3, "overhead_ms": (hm - lm) * 1e3,
                      "ratio": hm / lm, "identical_answers": same, "n": repeats}
    return rows


def throughput(config: RemoteConfig, crops, clients: int, requests: int) -> float:
    """Requests per second for ``requests`` ground requests spread over ``clients`` threads."""
    engines = [RemoteEngine.connect(config) for _ in range(clients)]
    task, question = TASKS["ground"]
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for i in range(k, requests, clients):
                engines[k].run(crops[i % len(crops)], task, question)
        except BaseException as exc:  # noqa: BLE001 - reported after the run
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return requests / elapsed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15, help="timed requests per task and path (median)")
    p.add_argument("--requests", type=int, default=60, help="requests per throughput run")
    p.add_argument("--crops", type=int, default=5, help="distinct demo crops")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads in this process and in the server (default 1: on a shared "
                   "2-core VM more threads than free cores make both paths erratic)")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    crops = demo_crops(args.crops)
    port = free_port()
    server = start_server(port, args.threads)
    try:
        engine = load_demo_engine(DEMO_MANIFEST, device="cpu")
        config = RemoteConfig(f"http://127.0.0.1:{port}/v1", "geolens-demo", box_format="paper",
                              max_retries=0, timeout_s=300)
        remote = RemoteEngine.connect(config)
        assert remote.geolens, "the served demo model should identify as engine.serve"
        rows = per_request(engine, remote, crops, args.repeats)
        del engine  # the throughput runs load only the server
        one = throughput(config, crops, 1, args.requests)
        four = throughput(config, crops, 4, args.requests)
    finally:
        server.terminate()
        server.wait(timeout=30)

    print(f"demo model, {CROP_PX}x{CROP_PX} crops, CPU ({os.cpu_count()} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads)")
    print(f"{'task':<8} {'in-process ms':>14} {'HTTP ms':>9} {'overhead ms':>12} {'ratio':>6}  identical")
    for name, r in rows.items():
        print(f"{name:<8} {r['in_process_ms']:>14.1f} {r['http_ms']:>9.1f} {r['overhead_ms']:>12.1f} "
              f"{r['ratio']:>6.2f}  {r['identical_answers']}")
    print(f"throughput (ground, {args.requests} requests): 1 client {one:.2f} req/s, "
          f"4 clients {four:.2f} req/s, ratio {four / one:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"per_request": rows, "throughput_rps": {"1": one, "4": four},
                                         "crop_px": CROP_PX, "cpu_count": os.cpu_count()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
