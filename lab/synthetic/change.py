"""Synthetic change pairs: the same scene before and after, with ground-truth change footprints.

:func:`make_pair` draws one scene twice with :class:`~lab.synthetic.scene.SceneEdits`
(everything else pixel-identical: layout, textures, sensor noise) and cuts the same square
window out of both renders:

- **true change** (:data:`CHANGE_TYPES`): buildings and storage tanks built (``new``: missing
  in the before render) or demolished (``removed``: missing in the after render, the ground
  under them shows), forest cleared (``removed``: a rectangle of a forest turned to bare soil),
  a field re-sown (``changed``: another crop colour), a pond filled (``removed``: levelled fill);
- **nuisance that is not change** (:class:`Nuisance`): a seasonal colour shift of the vegetation,
  a brightness / gamma change, a misregistration of 1 px (the after window is read 1 px off,
  so its content moves by 1 px; boxes are given in the after crop's pixels) and independent
  sensor noise in each image.

About 30 % of the pairs have no true change (``no_change_p``); they usually still carry nuisance.
Boxes (:class:`ChangeBox`) are in *after-crop pixels* (the common grid of the pair): buildings,
tanks and ponds get their footprint box (they lie wholly inside both windows), a cleared forest
the box of the pixels that stopped being forest, a re-sown field the box of its visible part.

Text: :func:`change_caption` ("2 new buildings in the north-east; pond filled in the south" /
"no change"), change-grounding phrases per change group (:data:`GROUND_PHRASES`, "new
building": the prompt asks for the boxes of every new building in the after image) and "has
anything changed?". :func:`pair_records` turns a pair into rows of the instruction format
(:mod:`engine.data.instructions`, two-image rows)::

    {"id", "task": "change_caption" | "change_ground" | "change_ask", "question", "answer",
     "image_path": <after PNG>, "before_image_path": <before PNG>, "image_size_px": [w, h],
     "boxes_px": [{"x0", "y0", "x1", "y1", "label": "new building"}], "question_type", "source"}

paths relative to the JSONL file; ``change_ground`` answers are the boxes on the 0-1000 grid of
the after image, one ``[x0, y0, x1, y1]`` per line (the ground task's answer form). The same
file trains (``engine.train``) and evaluates (``python -m engine.evaluate --task
change_caption|change_ground``). CLI: ``python -m lab.synthetic.change OUT_DIR --pairs N``.

Deterministic: the same ``(seed, crop_px, no_change_p, nuisance)`` always gives the same pair.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.data.boxes import box_to_grid
from engine.types import BoxPx
from lab.synthetic.canvas import polygon_mask
from lab.synthetic.draw import blob
from lab.synthetic.layouts import generate_scene
from lab.synthetic.scene import (
    FIELD_TYPES,
    SCENE_CLASSES,
    AddedObject,
    SceneEdits,
    SyntheticScene,
)

__all__ = [
    "CHANGE_TYPES",
    "GROUND_PHRASES",
    "PRESENCE_QUESTION",
    "ChangeBox",
    "ChangePair",
    "Nuisance",
    "build_change_dataset",
    "change_caption",
    "location_word",
    "make_pair",
    "pair_records",
    "read_change_records",
    "record_changed",
]

log = logging.getLogger(__name__)

# (kind, status) -> caption phrase for n objects; the caption lists groups in this order
CHANGE_TYPES: dict[tuple[str, str], tuple[str, str]] = {
    ("building", "new"): ("1 new building", "{n} new buildings"),
    ("building", "removed"): ("1 building demolished", "{n} buildings demolished"),
    ("storage_tank", "new"): ("1 new storage tank", "{n} new storage tanks"),
    ("storage_tank", "removed"): ("1 storage tank removed", "{n} storage tanks removed"),
    ("forest", "removed"): ("forest cleared", "forest cleared"),
    ("field", "changed"): ("1 field re-sown", "{n} fields re-sown"),
    ("water", "removed"): ("pond filled", "{n} ponds filled"),
}
# change_ground questions are phrases: the prompt asks for "the boxes of every <phrase> in
# image 2 (after)" (assets/prompts/paper.json); they are also the boxes' labels
GROUND_PHRASES: dict[tuple[str, str], str] = {
    ("building", "new"): "new building",
    ("building", "removed"): "demolished building",
    ("storage_tank", "new"): "new storage tank",
    ("storage_tank", "removed"): "removed storage tank",
    ("forest", "removed"): "cleared forest",
    ("field", "changed"): "re-sown field",
    ("water", "removed"): "filled pond",
}
ANY_CHANGE_PHRASE = "changed area"  # the engine's default change_ground phrase
PRESENCE_QUESTION = "has anything changed between the two images?"
NO_CHANGE = "no change"
SOURCE = "synthetic_change"
MIN_THING_FRAC = 0.008  # buildings / tanks / ponds: box at least 0.8 % of the crop
MIN_STUFF_FRAC = 0.04  # cleared forest / re-sown field: at least 4 % of the crop changed
MAX_STUFF_FRAC = 0.9
ADDED_POND = -1  # candidate id of a pond drawn into the before render (see _pond_spot)
# how much a possible change counts when picking the window and the changes: rarer kinds more
OPTION_WEIGHTS = {
    ("building", "new"): 1.0,
    ("building", "removed"): 1.0,
    ("storage_tank", "new"): 1.0,
    ("storage_tank", "removed"): 1.0,
    ("forest", "removed"): 1.5,
    ("field", "changed"): 1.0,
    ("water", "removed"): 4.0,
}


@dataclass(frozen=True)
class ChangeBox:
    """One changed object: ``kind`` (building, storage_tank, forest, field, water), ``status``
    (new / removed / changed) and its box in after-crop pixels."""

    kind: str
    status: str
    box: BoxPx
    object_id: int

    def __post_init__(self) -> None:
        if (self.kind, self.status) not in CHANGE_TYPES:
            raise ValueError(
                f"unknown change ({self.kind!r}, {self.status!r}); known: {sorted(CHANGE_TYPES)}"
            )

    @property
    def phrase(self) -> str:
        """``"new building"``, ``"cleared forest"``, ...: the box label and grounding phrase."""
        return GROUND_PHRASES[self.kind, self.status]

    def to_json(self) -> dict:
        """The box as a ``boxes_px`` entry of the instruction format (label = :attr:`phrase`)."""
        b = self.box
        return {"x0": b.x0, "y0": b.y0, "x1": b.x1, "y1": b.y1, "label": self.phrase}


@dataclass(frozen=True)
class Nuisance:
    """Differences that are not change, applied to one of the two images (``side``):
    ``gain`` x brightness and ``gamma``; ``season`` > 0 turns vegetation yellower / browner,
    < 0 greener (0: none); ``shift_px`` (dx, dy): the after window read that far off."""

    gain: float = 1.0
    gamma: float = 1.0
    season: float = 0.0
    shift_px: tuple[int, int] = (0, 0)
    noise: float = 0.0  # std of independent sensor noise added to each image
    side: str = "after"

    @property
    def any(self) -> bool:
        return (
            self.gain != 1.0
            or self.gamma != 1.0
            or self.season != 0.0
            or self.shift_px != (0, 0)
            or self.noise > 0
        )


@dataclass(frozen=True)
class ChangePair:
    """Before and after crops of one scene (same size, same grid) and the true changes."""

    seed: int
    scene_class: str
    before: np.ndarray  # uint8 (H, W, 3)
    after: np.ndarray  # uint8 (H, W, 3)
    changes: tuple[ChangeBox, ...]
    nuisance: Nuisance
    window_px: tuple[int, int, int]  # after crop (col_off, row_off, size) in scene pixels

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    @property
    def size_px(self) -> tuple[int, int]:
        return self.after.shape[1], self.after.shape[0]

    @property
    def caption(self) -> str:
        return change_caption(self.changes, self.size_px)

    def groups(self) -> dict[tuple[str, str], list[ChangeBox]]:
        """Changes per (kind, status), in :data:`CHANGE_TYPES` order."""
        out: dict[tuple[str, str], list[ChangeBox]] = {}
        for key in CHANGE_TYPES:
            found = [c for c in self.changes if (c.kind, c.status) == key]
            if found:
                out[key] = found
        return out


# ------------------------------------------------------------------ text


def location_word(boxes: Iterable[BoxPx], size_px: tuple[int, int]) -> str:
    """Where the boxes' common centre lies in the image, on a 3 x 3 grid: "north-west", "north",
    ..., "centre" (north = top: the crops are north-up)."""
    boxes = list(boxes)
    cx = np.mean([(b.x0 + b.x1) / 2 for b in boxes]) / size_px[0]
    cy = np.mean([(b.y0 + b.y1) / 2 for b in boxes]) / size_px[1]
    ns = "north" if cy < 1 / 3 else "south" if cy >= 2 / 3 else ""
    ew = "west" if cx < 1 / 3 else "east" if cx >= 2 / 3 else ""
    if ns and ew:
        return f"{ns}-{ew}"
    return ns or ew or "centre"


def change_caption(changes: Iterable[ChangeBox], size_px: tuple[int, int]) -> str:
    """``"2 new buildings in the north-east; pond filled in the south"`` or ``"no change"``."""
    changes = list(changes)
    if not changes:
        return NO_CHANGE
    parts = []
    for key, (one, many) in CHANGE_TYPES.items():
        found = [c for c in changes if (c.kind, c.status) == key]
        if not found:
            continue
        phrase = one if len(found) == 1 else many.format(n=len(found))
        parts.append(f"{phrase} in the {location_word((c.box for c in found), size_px)}")
    return "; ".join(parts)


# ------------------------------------------------------------------ pairs


def _window_box(box: BoxPx, col_off: int, row_off: int) -> BoxPx:
    return BoxPx(box.x0 - col_off, box.y0 - row_off, box.x1 - col_off, box.y1 - row_off)


def _inside(box: BoxPx, size: int, margin: float = 1.0) -> bool:
    return (
        box.x0 >= margin
        and box.y0 >= margin
        and box.x1 <= size - margin
        and box.y1 <= size - margin
    )


def _mask_box(mask: np.ndarray) -> BoxPx | None:
    rows, cols = np.nonzero(mask)
    if len(rows) == 0:
        return None
    return BoxPx(float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1))


@dataclass(frozen=True)
class _Candidate:
    kind: str
    object_id: int
    area_px: float  # visible pixels in the window


def _candidates(scene: SyntheticScene, col: int, row: int, size: int) -> list[_Candidate]:
    """Objects of the window that can change: whole things, large enough stuff."""
    ids = scene.object_ids_px[row : row + size, col : col + size]
    visible = np.bincount(ids.ravel(), minlength=len(scene.objects) + 1)
    totals = np.bincount(scene.object_ids_px.ravel(), minlength=len(scene.objects) + 1)
    crop_area = size * size
    out = []
    for obj in scene.objects:
        n = int(visible[obj.id])
        if n == 0:
            continue
        if obj.kind in ("building", "storage_tank") or (
            obj.kind == "water" and obj.subtype == "pond"
        ):
            box = _window_box(obj.box_px, col, row)
            if (
                n == totals[obj.id]
                and _inside(box, size, 2.0)
                and box.area >= MIN_THING_FRAC * crop_area
            ):
                out.append(_Candidate(obj.kind, obj.id, n))
        elif obj.kind in ("forest", "field") and n >= 2 * MIN_STUFF_FRAC * crop_area:
            box = _mask_box(ids == obj.id)
            if obj.kind == "forest" or box.area <= MAX_STUFF_FRAC * crop_area:
                out.append(_Candidate(obj.kind, obj.id, n))
    return out


def _options(cands: list[_Candidate]) -> list[tuple[str, str]]:
    kinds = Counter(c.kind for c in cands)
    out = []
    if kinds["building"]:
        out += [("building", "new"), ("building", "removed")]
    if kinds["storage_tank"]:
        out += [("storage_tank", "new"), ("storage_tank", "removed")]
    if kinds["forest"]:
        out.append(("forest", "removed"))
    if kinds["field"]:
        out.append(("field", "changed"))
    if kinds["water"]:
        out.append(("water", "removed"))
    return out


def _plan(
    rng: np.random.Generator,
    scene: SyntheticScene,
    cands: list[_Candidate],
    col: int,
    row: int,
    size: int,
    pond: tuple | None = None,
) -> tuple[list[tuple[str, str, int]], SceneEdits, SceneEdits]:
    """Pick change groups and objects; returns (kind, status, id) per change and the before /
    after edits. ``pond``: polygon of a pond that can be drawn into the before render (a
    candidate with id :data:`ADDED_POND`)."""
    options = _options(cands)
    n_groups = min(len(options), int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1])))
    weights = np.array([OPTION_WEIGHTS[o] for o in options])
    picked = rng.choice(len(options), n_groups, replace=False, p=weights / weights.sum())
    chosen = [options[i] for i in sorted(picked)]
    plan: list[tuple[str, str, int]] = []
    used: set[int] = set()
    omit_before, omit_after, recolour, clear, add = set(), set(), [], [], []
    for kind, status in chosen:
        pool = [c for c in cands if c.kind == kind and c.object_id not in used]
        if not pool:
            continue
        most = 3 if kind in ("building", "storage_tank") else 1
        n = int(rng.integers(1, min(most, len(pool)) + 1))
        for i in rng.choice(len(pool), n, replace=False):
            cand = pool[int(i)]
            used.add(cand.object_id)
            plan.append((kind, status, cand.object_id))
            if status == "new":
                omit_before.add(cand.object_id)
            elif kind == "field":
                old = scene.object(cand.object_id).colour
                recolour.append(
                    (cand.object_id, str(rng.choice([c for c in FIELD_TYPES if c != old])))
                )
            elif kind == "forest":
                clear.append((cand.object_id, _clearing(rng, scene, cand, col, row, size)))
            elif cand.object_id == ADDED_POND:
                add.append(AddedObject("water", pond, subtype="pond"))
                plan[-1] = (kind, status, len(scene.objects) + 1)  # its id in the before render
            else:
                omit_after.add(cand.object_id)
    before = SceneEdits(omit=frozenset(omit_before), recolour=tuple(recolour), add=tuple(add))
    after = SceneEdits(omit=frozenset(omit_after), clear=tuple(clear))
    return plan, before, after


def _pond_spot(
    rng: np.random.Generator, scene: SyntheticScene, col: int, row: int, size: int
) -> tuple | None:
    """A pond polygon (scene pixels) inside the window on open ground (no building, tank, road,
    water or vehicle within 4 px), or None."""
    blocked_ids = [o.id for o in scene.objects if o.kind not in ("field", "forest")]
    height, width = scene.object_ids_px.shape
    blocked = np.isin(scene.object_ids_px, blocked_ids)
    grown = blocked.copy()
    for dy in range(-4, 5, 2):
        for dx in range(-4, 5, 2):
            grown |= np.roll(blocked, (dy, dx), axis=(0, 1))
    for _ in range(25):
        r = float(rng.uniform(0.09, 0.2) * size)
        cx, cy = (
            rng.uniform(col + 1.3 * r + 2, col + size - 1.3 * r - 2),
            rng.uniform(row + 1.3 * r + 2, row + size - 1.3 * r - 2),
        )
        poly = blob(rng, cx, cy, r)
        found = polygon_mask(poly, height, width)
        if found is None:
            continue
        rows, cols, m = found
        if not (grown[rows, cols] & m).any():
            return tuple(map(tuple, poly.tolist()))
    return None


def _clearing(
    rng: np.random.Generator,
    scene: SyntheticScene,
    cand: _Candidate,
    col: int,
    row: int,
    size: int,
) -> tuple[float, float, float, float]:
    """A rectangle (scene pixels) inside the window over part of the forest's visible pixels."""
    ids = scene.object_ids_px[row : row + size, col : col + size]
    rows, cols = np.nonzero(ids == cand.object_id)
    k = int(rng.integers(len(rows)))
    w, h = rng.uniform(0.3, 0.65, 2) * size
    x0 = float(np.clip(cols[k] - w / 2, 2, size - 2 - w)) + col
    y0 = float(np.clip(rows[k] - h / 2, 2, size - 2 - h)) + row
    return (round(x0), round(y0), round(x0 + w), round(y0 + h))


