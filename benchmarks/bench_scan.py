"""Benchmark the whole-scene scan (``app.scan.scan_raster``): tiles/s and memory, in one run.

    nice -n 10 python benchmarks/bench_scan.py [--tiles 64] [--batches 4 8 16] [--repeats 2]
        [--rss-gsd 4.0] [--rss-native-tiles 0] [--skip-rss]
    # GPU (Qwen2.5-VL-3B, NF4 on CUDA by default), 1024 px tiles of the 20,000^2 COG:
    python benchmarks/bench_scan.py --model-dir /models/Qwen2.5-VL-3B-Instruct \\
        --backbone qwen2.5-vl --tile-px 1024 --raster .bench-cache/bench_20000_rgb_cog.tif \\
        --batches 2 4 8 16 32 --skip-rss

1. **Throughput** on ``--raster`` (default: the demo scene) with the model (default: the demo
   model on CPU): ``--tiles`` tiles spread evenly over the scan plan, scanned for ``--query``
   with batch 1 (the baseline) and with each of ``--batches`` (``Engine.run_batch``, which halves
   its batch on CUDA out-of-memory and remembers what fit: the "settled" batch is reported), and
   each of those with the CLIP pre-filter (``app.scan.TilePrefilter``, top ``--prefilter-top``
   of the tiles by similarity, the demo's CLIP). tiles/s counts the plan's tiles over the wall
   time (so the pre-filter's rate includes embedding every tile and says how fast a plan is
   covered). Runs are interleaved and repeated; the median is reported, with ratios to batch 1.
2. **Peak RSS** while scanning the 20,000 x 20,000 RGB COG of ``bench_tiles.py`` (built once,
   cached in ``.bench-cache/``): a child process loads the model, then scans every tile of the
   whole raster at ``--rss-gsd`` metres per pixel (decimated reads from the COG's overviews) and
   records its RSS after the model load and after each tile; the parent samples the child's RSS
   every 50 ms for the peak. Optionally (``--rss-native-tiles N``) N native-resolution tiles
   spread over the whole raster. Each RSS run is repeated for each of ``--rss-gdal-cache-mb``
   (default ``64 0``: the scan's default cap of GDAL's block cache, then GDAL's own default, 5 %
   of RAM, as the baseline of the same run). Memory is compared with the raster decoded in memory
   (20,000 x 20,000 x 3 bytes = 1.2 GB), which is never read whole.

Every number comes from this run; the table says which card or CPU made it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import tiles
from app.demo import DEMO_DIR, DEMO_RASTER
from app.scanning import (
    TilePrefilter,
    engine_input_px,
    load_scan_engine,
    plan_scan,
    prefilter_tiles,
    scan_raster,
)


def load_engine(args: argparse.Namespace):
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)  # 2 shared cores: idle OpenMP threads spin otherwise
    ns = argparse.Namespace(model=args.model_dir, backbone=args.backbone, adapter=args.adapter,
                            device=args.device, max_answer_tokens=args.max_answer_tokens)
    engine, _ = load_scan_engine(ns)
    return engine


def spread(plan: tiles.TilePlan, n: int) -> tiles.TilePlan:
    """A plan with ``n`` of ``plan``'s tiles, evenly spread over it (indices renumbered)."""
    import dataclasses

    if n >= len(plan.tiles):
        return plan
    picks = np.linspace(0, len(plan.tiles) - 1, n).round().astype(int)
    chosen = [dataclasses.replace(plan.tiles[i], index=k) for k, i in enumerate(picks)]
    return dataclasses.replace(plan, tiles=tuple(chosen))


def device_label(engine) -> str:
    import torch

    device = getattr(getattr(engine, "config", None), "device", "?")
    if torch.cuda.is_available() and device != "cpu":
        return f"GPU {torch.cuda.get_device_name(0)}"
    return f"CPU ({os.cpu_count()} cores, torch {torch.get_num_threads()} threads)"


# --- 1. throughput ---------------------------------------------------------------------------


