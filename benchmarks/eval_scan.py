"""Whole-scene search vs one downsampled crop: precision and recall at IoU 0.5 per object kind.

    python benchmarks/eval_scan.py [--kinds storage_tank building water road] [--batch-size 8]

On the shipped demo scene (``assets/demo/demo_scene.tif``, 2048 x 2048 px at 0.5 m) with its
ground truth (``assets/demo/demo_scene_truth.geojson``: object footprints with a ``kind``), both
with the shipped demo model on CPU:

* **whole-scene search**: :func:`app.scan.scan_raster` (tiles of the model's 128 px at native
  resolution, 12.5 % overlap, every tile asked to ground the phrase, boxes merged with WBF);
* **baseline, today's single crop**: ``Engine.run`` (ground) on ``tiles.read_crop`` of the whole
  raster at the model's input size (the whole 2048 px scene seen as 128 px), boxes mapped back to
  raster pixels.

A predicted box is a true positive when it matches a not-yet-matched truth box of the kind with
IoU >= 0.5 (truth: the axis-aligned pixel bounds of each footprint; predictions matched best
score first, each to the free truth box it overlaps most). Precision = TP / predictions, recall =
TP / truth objects. The phrases asked are in :data:`PHRASES` (the demo model's own nouns).
Also printed: the scan's P/R keeping only objects with score >= ``--min-score`` (a fixed a-priori
cut, 0.5, not tuned here) and how many truth objects fit in one tile (both sides <= the tile's
span in raster pixels): a box from one tile can match only those at IoU 0.5, since merging
fuses duplicates but never unions the parts of an object larger than a tile.
Prints a Markdown table; nothing here is tuned to the truth.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import tiles
from app.demo import DEMO_DIR, DEMO_RASTER
from app.scanning import engine_input_px, load_scan_engine, scan_raster
from engine.types import Task

TRUTH = DEMO_DIR / "demo_scene_truth.geojson"
# truth kind -> the phrase asked (the demo model's nouns, lab/synthetic/text.py: noun())
PHRASES = {"storage_tank": "storage tank", "building": "building", "water": "water body",
           "road": "road"}


@dataclass(frozen=True)
class Score:
    predicted: int
    truth: int
    tp: int

    @property
    def precision(self) -> float:
        return self.tp / self.predicted if self.predicted else float("nan")

    @property
    def recall(self) -> float:
        return self.tp / self.truth if self.truth else float("nan")


def truth_boxes_px(raster: tiles.Raster, truth_path: Path, kind: str) -> np.ndarray:
    """(N, 4) x0 y0 x1 y1 raster-pixel bounds of the footprints of ``kind`` (truth in the
    raster's CRS, as the demo's truth file is)."""
    collection = json.loads(truth_path.read_text(encoding="utf-8"))
    inverse = ~raster.transform
    boxes = []
    for feature in collection["features"]:
        if feature["properties"].get("kind") != kind:
            continue
        geom = shapely.geometry.shape(feature["geometry"])

        def to_px(xy: np.ndarray) -> np.ndarray:
            col, row = inverse * (xy[:, 0], xy[:, 1])
            return np.stack([col, row], axis=1)

        boxes.append(shapely.transform(geom, to_px).bounds)
    return np.asarray(boxes, float).reshape(-1, 4)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of x0 y0 x1 y1 boxes."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match(pred: np.ndarray, scores: np.ndarray, truth: np.ndarray, iou: float) -> Score:
    """Greedy one-to-one matching, best-scored prediction first."""
    if not len(pred) or not len(truth):
        return Score(len(pred), len(truth), 0)
    overlaps = iou_matrix(pred, truth)
    free = np.ones(len(truth), bool)
    tp = 0
    for i in np.argsort(-scores, kind="stable"):
        candidates = np.where(free, overlaps[i], -1.0)
        j = int(np.argmax(candidates))
        if candidates[j] >= iou:
            free[j] = False
            tp += 1
    return Score(len(pred), len(truth), tp)


def single_crop_boxes(raster, source, engine, phrase: str, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Today's whole-raster question: one crop of the full raster at ``side`` px."""
    crop = tiles.read_crop(raster, tiles.full_window(raster), side, source=source)
    answer = engine.run(crop.image, Task.GROUND, question=phrase)
    polygons = tiles.boxes_to_raster_px(crop, answer.boxes_px) if answer.boxes_px else []
    boxes = np.asarray([p.bounds for p in polygons], float).reshape(-1, 4)
    scores = np.asarray([1.0 if b.score is None else b.score for b in answer.boxes_px], float)
    return boxes, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raster", type=Path, default=DEMO_RASTER)
    parser.add_argument("--truth", type=Path, default=TRUTH)
    parser.add_argument("--kinds", nargs="+", default=list(PHRASES), choices=list(PHRASES))
    parser.add_argument("--iou", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--min-score", type=float, default=0.5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    engine, _ = load_scan_engine(argparse.Namespace(
        model=None, backbone="paper", adapter=None, device=args.device, max_answer_tokens=None))
    side = engine_input_px(engine) or 512
    rows = []
    with tiles.Catalog(REPO_ROOT / ".bench-cache" / "eval-workspace") as catalog:
        raster_id = catalog.open(args.raster, trusted=True)
        raster, source = catalog.get(raster_id), catalog.source(raster_id)
        for kind in args.kinds:
            phrase = PHRASES[kind]
            truth = truth_boxes_px(raster, args.truth, kind)
            start = time.perf_counter()
            result = scan_raster(raster, engine, phrase, source=source,
                                 batch_size=args.batch_size, progress=_Ticker(kind))
            scan_s = time.perf_counter() - start
            pred = np.asarray([o.box_px for o in result.objects], float).reshape(-1, 4)
            scores = np.asarray([o.score for o in result.objects], float)
            whole = match(pred, scores, truth, args.iou)
            sure = scores >= args.min_score
            confident = match(pred[sure], scores[sure], truth, args.iou)
            span = result.tile_px * result.decimation
            sizes = truth[:, 2:] - truth[:, :2]
            fits = int(np.sum((sizes <= span).all(axis=1)))
            start = time.perf_counter()
            crop_boxes, crop_scores = single_crop_boxes(raster, source, engine, phrase, side)
            crop_s = time.perf_counter() - start
            single = match(crop_boxes, crop_scores, truth, args.iou)
            rows.append((kind, phrase, len(truth), whole, result.tiles_done, scan_s, single,
                         crop_s, confident, fits))
            print(f"{kind}: scan {whole} in {scan_s:.1f} s; single crop {single}",
                  file=sys.stderr, flush=True)

    print(f"\nWhole-scene search vs one {side} px crop of the whole raster ({raster.width} x "
          f"{raster.height} px), demo model, IoU >= {args.iou}\n")
    print(f"| kind (phrase) | truth (fit in a tile) | scan: found | scan: P | scan: R | "
          f"scan, score >= {args.min_score}: found / P / R | single crop: found | "
          "single crop: P | single crop: R | scan tiles (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind, phrase, n, whole, n_tiles, scan_s, single, crop_s, sure, fits in rows:
        print(f"| {kind} ({phrase!r}) | {n} ({fits}) | {whole.predicted} | "
              f"{_fmt(whole.precision)} | {_fmt(whole.recall)} | {sure.predicted} / "
              f"{_fmt(sure.precision)} / {_fmt(sure.recall)} | {single.predicted} | "
              f"{_fmt(single.precision)} | {_fmt(single.recall)} | "
              f"{n_tiles} ({scan_s:.0f} s; crop {crop_s:.2f} s) |")
    tp_w = sum(r[3].tp for r in rows)
    tp_s = sum(r[6].tp for r in rows)
    n_truth = sum(r[2] for r in rows)
    print(f"\nAll kinds: scan recall {tp_w}/{n_truth} = {tp_w / n_truth:.3f}, single crop "
          f"{tp_s}/{n_truth} = {tp_s / n_truth:.3f}")


class _Ticker:
    """Prints a line to stderr every 50 tiles (a scan of the demo scene has 361)."""

    def __init__(self, kind: str) -> None:
        self.kind, self.n, self.start = kind, 0, time.perf_counter()

    def __call__(self, found: tiles.TileDetections) -> None:
        self.n += 1
        if self.n % 50 == 0:
            print(f"  {self.kind}: {self.n} tiles, {time.perf_counter() - self.start:.0f} s",
                  file=sys.stderr, flush=True)


def _fmt(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.3f}"


if __name__ == "__main__":
    main()
