"""Synthetic instruction datasets on disk: PNG crops, JSONL splits and a knowledge-base corpus.

``build_dataset(out_dir, n_scenes, seed)`` writes::

    out_dir/images/<split>/<scene seed>_<row>_<col>.png  crops (uint8 RGB)
    out_dir/train.jsonl, val.jsonl, test.jsonl            samples (engine.data.instructions)
    out_dir/corpus.jsonl                                  {"text", "source", "level"}, train scenes
    out_dir/manifest.json                                 parameters, scene seeds per split, counts

Scene ``i`` uses seed ``seed * 1_000_000 + i`` and class ``SCENE_CLASSES[i % 3]``; the first
80 % of the scenes are train, then val, then test, so splits never share a scene and datasets
built with different ``seed`` values never share a scene either (for fewer than a million
scenes). Presence questions are balanced to 50 % yes per object kind and split.

CLI: ``python -m lab.synthetic OUT_DIR --scenes 500 --seed 0 --workers 2``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.atomic import atomic_file
from engine.data.instructions import Sample, write_jsonl
from lab.synthetic.layouts import generate_scene
from lab.synthetic.scene import SCENE_CLASSES
from lab.synthetic.tasks import corpus_records, make_samples

__all__ = ["SPLITS", "DatasetManifest", "balance_presence", "build_dataset", "scene_seed"]

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SEED_STRIDE = 1_000_000


@dataclass(frozen=True)
class DatasetManifest:
    out_dir: Path
    seeds: dict[str, tuple[int, ...]]  # scene seeds per split
    counts: dict[str, dict[str, int]]  # per split: samples per question type
    crop_px: int
    scene_px: int
    pixel_size_m: float

    def to_json(self) -> dict:
        return {
            "seeds": {k: list(v) for k, v in self.seeds.items()},
            "counts": self.counts,
            "crop_px": self.crop_px,
            "scene_px": self.scene_px,
            "pixel_size_m": self.pixel_size_m,
        }


def scene_seed(seed: int, index: int) -> int:
    return seed * SEED_STRIDE + index


def _split_of(index: int, n_scenes: int, fractions: tuple[float, float, float]) -> str:
    n_train = round(fractions[0] * n_scenes)
    n_val = round(fractions[1] * n_scenes)
    return "train" if index < n_train else "val" if index < n_train + n_val else "test"


def _render(job: tuple) -> tuple[str, list[Sample], list[dict]]:
    """One scene: generate, cut into samples, write its crops; returns (split, samples, corpus)."""
    out_dir, split, sseed, cls, scene_px, crop_px, pixel_size_m = job
    from PIL import Image

    scene = generate_scene(sseed, scene_px, cls, pixel_size_m)
    folder = Path(out_dir) / "images" / split
    written: dict[int, str] = {}
    samples = []
    for sample in make_samples(scene, crop_px):
        key = id(sample.image)
        if key not in written:
            _, _, pos, _ = sample.id.split(":", 3)
            path = folder / f"{sseed}_{pos}.png"
            Image.fromarray(sample.image).save(path, compress_level=1)
            written[key] = str(path)
        samples.append(dataclasses.replace(sample, image=None, image_path=written[key]))
    corpus = corpus_records(scene, crop_px) if split == "train" else []
    return split, samples, corpus


def balance_presence(samples: list[Sample], rng: np.random.Generator) -> list[Sample]:
    """Drop presence questions so each kind (id suffix ``presence-<kind>``) is 50 % yes."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, s in enumerate(samples):
        if s.question_type == "presence":
            kind = s.id.rsplit("presence-", 1)[1]
            groups.setdefault((kind, s.answer), []).append(i)
    drop: set[int] = set()
    for kind in sorted({k for k, _ in groups}):  # sorted: set order varies between runs
        yes, no = groups.get((kind, "yes"), []), groups.get((kind, "no"), [])
        keep = min(len(yes), len(no))
        for idx in (yes, no):
            drop.update(rng.permutation(idx)[keep:].tolist())
    return [s for i, s in enumerate(samples) if i not in drop]


def build_dataset(
    out_dir: str | Path,
    n_scenes: int,
    seed: int = 0,
    crop_px: int = 224,
    scene_px: int | None = None,
    pixel_size_m: float = 0.5,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    workers: int = 1,
) -> DatasetManifest:
    """Generate ``n_scenes`` scenes (``scene_px`` defaults to ``2 * crop_px``: 4 crops each)."""
    if n_scenes < 1 or n_scenes >= SEED_STRIDE:
        raise ValueError(f"n_scenes must be in [1, {SEED_STRIDE}), got {n_scenes}")
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    out_dir = Path(out_dir)
    scene_px = scene_px or 2 * crop_px
    for split in SPLITS:
        (out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
    jobs = [
        (
            str(out_dir),
            _split_of(i, n_scenes, fractions),
            scene_seed(seed, i),
            SCENE_CLASSES[i % 3],
            scene_px,
            crop_px,
            pixel_size_m,
        )
        for i in range(n_scenes)
    ]
    by_split, corpus = _gather(_run(jobs, workers))
    rng = np.random.default_rng(seed)
    counts = {}
    for split in SPLITS:
        samples = balance_presence(by_split[split], rng)
        write_jsonl(samples, out_dir / f"{split}.jsonl")
        counts[split] = dict(Counter(s.question_type or s.task.value for s in samples))
    _write_corpus(corpus, out_dir / "corpus.jsonl")
    manifest = DatasetManifest(
        out_dir,
        {s: tuple(j[2] for j in jobs if j[1] == s) for s in SPLITS},
        counts,
        crop_px,
        scene_px,
        pixel_size_m,
    )
    (out_dir / "manifest.json").write_text(
        json.dumps(manifest.to_json(), indent=1), encoding="utf-8"
    )
    log.info("wrote %s: %s", out_dir, counts)
    return manifest


def _run(jobs: list[tuple], workers: int) -> list[tuple[str, list[Sample], list[dict]]]:
    """Render every scene, in job order (also with worker processes, so output is the same)."""
    if workers <= 1:
        return [_render(job) for job in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_render, jobs, chunksize=8))


def _gather(results) -> tuple[dict[str, list[Sample]], list[dict]]:
    """Samples per split and the corpus records with duplicate texts removed."""
    by_split: dict[str, list[Sample]] = {s: [] for s in SPLITS}
    corpus, seen = [], set()
    for split, samples, records in results:
        by_split[split].extend(samples)
        for rec in records:
            if rec["text"] not in seen:
                seen.add(rec["text"])
                corpus.append(rec)
    return by_split, corpus


def _write_corpus(records: list[dict], path: Path) -> None:
    with atomic_file(path) as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    """CLI entry point (``python -m lab.synthetic``); prints the sample counts per split."""
    parser = argparse.ArgumentParser(
        prog="python -m lab.synthetic", description="Write a synthetic GeoLens instruction dataset."
    )
    parser.add_argument("out_dir")
    parser.add_argument("--scenes", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crop-px", type=int, default=224)
    parser.add_argument("--scene-px", type=int, default=None)
    parser.add_argument("--pixel-size-m", type=float, default=0.5)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    manifest = build_dataset(
        args.out_dir,
        args.scenes,
        args.seed,
        args.crop_px,
        args.scene_px,
        args.pixel_size_m,
        workers=args.workers,
    )
    print(json.dumps(manifest.counts, indent=1))
