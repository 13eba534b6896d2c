"""The demo model's scores on fresh synthetic scenes (seeds never used in training).

:func:`fresh_test_samples` generates scenes exactly as the training dataset does
(:func:`lab.synthetic.build_dataset`: classes cycling rural/urban/industrial, 2x2 crops per scene,
presence balanced to 50 % yes per object kind) but from another seed, so no test scene was seen
in training. :func:`demo_scores` runs the engine over them and reports:

* presence accuracy, counting accuracy (exact number), scene accuracy (3 classes);
* grounding Acc@0.5 and mean IoU, overall and per selector (``only``, ``largest``, ...) and per
  target kind; ``ground_min_frac`` optionally restricts grounding to targets covering at least
  that fraction of the crop (reported as a separate, labelled number);
* per image axis (:func:`centre_axis_errors`): how far the predicted box centres lie from the
  true ones across (x) and down (y) the crop, and how well they correlate. The demo model's
  boxes are right in y and wrong in x (docs/BENCHMARKS.md, "Demo model"); this is where that
  shows.
* what each grounding miss hit instead (:func:`grounding_outcome`, needs the other objects of
  each crop from :func:`fresh_test_set`): another object of the same kind, another kind, the
  target with a loose box, or nothing; and the centre errors of the misses alone. For the demo
  model most misses are the wrong house of the right row: the generator builds houses in
  east-west rows, so picking the wrong one is an error in x only.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from engine.data.instructions import Sample
from engine.evaluation.runner import predict
from engine.metrics import box_iou, classification_accuracy, grounding_scores, vqa_accuracy
from engine.types import BoxPx, Task
from lab.synthetic.dataset import balance_presence, scene_seed
from lab.synthetic.layouts import generate_scene
from lab.synthetic.scene import SCENE_CLASSES
from lab.synthetic.tasks import make_samples, view_id
from lab.synthetic.views import crop_views, target_box

__all__ = [
    "GROUND_OUTCOMES",
    "DemoScores",
    "centre_axis_errors",
    "demo_scores",
    "fresh_scenes",
    "fresh_test_samples",
    "fresh_test_set",
    "grounding_outcome",
    "grounding_outcomes",
    "selector_of",
]

TEST_TYPES = ("presence", "count", "scene", "ground")
# what a grounding answer landed on (see grounding_outcome)
GROUND_OUTCOMES = ("hit", "near", "other_same_kind", "other_kind", "elsewhere", "no_box")
NEAR_IOU = 0.25  # a miss with at least this IoU with the target found the target, loosely


def fresh_test_samples(
    seed: int, n_scenes: int, crop_px: int = 128, types: tuple[str, ...] = TEST_TYPES
) -> list[Sample]:
    """In-memory test samples of ``n_scenes`` scenes (``scene_seed(seed, i)``) of these types."""
    return _fresh(seed, n_scenes, crop_px, types, with_others=False)[0]


def fresh_test_set(
    seed: int, n_scenes: int, crop_px: int = 128, types: tuple[str, ...] = TEST_TYPES
) -> tuple[list[Sample], dict[str, tuple[BoxPx, ...]]]:
    """:func:`fresh_test_samples` plus, per grounding sample id, the boxes (crop pixels,
    ``label`` = kind) of every other object visible in its crop: what a wrong answer may have
    picked instead (:func:`grounding_outcome`)."""
    return _fresh(seed, n_scenes, crop_px, types, with_others="ground" in types)


def fresh_scenes(seed: int, n_scenes: int, crop_px: int = 128):
    """The scenes behind :func:`fresh_test_samples` (``scene_seed(seed, i)``, classes cycling
    rural/urban/industrial, 2x2 crops each), one at a time."""
    for i in range(n_scenes):
        yield generate_scene(scene_seed(seed, i), 2 * crop_px, SCENE_CLASSES[i % 3])


def _fresh(seed, n_scenes, crop_px, types, with_others: bool):
    samples: list[Sample] = []
    others: dict[str, tuple[BoxPx, ...]] = {}
    for scene in fresh_scenes(seed, n_scenes, crop_px):
        scene_samples = make_samples(scene, crop_px)
        samples.extend(scene_samples)
        if with_others:
            others.update(_other_objects(scene, crop_px, scene_samples))
    samples = balance_presence(samples, np.random.default_rng(seed))
    return [s for s in samples if s.question_type in types], others


def _other_objects(scene, crop_px: int, scene_samples: list[Sample]) -> dict:
    """Per grounding sample of ``scene``: the boxes of the other objects of its crop."""
    totals = np.bincount(scene.object_ids_px.ravel(), minlength=len(scene.objects) + 1)
    views = {view_id(v): v for v in crop_views(scene, crop_px)}
    out = {}
    for s in scene_samples:
        if s.task is Task.GROUND:
            view, target = views[s.id.rsplit(":", 1)[0]], ground_target_id(s)
            out[s.id] = tuple(
                target_box(o, view, totals) or view.visible_box(o)
                for o in view.objects()
                if o.id != target
            )
    return out


def selector_of(sample: Sample) -> str:
    """The referring-expression selector of a synthetic grounding sample (id ``...-<selector>``)."""
    return sample.id.rsplit("-", 1)[1]


def ground_target_id(sample: Sample) -> int:
    """The scene object id a synthetic grounding sample asks for (id ``...:ground-<id>-<sel>``)."""
    return int(sample.id.rsplit(":", 1)[1].split("-")[1])


def grounding_outcome(predicted: BoxPx | None, truth: BoxPx, others: tuple[BoxPx, ...]) -> str:
    """What a grounding answer landed on, one of :data:`GROUND_OUTCOMES`: ``hit`` (IoU >= 0.5
    with the target); else ``other_same_kind`` / ``other_kind`` (IoU >= 0.5 with another object
    of the crop, by ``label``); else ``near`` (IoU >= 0.25 with the target: found, box loose);
    else ``elsewhere``; ``no_box`` when the answer had no box."""
    if predicted is None:
        return "no_box"
    iou_target = box_iou(predicted, truth)
    if iou_target >= 0.5:
        return "hit"
    best = max(others, key=lambda b: box_iou(predicted, b), default=None)
    if best is not None and box_iou(predicted, best) >= 0.5:
        return "other_same_kind" if best.label == truth.label else "other_kind"
    return "near" if iou_target >= NEAR_IOU else "elsewhere"


def grounding_outcomes(predicted, truth, others, sizes_px) -> dict:
    """Counts of :func:`grounding_outcome` overall (``counts``) and per target kind
    (``by_kind``), plus :func:`centre_axis_errors` of the misses alone (``miss_axes``)."""
    outcomes = [grounding_outcome(p, t, o) for p, t, o in zip(predicted, truth, others)]
    counts = {k: outcomes.count(k) for k in GROUND_OUTCOMES}
    by_kind: dict[str, dict[str, int]] = {}
    for t, k in zip(truth, outcomes):
        by_kind.setdefault(t.label or "?", dict.fromkeys(GROUND_OUTCOMES, 0))[k] += 1
    miss = [i for i, k in enumerate(outcomes) if k not in ("hit", "no_box")]
    miss_axes = centre_axis_errors(
        [predicted[i] for i in miss], [truth[i] for i in miss], [sizes_px[i] for i in miss]
    )
    return {"counts": counts, "by_kind": dict(sorted(by_kind.items())), "miss_axes": miss_axes}


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
    ground_outcomes: dict | None = None

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
            "grounding_outcomes": self.ground_outcomes,
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
    engine,
    samples: list[Sample],
    batch_size: int = 16,
    ground_min_frac: float | None = None,
    others: dict[str, tuple[BoxPx, ...]] | None = None,
) -> tuple[DemoScores, list]:
    """Score ``engine`` on ``samples`` (from :func:`fresh_test_samples`); also returns the
    predictions in sample order. With ``others`` (from :func:`fresh_test_set`) the scores say
    what each grounding miss landed on (``grounding_outcomes``)."""
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
    truth, sizes = [s.boxes_px[0] for s in ground], [s.image_size_px for s in ground]
    outcomes = None
    if ground and others is not None:
        outcomes = grounding_outcomes(firsts, truth, [others[s.id] for s in ground], sizes)
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
        ground_axes=centre_axis_errors(firsts, truth, sizes) if ground else None,
        ground_outcomes=outcomes,
    )
    return scores, preds
