"""Crops of a synthetic scene and referring expressions that pick exactly one object.

A :class:`CropView` is a square window of a scene with the visible pixel count of every object
(from the scene's object-id map, so occlusion is accounted for). A :class:`RefExpr` describes
an object by kind, optional colour/subtype and a selector (``only``, ``largest``,
``northernmost``, ...); :func:`resolve` evaluates it against what is visible in a crop, and
:func:`referring_expressions` lists every expression that picks exactly one valid target.

Uniqueness is conservative: any matching object with at least ``MIN_VISIBLE_PX`` visible pixels
competes, superlatives need every candidate wholly visible and a 1.3x size margin, positions a
gap of 12 % of the crop, and superlatives/positions need two clearly visible candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from engine.types import BoxPx
from lab.synthetic.scene import SceneObject, SyntheticScene
from lab.synthetic.text import object_phrase

__all__ = [
    "MIN_VISIBLE_PX",
    "SELECTORS",
    "SUBSTANTIAL_PX",
    "THINGS",
    "CropView",
    "RefExpr",
    "crop_views",
    "is_thing",
    "referring_expressions",
    "resolve",
    "target_box",
]

THINGS = ("building", "storage_tank", "water")  # water: lakes and ponds; rivers count as stuff
SELECTORS = (
    "only",
    "largest",
    "smallest",
    "northernmost",
    "southernmost",
    "westernmost",
    "easternmost",
)
MIN_VISIBLE_PX = 12  # fewer visible pixels than this do not make an object a competitor
SUBSTANTIAL_PX = 150  # superlatives and positions need two candidates at least this visible


@dataclass(frozen=True)
class CropView:
    """A square window of a scene and which objects are visible in it."""

    scene: SyntheticScene
    row_off: int
    col_off: int
    size_px: int

    @cached_property
    def scene_class(self) -> str | None:
        """Class of the scene part under the crop (None when it straddles a mosaic seam)."""
        return self.scene.class_of(self.col_off, self.row_off, self.size_px, self.size_px)

    @cached_property
    def ids(self) -> np.ndarray:
        r, c, s = self.row_off, self.col_off, self.size_px
        return self.scene.object_ids_px[r : r + s, c : c + s]

    @cached_property
    def visible_px(self) -> np.ndarray:
        """Visible pixel count per object id in this crop (index 0 = no object)."""
        return np.bincount(self.ids.ravel(), minlength=len(self.scene.objects) + 1)

    @cached_property
    def image(self) -> np.ndarray:
        r, c, s = self.row_off, self.col_off, self.size_px
        return np.ascontiguousarray(self.scene.image[r : r + s, c : c + s])

    @cached_property
    def _present(self) -> list[SceneObject]:
        return [o for o in self.scene.objects if self.visible_px[o.id] >= MIN_VISIBLE_PX]

    def objects(self) -> list[SceneObject]:
        """Objects with at least ``MIN_VISIBLE_PX`` visible pixels in the crop."""
        return self._present

    def fraction(self, obj: SceneObject, totals: np.ndarray) -> float:
        return float(self.visible_px[obj.id] / max(1, totals[obj.id]))

    def whole_box(self, obj: SceneObject, totals: np.ndarray) -> BoxPx | None:
        """Footprint box in crop pixels when the whole (visible) object lies inside the crop."""
        box = obj.box_px
        x0, y0, x1, y1 = (
            box.x0 - self.col_off,
            box.y0 - self.row_off,
            box.x1 - self.col_off,
            box.y1 - self.row_off,
        )
        if (
            self.visible_px[obj.id] != totals[obj.id]
            or min(x0, y0) < 0
            or max(x1, y1) > self.size_px
        ):
            return None
        return BoxPx(x0, y0, x1, y1, label=obj.kind)

    def visible_box(self, obj: SceneObject) -> BoxPx:
        rows, cols = np.nonzero(self.ids == obj.id)
        return BoxPx(
            float(cols.min()),
            float(rows.min()),
            float(cols.max() + 1),
            float(rows.max() + 1),
            label=obj.kind,
        )

    @cached_property
    def _centroids(self) -> np.ndarray:
        """(N + 1, 2) mean (x, y) pixel centre of every object's visible pixels (crop pixels)."""
        rows, cols = np.indices(self.ids.shape)
        flat, n = self.ids.ravel(), len(self.visible_px)
        sums = np.stack(
            [
                np.bincount(flat, weights=cols.ravel() + 0.5, minlength=n),
                np.bincount(flat, weights=rows.ravel() + 0.5, minlength=n),
            ],
            axis=1,
        )
        return sums / np.maximum(self.visible_px, 1)[:, None]

    def centroid(self, obj: SceneObject) -> tuple[float, float]:
        x, y = self._centroids[obj.id]
        return float(x), float(y)