def _nuisance(rng: np.random.Generator, enabled: bool) -> Nuisance:
    if not enabled:
        return Nuisance()
    on = rng.random(4) < np.array([0.5, 0.4, 0.5, 0.4])
    gain = float(rng.uniform(0.8, 1.2)) if on[0] else 1.0
    gamma = float(rng.uniform(0.85, 1.15)) if on[1] else 1.0
    season = float(rng.choice([-1, 1]) * rng.uniform(0.3, 1.0)) if on[2] else 0.0
    shift = (0, 0)
    if on[3]:
        shift = (int(rng.integers(-1, 2)), int(rng.choice([-1, 1])))
        if rng.random() < 0.5:
            shift = shift[::-1]
    side = "after" if rng.random() < 0.5 else "before"
    return Nuisance(gain, gamma, season, shift, float(rng.uniform(1.0, 2.5)), side)


def apply_photometric(image: np.ndarray, nuisance: Nuisance) -> np.ndarray:
    """Brightness, gamma and the seasonal vegetation shift of ``nuisance`` (uint8 in and out)."""
    img = image.astype(np.float32) / 255.0
    if nuisance.season:
        r, g, b = img[..., 0], img[..., 1], img[..., 2]
        # how green a pixel is: 0 for grey / built-up, 1 for lush vegetation
        veg = np.clip((g - np.maximum(r, b)) * 8.0, 0.0, 1.0)[..., None]
        s = nuisance.season
        tint = np.array([1 + 0.28 * s, 1 - 0.04 * s, 1 - 0.25 * s], dtype=np.float32)
        if s < 0:
            tint = np.array([1 + 0.15 * s, 1 - 0.12 * s, 1 + 0.05 * s], dtype=np.float32)
        img = img * (1 - veg) + img * tint * veg
    img = np.clip(img, 0.0, 1.0) ** nuisance.gamma * nuisance.gain
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _add_noise(rng: np.random.Generator, image: np.ndarray, std: float) -> np.ndarray:
    if std <= 0:
        return image
    noisy = image.astype(np.float32) + std * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def make_pair(
    seed: int,
    crop_px: int = 128,
    scene_class: str | None = None,
    no_change_p: float = 0.3,
    nuisance: bool = True,
) -> ChangePair:
    """One before/after pair of scene ``seed`` (class from the seed unless given)."""
    if crop_px < 32:
        raise ValueError(f"crop_px must be >= 32, got {crop_px}")
    if not 0.0 <= no_change_p <= 1.0:
        raise ValueError(f"no_change_p must be in [0, 1], got {no_change_p}")
    rng = np.random.default_rng([seed, 0xC4A9])  # independent of the scene's own stream
    scene_class = scene_class or SCENE_CLASSES[seed % 3]
    scene_px = 2 * crop_px
    base = generate_scene(seed, scene_px, scene_class)
    want_change = rng.random() >= no_change_p
    noise = _nuisance(rng, nuisance)
    dx, dy = noise.shift_px
    # the before window (col, row); the after window is (col + dx, row + dy), both inside
    best = None
    for _ in range(10):
        col, row = (int(v) for v in rng.integers(1, scene_px - crop_px, 2))
        cands = _candidates(base, col + dx, row + dy, crop_px)  # things: inside both windows
        score = sum(OPTION_WEIGHTS[o] for o in _options(cands))
        if best is None or score > best[0]:
            best = (score, col, row, cands)
        if not want_change:
            break
    _, col, row, cands = best
    plan: list[tuple[str, str, int]] = []
    before_scene = after_scene = base
    pond = None
    if want_change and not any(c.kind == "water" for c in cands) and rng.random() < 0.3:
        pond = _pond_spot(rng, base, col + dx, row + dy, crop_px)
        if pond is not None:
            cands = [*cands, _Candidate("water", ADDED_POND, 0)]
    if want_change and cands:
        plan, before_edits, after_edits = _plan(rng, base, cands, col + dx, row + dy, crop_px, pond)
        if not before_edits.empty:
            before_scene = generate_scene(seed, scene_px, scene_class, edits=before_edits)
        if not after_edits.empty:
            after_scene = generate_scene(seed, scene_px, scene_class, edits=after_edits)
    acol, arow = col + dx, row + dy
    changes = []
    for kind, status, oid in plan:
        box = _truth_box(kind, status, oid, before_scene, after_scene, acol, arow, crop_px)
        if box is not None:
            changes.append(ChangeBox(kind, status, box, oid))
    before = before_scene.image[row : row + crop_px, col : col + crop_px]
    after = after_scene.image[arow : arow + crop_px, acol : acol + crop_px]
    if noise.side == "after":
        after = apply_photometric(after, noise)
    else:
        before = apply_photometric(before, noise)
    before = _add_noise(rng, np.ascontiguousarray(before), noise.noise)
    after = _add_noise(rng, np.ascontiguousarray(after), noise.noise)
    return ChangePair(
        seed,
        scene_class,
        before,
        after,
        tuple(changes),
        noise,
        (acol, arow, crop_px),
    )


