"""The demo model's scores on fresh synthetic scenes (seeds never used in training).

:func:`fresh_test_samples` generates scenes exactly as the training dataset does
(:func:`engine.data.build_dataset`: classes cycling rural/urban/industrial, 2x2 crops per scene,
presence balanced to 50 % yes per object kind) but from another seed, so no test scene was seen
in training. :func:`demo_scores` runs the engine over them and reports:

* presence accuracy, counting accuracy (exact number), scene accuracy (3 classes);
* grounding Acc@0.5 and mean IoU, overall and per selector (``only``, ``largest``, ...) and per
  target kind; ``ground_min_frac`` optionally restricts grounding to targets covering at least
  that fraction of the crop (reported as a separate, labelled number);
* per image axis (:func:`centre_axis_errors`): how far the predicted box centres lie from the
  true ones across (x) and down (y) the crop, and how well they correlate. The demo model
  found rows and not columns (docs/BENCHMARKS.md, "Demo model"); this is where that shows.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from engine.data.instructions import Sample
from engine.data.synthetic import SCENE_CLASSES, generate_scene
from engine.data.synthetic_dataset import balance_presence, scene_seed
from engine.data.synthetic_tasks import make_samples
from engine.evaluation.runner import predict
from engine.metrics import classification_accuracy, grounding_scores, vqa_accuracy
from engine.types import Task

__all__ = [
    "DemoScores",
    "centre_axis_errors",
    "demo_scores",
    "fresh_test_samples",
    "selector_of",
]

TEST_TYPES = ("presence", "count", "scene", "ground")


def fresh_test_samples(
    seed: int, n_scenes: int, crop_px: int = 128, types: tuple[str, ...] = TEST_TYPES
) -> list[Sample]:
    """In-memory test samples of ``n_scenes`` scenes (``scene_seed(seed, i)``) of these types."""
    samples: list[Sample] = []
    for i in range(n_scenes):
        scene = generate_scene(scene_seed(seed, i), 2 * crop_px, SCENE_CLASSES[i % 3])
        samples.extend(make_samples(scene, crop_px))
    samples = balance_presence(samples, np.random.default_rng(seed))
    return [s for s in samples if s.question_type in types]


def selector_of(sample: Sample) -> str:
    """The referring-expression selector of a synthetic grounding sample (id ``...-<selector>``)."""
    return sample.id.rsplit("-", 1)[1]


@dataclass(frozen=True)
class DemoScores:
    """Fractions in [0, 1] (``None`` when there was no sample of that kind) and sample counts."""

    presence: float | None
    count: float | None
    scene: float | None
    ground_acc50: float | None
    ground_miou: float | None
    ground_by_selector: dict
    ground_by_kind: dict
    counts: dict
    ground_restricted: dict | None = None
    ground_axes: dict | None = None

    def to_json(self) -> dict:
        return {
            "presence_accuracy": self.presence,
            "count_accuracy": self.count,
            "scene_accuracy": self.scene,
            "grounding_acc50": self.ground_acc50,
            "grounding_miou": self.ground_miou,
            "grounding_by_selector": self.ground_by_selector,
            "grounding_by_kind": self.ground_by_kind,
            "grounding_restricted": self.ground_restricted,
            "grounding_axes": self.ground_axes,
            "n": self.counts,
        }


def _accuracy(samples, preds, qtype) -> float | None:
    idx = [i for i, s in enumerate(samples) if s.question_type == qtype]
    if not idx:
        return None
    report = vqa_accuracy(
        [preds[i].text for i in idx], [samples[i].answer for i in idx], [qtype] * len(idx)
    )
    return report.overall


def _grounding_by(samples, ious, key) -> dict:
    groups: dict[str, list[float]] = defaultdict(list)
    for s, iou in zip(samples, ious):
        groups[key(s)].append(iou)
    return {
        k: {"acc50": sum(i >= 0.5 for i in v) / len(v), "miou": sum(v) / len(v), "n": len(v)}
        for k, v in sorted(groups.items())
    }


def centre_axis_errors(predicted, truth, sizes_px) -> dict | None:
    """Box centres per image axis: ``median_abs_dx``/``dy`` (fractions of the crop's width and
    height) and the Pearson correlations ``corr_x``/``corr_y`` between predicted and true centre
    coordinates, over the samples with a predicted box (``None`` in ``predicted`` = no box).
    ``None`` when fewer than two boxes were predicted."""
    pairs = [
        (
            ((p.x0 + p.x1) / 2 / w, (p.y0 + p.y1) / 2 / h),
            ((t.x0 + t.x1) / 2 / w, (t.y0 + t.y1) / 2 / h),
        )
        for p, t, (w, h) in zip(predicted, truth, sizes_px)
        if p is not None
    ]
    if len(pairs) < 2:
        return None
    pred, true = np.array([p for p, _ in pairs]), np.array([t for _, t in pairs])  # (N, 2)

    def corr(axis: int) -> float | None:
        a, b = pred[:, axis], true[:, axis]
        return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else None

    err = np.median(np.abs(pred - true), axis=0)  # (2,)
    return {
        "n": len(pairs),
        "median_abs_dx": float(err[0]),
        "median_abs_dy": float(err[1]),
        "corr_x": corr(0),
        "corr_y": corr(1),
    }


def demo_scores(
    engine, samples: list[Sample], batch_size: int = 16, ground_min_frac: float | None = None
) -> tuple[DemoScores, list]:
    """Score ``engine`` on ``samples`` (from :func:`fresh_test_samples`); also returns the
    predictions in sample order."""
    preds = predict(engine, samples, batch_size)
    scene_idx = [i for i, s in enumerate(samples) if s.task is Task.CLASSIFY]
    scene = None
    if scene_idx:
        scene = classification_accuracy(
            [preds[i].label or preds[i].text for i in scene_idx],
            [samples[i].answer for i in scene_idx],
            SCENE_CLASSES,
        ).overall
    ground = [s for s in samples if s.task is Task.GROUND]
    gpreds = [p for s, p in zip(samples, preds) if s.task is Task.GROUND]
    firsts = [p.boxes_px[0] if p.boxes_px else None for p in gpreds]
    report = grounding_scores(firsts, [s.boxes_px[0] for s in ground]) if ground else None
    restricted = None
    if ground and ground_min_frac is not None:
        keep = [
            i
            for i, s in enumerate(ground)
            if s.boxes_px[0].area >= ground_min_frac * np.prod(s.image_size_px)
        ]
        sub = grounding_scores([firsts[i] for i in keep], [ground[i].boxes_px[0] for i in keep])
        restricted = {
            "min_frac": ground_min_frac,
            "acc50": sub.acc_at_05,
            "miou": sub.miou,
            "n": sub.n,
        }
    counts = {t: sum(s.question_type == t for s in samples) for t in TEST_TYPES}
    scores = DemoScores(
        presence=_accuracy(samples, preds, "presence"),
        count=_accuracy(samples, preds, "count"),
        scene=scene,
        ground_acc50=report.acc_at_05 if report else None,
        ground_miou=report.miou if report else None,
        ground_by_selector=_grounding_by(ground, report.ious, selector_of) if report else {},
        ground_by_kind=_grounding_by(ground, report.ious, lambda s: s.boxes_px[0].label or "?")
        if report
        else {},
        counts=counts,
        ground_restricted=restricted,
        ground_axes=centre_axis_errors(
            firsts, [s.boxes_px[0] for s in ground], [s.image_size_px for s in ground]
        )
        if ground
        else None,
    )
    return scores, preds
