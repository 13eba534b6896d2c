"""Instruction samples from synthetic scenes, decided from the object-id map (what is visible).

A scene is cut into square crops (:class:`~lab.synthetic.views.CropView`); every crop
yields samples for all tasks:

- ``classify``: the scene class among ``rural``/``urban``/``industrial`` (level scene);
- ``ask`` presence (``question_type="presence"``): ``yes`` when the kind covers at least
  :data:`PRESENCE_MIN_M2` in the crop, ``no`` when not one pixel of it is visible, no question
  in between (ambiguous slivers); counting (``"count"``) of buildings / storage tanks, only
  when no object of the kind is cut between 20 % and 80 % of its visible area;
- ``ground``: a referring expression that matches exactly one object (see
  :mod:`lab.synthetic.views`) with its box on the 0-1000 grid; things (buildings, tanks,
  lakes, ponds) must be fully inside the crop, stuff (roads, rivers, fields, forests) gets the
  box of its visible part;
- ``region``: "What is in this box?" about a whole object;
- ``caption``: a scene caption, and an object caption with ``region_px`` (level object).

Sample ids are ``synthetic:<seed>:<row>_<col>:<task>-<detail>``; presence ids end with the kind
(``...:presence-water``) so datasets can balance yes/no per kind, grounding ids with the target
id and selector (``...:ground-12-largest``) so training can filter expression types.
"""

from __future__ import annotations

import numpy as np

from engine.data.boxes import box_to_grid
from engine.data.instructions import Sample
from engine.types import BoxPx, Level, Task
from lab.synthetic.scene import SCENE_CLASSES, SyntheticScene
from lab.synthetic.text import (
    COUNT_QUESTIONS,
    PRESENCE_QUESTIONS,
    REGION_QUESTIONS,
    object_caption,
    object_description,
    object_phrase,
    scene_caption,
    with_article,
)
from lab.synthetic.views import (
    SELECTORS,
    CropView,
    crop_views,
    is_thing,
    referring_expressions,
)

__all__ = ["PRESENCE_MIN_M2", "corpus_records", "exact_count", "make_samples", "view_id"]

PRESENCE_MIN_M2 = {
    "building": 40,
    "water": 150,
    "road": 60,
    "field": 400,
    "forest": 300,
    "storage_tank": 60,
}


# ------------------------------------------------------------------ samples


def view_id(view: CropView) -> str:
    """The id prefix of every sample of ``view``: ``synthetic:<scene seed>:<row>_<col>``."""
    return f"synthetic:{view.scene.seed}:{view.row_off}_{view.col_off}"


def _sample(view: CropView, tag: str, task: Task, question: str, answer: str, **fields) -> Sample:
    return Sample(
        id=f"{view_id(view)}:{tag}",
        task=task,
        question=question,
        answer=answer,
        image=view.image,
        source="synthetic",
        **fields,
    )


def _presence(view: CropView, rng: np.random.Generator) -> list[Sample]:
    ps2 = view.scene.pixel_size_m**2
    out = []
    for kind, questions in PRESENCE_QUESTIONS.items():
        area_px = sum(int(view.visible_px[o.id]) for o in view.scene.objects if o.kind == kind)
        if area_px == 0 or area_px * ps2 >= PRESENCE_MIN_M2[kind]:
            out.append(
                _sample(
                    view,
                    f"presence-{kind}",
                    Task.ASK,
                    questions[int(rng.integers(len(questions)))],
                    "yes" if area_px else "no",
                    question_type="presence",
                    level=Level.OBJECT,
                )
            )
    return out


def exact_count(view: CropView, kind: str, totals: np.ndarray) -> int | None:
    """Objects of ``kind`` in the crop (>= 80 % of each visible), or None when one is cut
    between 20 % and 80 % (the count would be a guess)."""
    fractions = [
        view.fraction(o, totals)
        for o in view.scene.objects
        if o.kind == kind and view.visible_px[o.id]
    ]
    if any(0.2 < f < 0.8 for f in fractions):
        return None
    return sum(f >= 0.8 for f in fractions)


def _counts(view: CropView, totals: np.ndarray, rng: np.random.Generator) -> list[Sample]:
    out = []
    for kind, questions in COUNT_QUESTIONS.items():
        n = exact_count(view, kind, totals)
        if n is None:
            continue
        if kind == "storage_tank" and view.scene_class != "industrial" and rng.random() < 0.7:
            continue  # mostly "0" outside industrial scenes; keep a few
        out.append(
            _sample(
                view,
                f"count-{kind}",
                Task.ASK,
                questions[int(rng.integers(len(questions)))],
                str(n),
                question_type="count",
                level=Level.OBJECT,
            )
        )
    return out


def _grounding(
    view: CropView, totals: np.ndarray, rng: np.random.Generator, most: int, min_area_px: float
) -> list[Sample]:
    found = [f for f in referring_expressions(view, totals) if f[2].area >= min_area_px]
    by_target: dict[int, list] = {}
    for expr, obj, box in found:
        by_target.setdefault(obj.id, []).append((expr, box))
    targets = list(by_target)
    rng.shuffle(targets)
    out, size = [], (view.size_px, view.size_px)
    for oid in targets[:most]:
        exprs = sorted(by_target[oid], key=lambda e: SELECTORS.index(e[0].selector))
        expr, box = exprs[
            min(int(rng.integers(len(exprs))), int(rng.integers(len(exprs))))
        ]  # favour simple ones
        out.append(
            _sample(
                view,
                f"ground-{oid}-{expr.selector}",
                Task.GROUND,
                expr.text(int(rng.integers(2))),
                box_to_grid(box, size).text(),
                image_size_px=size,
                boxes_px=(box,),
                question_type="ground",
                level=Level.OBJECT,
            )
        )
    return out


