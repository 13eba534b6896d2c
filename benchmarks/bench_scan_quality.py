"""Box scores and the CLIP pre-filter of whole-scene search, on the shipped demo scene.

    python benchmarks/bench_scan_quality.py [--queries "storage tank,building"] [--max-tiles N]

Uses the demo model (``assets/demo``: the ``paper`` backbone with its adapter and its CLIP
retriever) over every 128 px tile of ``assets/demo/demo_scene.tif`` and scores the boxes against
``assets/demo/demo_scene_truth.geojson`` (a box is a true positive when its IoU with a truth
object of the queried kind is >= 0.5; truth polygons are compared by their pixel bounding boxes).

1. **Box scores** (does the score rank true boxes above false ones?): every tile box, before
   merging, gets the engine's score (geometric mean of the probabilities of its coordinate tokens)
   and, for comparison, alternatives computed from the same generation: the label tokens' mean,
   the token opening the box (``[``: the decision to write a box at all), the least sure coordinate token, and coordinates + label together. The
   ranking quality is the ROC AUC of TP vs FP (0.5 = no better than chance), with the mean score
   of each group; the same for the merged objects (best member score).
2. **Pre-filter** (what does skipping tiles cost and save?): the same scan with no filter (the
   baseline, same run), with the top 50 % / 25 % of tiles by CLIP similarity, and with two
   similarity thresholds; wall time (CLIP included), speed-up vs the baseline, recall and precision
   of the merged objects at IoU 0.5, and recall lost vs the baseline.

CPU numbers on a shared machine are noisy; ratios are against the baseline of the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import tiles
from app.scanning import (
    TilePrefilter,
    build_arg_parser,
    load_scan_engine,
    plan_scan,
    prefilter_tiles,
    scan_raster,
)
from engine.types import Task

SCENE = REPO_ROOT / "assets" / "demo" / "demo_scene.tif"
TRUTH = REPO_ROOT / "assets" / "demo" / "demo_scene_truth.geojson"
KIND = {"storage tank": "storage_tank", "building": "building", "vehicle": "vehicle",
        "road": "road", "water": "water", "field": "field", "forest": "forest"}


def truth_boxes_px(raster: tiles.Raster, kind: str) -> np.ndarray:
    """(N, 4) x0, y0, x1, y1 raster-pixel bounding boxes of the truth objects of ``kind``."""
    inverse = ~raster.transform
    boxes = []
    for feature in json.loads(TRUTH.read_text())["features"]:
        if feature["properties"]["kind"] != kind:
            continue
        coords = np.array([xy for ring in feature["geometry"]["coordinates"] for xy in ring])
        cols, rows = inverse * (coords[:, 0], coords[:, 1])
        boxes.append((cols.min(), rows.min(), cols.max(), rows.max()))
    return np.array(boxes, float).reshape(-1, 4)


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def auc(pos: list[float], neg: list[float]) -> float:
    """ROC AUC (Mann-Whitney): chance that a random TP scores above a random FP (ties 1/2)."""
    if not pos or not neg:
        return float("nan")
    p, n = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float(((p > n).sum() + 0.5 * (p == n).sum()) / (p.size * n.size))


def matches(boxes: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, int]:
    """Per box: IoU >= 0.5 with some truth box; and how many truth boxes were found (greedy
    one-to-one in the given order)."""
    hit = np.zeros(len(boxes), bool)
    taken = np.zeros(len(truth), bool)
    for i, box in enumerate(boxes):
        if not len(truth):
            break
        overlaps = iou(box, truth)
        overlaps[taken] = 0
        j = int(np.argmax(overlaps))
        if overlaps[j] >= 0.5:
            hit[i], taken[j] = True, True
    return hit, int(taken.sum())


def load_demo_engine():
    args = build_arg_parser().parse_args([str(SCENE), "--find", "x", "--device", "cpu"])
    engine, _ = load_scan_engine(args)
    return engine


def score_alternatives(text: str, trace, convention) -> list[dict]:
    """Every well-formed box of ``text`` with the candidate scores (grid boxes, 0-1000)."""
    out = []
    for found in convention.locate(text):
        if found.values is None or len(found.values) < 4 or trace is None:
            continue
        try:
            box = convention.to_crop_px(found.values[:4], (1000, 1000), (1000, 1000))
        except ValueError:
            continue
        coord_tokens = trace.tokens_in(found.coord_spans)
        label_tokens = trace.tokens_in([found.label_span]) if found.label_span else []
        all_tokens = sorted(set(coord_tokens) | set(label_tokens))
        start = found.coord_spans[0][0]  # the token opening the box: "[" (or one holding it)
        opening = trace.tokens_in([(max(0, start - 1), start)]) or coord_tokens[:1]
        out.append({
            "grid": box.xyxy,
            "label": found.label,
            "coords": trace.score(found.coord_spans),
            "label_tokens": trace.score([found.label_span]) if found.label_span else None,
            "first_token": trace.probs[opening[0]] if opening else None,
            "min_coord": min(trace.probs[i] for i in coord_tokens) if coord_tokens else None,
            "coords_and_label": (math.exp(np.mean([math.log(trace.probs[i])
                                                   for i in all_tokens]))
                                 if all_tokens else None),
        })
    return out


def bench_scores(engine, raster, query: str, max_tiles: int | None, batch: int) -> dict:
    plan = plan_scan(raster, engine)
    todo = plan.tiles[:max_tiles] if max_tiles else plan.tiles
    traces: list = []
    original = engine._answer

    def recording(request, text, evidence, crop_size, model_size, timing, trace=None):
        traces.append((text, trace))
        return original(request, text, evidence, crop_size, model_size, timing, trace)

    engine._answer = recording
    rows = []
    try:
        for start in range(0, len(todo), batch):
            chunk = todo[start:start + batch]
            crops = [tiles.read_crop(raster, t.window, t.max_side) for t in chunk]
            traces.clear()
            answers = engine.run_batch([c.image for c in crops], Task.GROUND, question=query)
            for tile, crop, answer, (text, trace) in zip(chunk, crops, answers, traces,
                                                         strict=True):
                alts = score_alternatives(text, trace, engine.prompts.box_format)
                if len(alts) != len(answer.boxes_px):  # parse dropped some: skip the tile
                    continue
                found = tiles.tile_detections(tile, crop, answer.boxes_px,
                                              [b.score for b in answer.boxes_px],
                                              [query] * len(alts))
                for a, box_px, engine_box in zip(alts, found.boxes_px, answer.boxes_px,
                                                 strict=True):
                    assert abs(a["coords"] - engine_box.score) < 1e-9
                    rows.append({**a, "box_px": box_px})
    finally:
        engine._answer = original
    truth = truth_boxes_px(raster, KIND[query])
    # a box is TP if it overlaps some truth box at IoU >= 0.5 (not one-to-one at tile level:
    # the same object seen by overlapping tiles counts in each tile)
    hit = np.array([bool(len(truth)) and iou(np.asarray(r["box_px"]), truth).max() >= 0.5
                    for r in rows], bool)
    result = {"query": query, "tiles": len(todo), "boxes": len(rows), "tp": int(hit.sum()),
              "fp": int((~hit).sum()), "truth": len(truth)}
    for name in ("coords", "label_tokens", "first_token", "min_coord", "coords_and_label"):
        pos = [r[name] for r, h in zip(rows, hit) if h and r[name] is not None]
        neg = [r[name] for r, h in zip(rows, hit) if not h and r[name] is not None]
        result[name] = {"auc": auc(pos, neg),
                        "mean_tp": float(np.mean(pos)) if pos else float("nan"),
                        "mean_fp": float(np.mean(neg)) if neg else float("nan")}
    return result


def merged_quality(result, raster, query: str) -> dict:
    truth = truth_boxes_px(raster, KIND[query])
    boxes = np.array([o.box_px for o in result.objects], float).reshape(-1, 4)
    order = np.argsort([-o.score for o in result.objects], kind="stable")
    hit, found = matches(boxes[order], truth)
    scores = np.array([o.score for o in result.objects])[order]
    return {"objects": len(boxes), "tp": int(hit.sum()), "truth": len(truth),
            "recall": found / len(truth) if len(truth) else float("nan"),
            "precision": hit.mean() if len(hit) else float("nan"),
            "auc": auc(scores[hit].tolist(), scores[~hit].tolist()),
            "mean_tp": float(scores[hit].mean()) if hit.any() else float("nan"),
            "mean_fp": float(scores[~hit].mean()) if (~hit).any() else float("nan")}


def truth_coverage(plan, kept, truth: np.ndarray) -> float:
    """Fraction of the truth boxes lying whole inside at least one kept tile: the recall a
    perfect VLM could still reach after the pre-filter (independent of the demo VLM)."""
    if not len(truth):
        return float("nan")
    inside = np.zeros(len(truth), bool)
    for tile in plan.tiles:
        if tile.index in kept:
            x0, y0, x1, y1 = tile.bounds_px
            inside |= ((truth[:, 0] >= x0) & (truth[:, 1] >= y0) & (truth[:, 2] <= x1)
                       & (truth[:, 3] <= y1))
    return float(inside.mean())


def bench_templates(engine, raster, query: str) -> list[dict]:
    """CLIP only: truth coverage of the top 50 % / 25 % of tiles for a few query templates,
    against keeping a random 50 % / 25 % (the expected coverage of chance)."""
    plan = plan_scan(raster, engine)
    truth = truth_boxes_px(raster, KIND[query])
    every = frozenset(t.index for t in plan.tiles)
    rows = [{"template": "(all tiles)", "top 50%": truth_coverage(plan, every, truth),
             "top 25%": truth_coverage(plan, every, truth)}]
    rng = np.random.default_rng(0)
    chance = {f: np.mean([truth_coverage(plan, frozenset(rng.choice(sorted(every),
                                                                     int(f * len(every)),
                                                                     replace=False)), truth)
                          for _ in range(20)]) for f in (0.5, 0.25)}
    rows.append({"template": "(random tiles, mean of 20)", "top 50%": chance[0.5],
                 "top 25%": chance[0.25]})
    for template in ("a satellite image of a {query}", "{query}",
                     "an aerial image with {query}s", "An industrial area with {query}s."):
        row = {"template": template}
        for fraction in (0.5, 0.25):
            kept = prefilter_tiles(raster, plan, query, TilePrefilter(
                engine.retriever.embedder, top_fraction=fraction, template=template)).kept
            row[f"top {fraction:.0%}"] = truth_coverage(plan, kept, truth)
        rows.append(row)
        print(f"  {template!r}: truth inside kept tiles: top 50% {row['top 50%']:.3f}, "
              f"top 25% {row['top 25%']:.3f}", flush=True)
    return rows


def bench_prefilter(engine, raster, query: str, batch: int, thresholds: list[float]) -> list:
    plan = plan_scan(raster, engine)
    clip = engine.retriever.embedder
    sims = prefilter_tiles(raster, plan, query, TilePrefilter(clip, top_fraction=1.0)).similarity
    values = np.array(list(sims.values()))
    print(f"  similarity of {len(values)} tiles to {query!r}: min {values.min():.3f} "
          f"median {np.median(values):.3f} max {values.max():.3f}", flush=True)
    runs = [("none", None)]
    runs += [(f"top {f:.0%}", TilePrefilter(clip, top_fraction=f)) for f in (0.5, 0.25)]
    runs += [(f"threshold {t:+.3f}", TilePrefilter(clip, threshold=t)) for t in thresholds]
    out = []
    for name, prefilter in runs:
        t0 = time.perf_counter()
        result = scan_raster(raster, engine, query, plan=plan, batch_size=batch,
                             prefilter=prefilter)
        seconds = time.perf_counter() - t0
        quality = merged_quality(result, raster, query)
        kept = ({t.index for t in plan.tiles} if prefilter is None else
                prefilter_tiles(raster, plan, query, prefilter).kept)
        coverage = truth_coverage(plan, kept, truth_boxes_px(raster, KIND[query]))
        out.append({"filter": name, "seconds": seconds, "tiles_run": result.tiles_done,
                    "prefiltered": result.prefiltered, "truth_in_kept_tiles": coverage,
                    **quality})
        print(f"  {name:>18}: {result.tiles_done:3d} tiles in {seconds:6.1f} s, "
              f"{quality['objects']} objects, recall {quality['recall']:.3f}, "
              f"precision {quality['precision']:.3f}, truth inside kept tiles {coverage:.3f}",
              flush=True)
    base = out[0]
    for row in out:
        row["speedup"] = base["seconds"] / row["seconds"]
        row["recall_lost"] = base["recall"] - row["recall"]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--queries", default="storage tank,building")
    p.add_argument("--max-tiles", type=int, help="score test on the first N tiles only")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--skip-prefilter", action="store_true")
    p.add_argument("--skip-scores", action="store_true")
    p.add_argument("--templates", action="store_true",
                   help="also compare query templates (CLIP only, truth coverage)")
    p.add_argument("--thresholds", default="", help="comma-separated similarity thresholds "
                   "(default: the 40th and 70th percentile of the tiles' similarities)")
    p.add_argument("--json", type=Path, help="write the numbers here")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)  # a shared machine: OpenMP spin-waits with more
    engine = load_demo_engine()
    raster = tiles.open_raster(SCENE, trusted=True)
    report = {"scores": [], "prefilter": {}}
    for query in [q.strip() for q in args.queries.split(",") if q.strip()]:
        if args.templates:
            print(f"templates: {query!r}", flush=True)
            report.setdefault("templates", {})[query] = bench_templates(engine, raster, query)
        if not args.skip_scores:
            print(f"box scores: {query!r}", flush=True)
            scores = bench_scores(engine, raster, query, args.max_tiles, args.batch)
            report["scores"].append(scores)
            print(json.dumps(scores, indent=1), flush=True)
        if args.skip_prefilter:
            continue
        print(f"pre-filter: {query!r}", flush=True)
        plan = plan_scan(raster, engine)
        sims = prefilter_tiles(raster, plan, query,
                               TilePrefilter(engine.retriever.embedder, top_fraction=1.0))
        values = np.array(list(sims.similarity.values()))
        thresholds = ([float(t) for t in args.thresholds.split(",") if t] or
                      [float(np.percentile(values, 40)), float(np.percentile(values, 70))])
        rows = bench_prefilter(engine, raster, query, args.batch, thresholds)
        report["prefilter"][query] = rows
        for row in rows:
            print(f"  {row['filter']:>18}: speed-up x{row['speedup']:.2f}, recall lost "
                  f"{row['recall_lost']:+.3f}, merged-score AUC {row['auc']:.3f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