def crop_views(scene: SyntheticScene, crop_px: int, stride_px: int | None = None) -> list[CropView]:
    """Crops on a regular grid (stride defaults to the crop size: no overlap)."""
    width, height = scene.size_px
    if crop_px > min(width, height):
        raise ValueError(f"crop_px {crop_px} is larger than the scene {scene.size_px}")
    stride = stride_px or crop_px
    return [
        CropView(scene, r, c, crop_px)
        for r in range(0, height - crop_px + 1, stride)
        for c in range(0, width - crop_px + 1, stride)
    ]


# ------------------------------------------------------------------ referring expressions


@dataclass(frozen=True)
class RefExpr:
    """A description of one object: kind, optional colour/subtype filter and a selector."""

    kind: str
    colour: str | None = None
    subtype: str | None = None
    selector: str = "only"

    def text(self, variant: int = 0) -> str:
        phrase = object_phrase(self.kind, self.colour, self.subtype, variant)
        if self.selector == "only":
            return f"the {phrase}"
        if self.selector in ("largest", "smallest"):
            return f"the {self.selector} {phrase}"
        side = {
            "northernmost": "top",
            "southernmost": "bottom",
            "westernmost": "left",
            "easternmost": "right",
        }
        if variant % 2:
            return f"the {phrase} closest to the {side[self.selector]} of the image"
        return f"the {self.selector} {phrase}"

    def matches(self, obj: SceneObject) -> bool:
        return (
            obj.kind == self.kind
            and (self.colour is None or obj.colour == self.colour)
            and (self.subtype is None or obj.subtype == self.subtype)
        )


def is_thing(obj: SceneObject) -> bool:
    return obj.kind in THINGS and obj.subtype != "river"


def resolve(expr: RefExpr, view: CropView, totals: np.ndarray) -> list[SceneObject]:
    """Objects of the crop the expression picks: one when unambiguous, else all candidates."""
    cands = [o for o in view.objects() if expr.matches(o)]
    if expr.selector == "only":
        return cands
    if sum(view.visible_px[o.id] >= SUBSTANTIAL_PX for o in cands) < 2:
        return []  # "the largest lake" needs at least two clearly visible lakes to make sense
    if expr.selector in ("largest", "smallest"):
        if any(view.whole_box(o, totals) is None for o in cands):
            return cands  # a cut-off competitor's size is unknown in the image
        ranked = sorted(cands, key=lambda o: o.area_m2, reverse=expr.selector == "largest")
        ratio = ranked[0].area_m2 / ranked[1].area_m2
        clear = ratio >= 1.3 if expr.selector == "largest" else ratio <= 1 / 1.3
        return [ranked[0]] if clear else cands
    axis, sign = {
        "northernmost": (1, 1),
        "southernmost": (1, -1),
        "westernmost": (0, 1),
        "easternmost": (0, -1),
    }[expr.selector]
    ranked = sorted(cands, key=lambda o: sign * view.centroid(o)[axis])
    gap = sign * (view.centroid(ranked[1])[axis] - view.centroid(ranked[0])[axis])
    return [ranked[0]] if gap >= 0.12 * view.size_px else cands


def target_box(obj: SceneObject, view: CropView, totals: np.ndarray) -> BoxPx | None:
    """Box of a grounding/region target in crop pixels, or None when it is not a valid target."""
    if obj.kind == "vehicle":
        return None
    if is_thing(obj):
        return view.whole_box(obj, totals)
    box = view.visible_box(obj)
    crop_area = view.size_px**2
    if box.area > 0.7 * crop_area or view.visible_px[obj.id] < 0.02 * crop_area:
        return None
    return box


def referring_expressions(
    view: CropView, totals: np.ndarray
) -> list[tuple[RefExpr, SceneObject, BoxPx]]:
    """Every (expression, target, box) where the expression picks exactly that target."""
    out = []
    for obj in view.objects():
        box = target_box(obj, view, totals)
        if box is None:
            continue
        colour = obj.colour if obj.kind in ("building", "storage_tank", "field") else None
        subtype = obj.subtype if obj.kind == "water" else None
        filters = {(None, subtype), (colour, subtype)}
        selectors = SELECTORS if is_thing(obj) else ("only",)
        for col, sub in sorted(filters, key=str):
            for selector in selectors:
                expr = RefExpr(obj.kind, col, sub, selector)
                if [o.id for o in resolve(expr, view, totals)] == [obj.id]:
                    out.append((expr, obj, box))
    return out