def _truth_box(
    kind: str,
    status: str,
    oid: int,
    before: SyntheticScene,
    after: SyntheticScene,
    col: int,
    row: int,
    size: int,
) -> BoxPx | None:
    """The change's box in after-crop pixels (window ``col, row`` of the after render), or None
    when too little changed to count."""
    crop_area = size * size
    if kind in ("building", "storage_tank", "water"):
        present = after if status == "new" else before
        obj = present.object(oid)
        box = _window_box(obj.box_px, col, row)
        return BoxPx(box.x0, box.y0, box.x1, box.y1, label=kind)
    win = (slice(row, row + size), slice(col, col + size))
    if kind == "forest":  # pixels that stopped being forest
        mask = (before.object_ids_px[win] == oid) & (after.object_ids_px[win] != oid)
    else:  # re-sown field: its visible part
        mask = after.object_ids_px[win] == oid
    if mask.sum() < MIN_STUFF_FRAC * crop_area:
        return None
    box = _mask_box(mask)
    return BoxPx(box.x0, box.y0, box.x1, box.y1, label=kind)


# ------------------------------------------------------------------ records and datasets


def pair_records(
    pair: ChangePair, pair_id: str, before_path: str, after_path: str, box_grid_step: int = 1
) -> list[dict]:
    """The change samples of one pair as rows of the instruction format
    (:func:`engine.data.instructions.sample_from_json`: ``image_path`` = after,
    ``before_image_path`` = before): a caption, "has anything changed?", one grounding
    question per change group and, with two groups or more, every changed area.
    ``box_grid_step`` > 1 snaps grounding answers (not ``boxes_px``) to multiples of it on the
    0-1000 grid (the demo's training answers)."""
    size = pair.size_px
    common = {
        "image_path": after_path,
        "before_image_path": before_path,
        "image_size_px": list(size),
        "source": SOURCE,
    }

    def rec(tag: str, task: str, question: str, answer: str, changes, qtype: str) -> dict:
        return {
            "id": f"{SOURCE}:{pair_id}:{tag}",
            "task": task,
            "question": question,
            "answer": answer,
            "boxes_px": [c.to_json() for c in changes],
            "question_type": qtype,
            **common,
        }

    out = [
        rec("caption", "change_caption", "", pair.caption, pair.changes, "change_caption"),
        rec(
            "presence",
            "change_ask",
            PRESENCE_QUESTION,
            "yes" if pair.changed else "no",
            (),
            "change_presence",
        ),
    ]
    groups = pair.groups()
    for (kind, status), found in groups.items():
        out.append(
            rec(
                f"ground-{kind}-{status}",
                "change_ground",
                GROUND_PHRASES[kind, status],
                _grid_answer([c.box for c in found], size, box_grid_step),
                found,
                "change_ground",
            )
        )
    if len(groups) >= 2:
        out.append(
            rec(
                "ground-any",
                "change_ground",
                ANY_CHANGE_PHRASE,
                _grid_answer([c.box for c in pair.changes], size, box_grid_step),
                pair.changes,
                "change_ground",
            )
        )
    return out