def _regions(
    view: CropView, totals: np.ndarray, rng: np.random.Generator, most: int, min_area_px: float
) -> list[Sample]:
    boxes = {o.id: view.whole_box(o, totals) for o in view.objects() if is_thing(o)}
    things = [
        o for o in view.objects() if boxes.get(o.id) is not None and boxes[o.id].area >= min_area_px
    ]
    rng.shuffle(things)
    out, size = [], (view.size_px, view.size_px)
    for obj in things[:most]:
        box = boxes[obj.id]
        pad = 0.1 * max(box.x1 - box.x0, box.y1 - box.y0)
        region = BoxPx(
            max(0.0, box.x0 - pad),
            max(0.0, box.y0 - pad),
            min(size[0], box.x1 + pad),
            min(size[1], box.y1 + pad),
        )
        answer = with_article(
            object_phrase(obj.kind, obj.colour if obj.kind != "water" else None, obj.subtype)
        )
        out.append(
            _sample(
                view,
                f"region-{obj.id}",
                Task.REGION,
                REGION_QUESTIONS[int(rng.integers(3))],
                answer,
                image_size_px=size,
                region_px=region,
                question_type="region",
                level=Level.OBJECT,
            )
        )
        if obj is things[0]:
            out.append(
                _sample(
                    view,
                    f"caption-object-{obj.id}",
                    Task.CAPTION,
                    "",
                    object_caption(obj, rng),
                    image_size_px=size,
                    region_px=region,
                    question_type="caption_object",
                    level=Level.OBJECT,
                )
            )
    return out


def _crop_caption(view: CropView, totals: np.ndarray, rng: np.random.Generator) -> str:
    """Scene caption of a crop; building/tank numbers only where :func:`exact_count` is sure."""
    shown = [
        o
        for o in view.objects()
        if view.fraction(o, totals) >= 0.5 or o.kind in ("road", "field", "forest", "water")
    ]
    counts = {kind: exact_count(view, kind, totals) for kind in COUNT_QUESTIONS}
    return scene_caption(view.scene_class, shown, rng, counts)


def make_samples(
    scene: SyntheticScene,
    crop_px: int = 224,
    stride_px: int | None = None,
    seed: int | None = None,
    max_ground: int = 2,
    max_region: int = 2,
    min_target_frac: float = 0.008,
) -> list[Sample]:
    """Instruction samples for every crop of ``scene`` (images held in memory, uint8 HxWx3).

    Grounding and region targets smaller than ``min_target_frac`` of the crop area (default
    0.8 %, 20 x 20 px in a 224 px crop) are skipped: a small model cannot localise them.
    Deterministic: wording choices use ``seed`` (default: the scene's seed).
    """
    rng = np.random.default_rng(scene.seed if seed is None else seed)
    totals = np.bincount(scene.object_ids_px.ravel(), minlength=len(scene.objects) + 1)
    samples = []
    for view in crop_views(scene, crop_px, stride_px):
        if view.scene_class is None:
            continue  # a crop across a mosaic seam has no single class
        samples.append(
            _sample(
                view,
                "classify",
                Task.CLASSIFY,
                "",
                view.scene_class,
                labels=SCENE_CLASSES,
                question_type="scene",
                level=Level.SCENE,
            )
        )
        samples.extend(_presence(view, rng))
        samples.extend(_counts(view, totals, rng))
        min_area_px = min_target_frac * crop_px**2
        samples.extend(_grounding(view, totals, rng, max_ground, min_area_px))
        samples.extend(_regions(view, totals, rng, max_region, min_area_px))
        samples.append(
            _sample(
                view,
                "caption-scene",
                Task.CAPTION,
                "",
                _crop_caption(view, totals, rng),
                question_type="caption_scene",
                level=Level.SCENE,
            )
        )
    return samples


def _centre(obj) -> tuple[float, float]:
    box = obj.box_px
    return (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2


def corpus_records(
    scene: SyntheticScene, crop_px: int = 224, seed: int | None = None
) -> list[dict]:
    """Knowledge-base records ``{"text", "source", "level"}``: scene captions of the whole
    scene and its crops (level scene) and one description per object (level object)."""
    rng = np.random.default_rng((scene.seed if seed is None else seed) + 7919)
    source = f"synthetic:{scene.seed}"
    records = []
    if scene.scene_class != "mixed":
        text = scene_caption(scene.scene_class, list(scene.objects), rng)
        records.append({"text": text, "source": source, "level": "scene"})
    totals = np.bincount(scene.object_ids_px.ravel(), minlength=len(scene.objects) + 1)
    for view in crop_views(scene, crop_px):
        if view.scene_class is None:
            continue
        records.append(
            {"text": _crop_caption(view, totals, rng), "source": source, "level": "scene"}
        )
    for obj in scene.objects:
        records.append(
            {
                "text": object_description(obj, scene.class_at(*_centre(obj))),
                "source": source,
                "level": "object",
            }
        )
    return records