def bench_throughput(args: argparse.Namespace) -> None:
    engine = load_engine(args)
    embedder = getattr(getattr(engine, "retriever", None), "embedder", None)
    if embedder is None and (DEMO_DIR / "clip").is_dir():
        from engine.retrieval import ClipEmbedder

        embedder = ClipEmbedder.load(DEMO_DIR / "clip")
    with tiles.Catalog(Path(tempfile.mkdtemp(prefix="bench-scan-"))) as catalog:
        raster_id = catalog.open(args.raster, trusted=True)
        raster, source = catalog.get(raster_id), catalog.source(raster_id)
        full = plan_scan(raster, engine, source=source, tile_px=args.tile_px)
        plan = spread(full, args.tiles)
        print(f"throughput: {len(plan.tiles)} of {len(full.tiles)} tiles of {plan.tile_px} px "
              f"on {raster.name}, query {args.query!r}, {device_label(engine)}", flush=True)
        configs = [("batch 1", 1, False)]
        configs += [(f"batch {b}", b, False) for b in args.batches]
        if embedder is not None:
            configs += [("batch 1 + pre-filter", 1, True)]
            configs += [(f"batch {b} + pre-filter", b, True) for b in args.batches]
        prefilter = (TilePrefilter(embedder, top_fraction=args.prefilter_top)
                     if embedder is not None else None)
        warm = spread(plan, min(4, len(plan.tiles)))
        scan_raster(raster, engine, args.query, source=source, plan=warm, batch_size=4)
        times: dict[str, list[float]] = {name: [] for name, _, _ in configs}
        settled: dict[str, int | None] = {}
        vlm_tiles: dict[str, int] = {}
        for rep in range(args.repeats):
            for name, batch, use_filter in configs:
                start = time.perf_counter()
                result = scan_raster(raster, engine, args.query, source=source, plan=plan,
                                     batch_size=batch,
                                     prefilter=prefilter if use_filter else None)
                times[name].append(time.perf_counter() - start)
                settled[name] = result.batch_size
                vlm_tiles[name] = result.tiles_done
                print(f"  rep {rep + 1} {name}: {len(plan.tiles) / times[name][-1]:.2f} tiles/s"
                      f" ({result.tiles_done} tiles to the VLM, {result.count} objects)",
                      flush=True)
        if embedder is not None:  # the pre-filter's cost alone
            start = time.perf_counter()
            prefilter_tiles(raster, plan, args.query, prefilter, source=source)
            clip_s = time.perf_counter() - start
    base = statistics.median(times["batch 1"])
    best = min((n for n, _, f in configs if not f), key=lambda n: statistics.median(times[n]))
    print(f"\nScan throughput ({device_label(engine)}; {len(plan.tiles)} tiles of "
          f"{plan.tile_px} px spread over {raster.name}; median of {args.repeats})\n")
    print("| run | tiles to the VLM | settled batch | tiles/s | vs batch 1 |")
    print("|---|---|---|---|---|")
    for name, _, _ in configs:
        t = statistics.median(times[name])
        mark = " (best)" if name == best else ""
        print(f"| {name}{mark} | {vlm_tiles[name]} | {settled[name]} | "
              f"{len(plan.tiles) / t:.2f} | {base / t:.2f}x |")
    if embedder is not None:
        print(f"\nCLIP pre-filter alone (embed {len(plan.tiles)} tiles + query, keep top "
              f"{args.prefilter_top:.0%}): {clip_s:.2f} s = {len(plan.tiles) / clip_s:.1f} "
              "tiles/s")
    else:
        print("\npre-filter: not measured (no CLIP: the model has no retriever and "
              "assets/demo/clip is missing)")
    if args.model_dir is None:
        print("\n| Qwen2.5-VL-3B NF4, 1024 px tiles, best batch | not measured (no GPU in this "
              "run: pass --model-dir/--backbone qwen2.5-vl --tile-px 1024 on a CUDA machine) |")


# --- 2. peak RSS ---------------------------------------------------------------------------------