def record_changed(record: dict) -> bool:
    """Whether a record's pair has true change (its caption is not "no change")."""
    if record["task"] == "change_caption":
        return record["answer"] != NO_CHANGE
    return bool(record.get("boxes_px")) or record["answer"] == "yes"


def _grid_answer(boxes: list[BoxPx], size: tuple[int, int], step: int) -> str:
    lines = []
    for box in sorted(boxes, key=lambda b: (b.y0, b.x0)):
        grid = box_to_grid(box, size)
        values = [grid.x0, grid.y0, grid.x1, grid.y1]
        if step > 1:
            values = [min(1000, round(v / step) * step) for v in values]
        lines.append("[" + ", ".join(str(v) for v in values) + "]")
    return "\n".join(lines)


SEED_STRIDE = 1_000_000


def pair_seed(seed: int, index: int) -> int:
    """Scene seed of pair ``index`` of a dataset built with ``seed``."""
    return seed * SEED_STRIDE + index


def _render(job: tuple) -> list[dict]:
    out_dir, sseed, crop_px, no_change_p, box_grid_step = job
    from PIL import Image

    pair = make_pair(sseed, crop_px, no_change_p=no_change_p)
    pair_id = str(sseed)
    names = []
    for side, image in (("before", pair.before), ("after", pair.after)):
        name = f"images/{pair_id}_{side}.png"
        Image.fromarray(image).save(Path(out_dir) / name, compress_level=1)
        names.append(name)
    return pair_records(pair, pair_id, names[0], names[1], box_grid_step)


def build_change_dataset(
    out_dir: str | Path,
    n_pairs: int,
    seed: int,
    crop_px: int = 128,
    no_change_p: float = 0.3,
    box_grid_step: int = 1,
    workers: int = 1,
) -> dict:
    """Write ``n_pairs`` pairs (scene seeds ``seed * 10**6 + i``, classes cycling) as
    ``out_dir/images/<seed>_{before,after}.png``, ``out_dir/pairs.jsonl`` and
    ``out_dir/manifest.json``; returns the manifest."""
    if not 1 <= n_pairs < SEED_STRIDE:
        raise ValueError(f"n_pairs must be in [1, {SEED_STRIDE}), got {n_pairs}")
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    jobs = [
        (str(out_dir), pair_seed(seed, i), crop_px, no_change_p, box_grid_step)
        for i in range(n_pairs)
    ]
    if workers <= 1:
        results = [_render(j) for j in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_render, jobs, chunksize=16))
    records = [r for rs in results for r in rs]
    from engine.atomic import write_text_atomic

    write_text_atomic(out_dir / "pairs.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    changed = sum(record_changed(rs[0]) for rs in results)
    manifest = {
        "seed": seed,
        "pair_seeds": f"{pair_seed(seed, 0)}..{pair_seed(seed, n_pairs - 1)}",
        "pairs": n_pairs,
        "changed_pairs": changed,
        "crop_px": crop_px,
        "no_change_p": no_change_p,
        "box_grid_step": box_grid_step,
        "counts": dict(Counter(r["question_type"] for r in records)),
        "change_types": dict(Counter(b["label"] for rs in results for b in rs[0]["boxes_px"])),
    }
    write_text_atomic(out_dir / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    log.info("wrote %s: %s", out_dir, manifest["counts"])
    return manifest


def read_change_records(path: str | Path) -> list[dict]:
    """The rows of a ``pairs.jsonl`` with ``image_path`` / ``before_image_path`` made absolute
    (relative paths are relative to the file's folder); every row must be a two-image sample of
    the instruction format, else a ValueError naming ``file:line``."""
    from engine.data.instructions import sample_from_json

    path = Path(path)
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            sample = sample_from_json(rec, path.parent)
            if sample.before_image_path is None:
                raise ValueError("no before_image_path")
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{path}:{number}: not a change record ({exc}); each line is an instruction "
                "sample with image_path (after) and before_image_path (see lab.synthetic.change)"
            ) from None
        rec["image_path"] = str(Path(sample.image_path).resolve())
        rec["before_image_path"] = str(Path(sample.before_image_path).resolve())
        out.append(rec)
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m lab.synthetic.change OUT_DIR --pairs N --seed S``: write a change dataset."""
    parser = argparse.ArgumentParser(
        prog="python -m lab.synthetic.change",
        description="Write synthetic before/after change pairs (PNG) and their records (JSONL).",
    )
    parser.add_argument("out_dir")
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=53)
    parser.add_argument("--crop-px", type=int, default=128)
    parser.add_argument("--no-change", type=float, default=0.3, help="share of no-change pairs")
    parser.add_argument("--box-grid-step", type=int, default=1)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    manifest = build_change_dataset(
        args.out_dir,
        args.pairs,
        args.seed,
        args.crop_px,
        args.no_change,
        args.box_grid_step,
        args.workers,
    )
    print(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    main()