def rss_child(args: argparse.Namespace) -> None:
    """In the child: load the model, scan the COG, write RSS samples as JSON to --rss-out."""
    import psutil

    me = psutil.Process()
    samples: dict[str, float] = {"start": me.memory_info().rss}
    engine = load_engine(args)
    samples["after model load"] = me.memory_info().rss
    with tiles.Catalog(Path(tempfile.mkdtemp(prefix="bench-rss-"))) as catalog:
        raster_id = catalog.open(args.rss_child, trusted=True)
        raster, source = catalog.get(raster_id), catalog.source(raster_id)
        if args.rss_native_tiles:
            tile_px = args.tile_px or engine_input_px(engine) or 512
            plan = spread(tiles.plan_tiles(raster, tile_px=tile_px), args.rss_native_tiles)
        else:
            plan = plan_scan(raster, engine, source=source, tile_px=args.tile_px,
                             gsd_m=args.rss_gsd)
        samples["after planning"] = me.memory_info().rss
        n = len(plan.tiles)
        marks = {max(1, round(n * f)): f"after {f:.0%} of tiles" for f in (0.1, 0.5, 1.0)}
        per_tile: list[int] = []

        def progress(found: tiles.TileDetections) -> None:
            per_tile.append(me.memory_info().rss)
            if len(per_tile) in marks:
                samples[marks[len(per_tile)]] = per_tile[-1]

        start, mono_start = time.perf_counter(), time.monotonic()
        result = scan_raster(raster, engine, args.query, source=source, plan=plan,
                             batch_size=args.rss_batch, progress=progress,
                             gdal_cache_mb=args.rss_gdal_cache_mb[0])
        elapsed, mono_end = time.perf_counter() - start, time.monotonic()
    out = {"samples": samples, "per_tile": per_tile, "tiles": n, "grid": plan.grid_shape,
           "decimation": plan.decimation, "tile_px": plan.tile_px, "seconds": elapsed,
           "objects": result.count, "scan_monotonic": [mono_start, mono_end], "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
           "raster": [raster.width, raster.height, raster.count]}
    Path(args.rss_out).write_text(json.dumps(out))


def bench_rss(args: argparse.Namespace, native_tiles: int, cache_mb: int) -> float:
    """One RSS run in a child; prints its table and returns the RSS growth (MiB) over it."""
    import psutil
    from bench_tiles import build_cog

    cog = build_cog(args.cache_dir)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rss.json"
        cmd = [sys.executable, __file__, "--rss-child", str(cog), "--rss-out", str(out),
               "--rss-gsd", str(args.rss_gsd), "--rss-batch", str(args.rss_batch),
               "--rss-native-tiles", str(native_tiles), "--query", args.query,
               "--device", args.device, "--backbone", args.backbone,
               "--threads", str(args.threads), "--rss-gdal-cache-mb", str(cache_mb)]
        for flag, value in (("--model-dir", args.model_dir), ("--tile-px", args.tile_px),
                            ("--adapter", args.adapter)):
            if value is not None:
                cmd += [flag, str(value)]
        child = subprocess.Popen(cmd)
        proc = psutil.Process(child.pid)
        trace: list[tuple[float, int]] = []  # (time.monotonic(), RSS): one clock for both
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                try:
                    trace.append((time.monotonic(), proc.memory_info().rss))
                except psutil.Error:
                    return
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(child.pid, 0)  # the child's whole-life ru_maxrss
        child.returncode = code = os.waitstatus_to_exitcode(status)
        stop.set()
        sampler.join()
        if code != 0:
            raise SystemExit(f"the RSS child failed with exit status {code}")
        data = json.loads(out.read_text())
    mib = 1024 ** 2
    w, h, c = data["raster"]
    raster_bytes = w * h * c
    s = data["samples"]
    load = s["after model load"]
    per_tile = np.asarray(data["per_tile"], float)
    t0, t1 = data["scan_monotonic"]
    peak = max(rss for _, rss in trace)
    peak_scan = max((rss for t, rss in trace if t0 <= t <= t1), default=0)
    mode = (f"{data['tiles']} native tiles spread over the raster" if native_tiles else
            f"all {data['tiles']} tiles of the whole raster at {args.rss_gsd} m/px "
            f"(decimation {data['decimation']:.1f}, grid {data['grid'][0]} x {data['grid'][1]})")
    cache = f"GDAL cache capped at {cache_mb} MiB" if cache_mb else "GDAL cache at its default"
    print(f"\nPeak RSS scanning the {w:,} x {h:,} COG: {mode}, {cache}, {data['tile_px']} px tiles, "
          f"batch {args.rss_batch}, {data['seconds']:.0f} s "
          f"({data['tiles'] / data['seconds']:.1f} tiles/s), {data['objects']} objects\n")
    print("| point | RSS (MiB) | vs after model load |")
    print("|---|---|---|")
    for name, value in s.items():
        print(f"| {name} | {value / mib:.0f} | {value / load:.2f}x |")
    print(f"| peak while scanning (parent sampling every 50 ms) | {peak_scan / mib:.0f} | "
          f"{peak_scan / load:.2f}x |")
    print(f"| peak over the child's life (sampling) | {peak / mib:.0f} | {peak / load:.2f}x |")
    print(f"| peak (child ru_maxrss at the end of the scan) | {data['ru_maxrss_kib'] / 1024:.0f} "
          f"| {data['ru_maxrss_kib'] * 1024 / load:.2f}x |")
    print(f"| peak (child ru_maxrss over its life, wait4) | {usage.ru_maxrss / 1024:.0f} | "
          f"{usage.ru_maxrss * 1024 / load:.2f}x |")
    first, last = per_tile[: max(1, len(per_tile) // 10)], per_tile[-max(1, len(per_tile) // 10):]
    growth = last.mean() - first.mean()
    print(f"\nRSS over the scan: first 10% of tiles mean {first.mean() / mib:.0f} MiB, last 10% "
          f"{last.mean() / mib:.0f} MiB (growth {growth / mib:+.0f} MiB, "
          f"{growth / max(1, len(per_tile) * 0.9):+.0f} B per tile); the raster decoded would "
          f"be {raster_bytes / mib:,.0f} MiB: peak while scanning minus model load = "
          f"{(peak_scan - load) / mib:.0f} MiB = {(peak_scan - load) / raster_bytes:.1%} of it")
    return growth / mib


def bench_rss_caches(args: argparse.Namespace, native_tiles: int) -> None:
    growth = {mb: bench_rss(args, native_tiles, mb) for mb in args.rss_gdal_cache_mb}
    if len(growth) > 1:
        base_mb = args.rss_gdal_cache_mb[-1]
        print("\n| GDAL cache | RSS growth first->last 10 % of tiles (MiB) | vs "
              f"{base_mb or 'default'} |\n|---|---|---|")
        for mb, g in growth.items():
            ratio = g / growth[base_mb] if growth[base_mb] else float("nan")
            print(f"| {f'{mb} MiB' if mb else 'GDAL default'} | {g:+.0f} | {ratio:.2f}x |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--raster", type=Path, default=DEMO_RASTER)
    p.add_argument("--query", default="storage tank")
    p.add_argument("--tiles", type=int, default=64, help="tiles per throughput run")
    p.add_argument("--batches", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--prefilter-top", type=float, default=0.25)
    p.add_argument("--model-dir", help="model directory (default: the demo model)")
    p.add_argument("--backbone", default="paper")
    p.add_argument("--adapter")
    p.add_argument("--device", default="auto")
    p.add_argument("--tile-px", type=int, help="tile side (default: the model's input, else 512)")
    p.add_argument("--max-answer-tokens", type=int)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1; 0 = torch's default)")
    p.add_argument("--cache-dir", type=Path, default=REPO_ROOT / ".bench-cache")
    p.add_argument("--rss-gsd", type=float, default=4.0, help="m/px of the whole-raster RSS scan")
    p.add_argument("--rss-batch", type=int, default=8)
    p.add_argument("--rss-native-tiles", type=int, default=0,
                   help="also: N native-resolution tiles spread over the COG")
    p.add_argument("--rss-gdal-cache-mb", type=int, nargs="+", default=[64, 0],
                   help="GDAL block cache caps (MiB) to run the RSS scans with; 0: GDAL's "
                        "default (the baseline, last)")
    p.add_argument("--skip-rss", action="store_true")
    p.add_argument("--skip-rss-whole", action="store_true",
                   help="only the --rss-native-tiles run")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--rss-child", help=argparse.SUPPRESS)
    p.add_argument("--rss-out", help=argparse.SUPPRESS)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.rss_child:
        rss_child(args)
        return
    if not args.skip_throughput:
        bench_throughput(args)
    if not args.skip_rss:
        if not args.skip_rss_whole:
            bench_rss_caches(args, 0)
        if args.rss_native_tiles:
            bench_rss_caches(args, args.rss_native_tiles)


if __name__ == "__main__":
    main()
