"""Box conventions per backbone and a strict parser of model text that never raises.

Two conventions (registry ``BOX_FORMATS``):

* ``grid1000`` (trained adapter, ``paper`` backbone): integers on a 0-1000 grid over the image the
  model saw, ``[x0, y0, x1, y1]``, optionally ``[x0, y0, x1, y1, angle]`` for an oriented box
  (angle in degrees, counter-clockwise on screen, as :class:`engine.types.BoxPx`; the four numbers
  are then the extent of the unrotated box around its centre). Several boxes: one per line, each
  optionally preceded by its label, ``storage tank: [120, 340, 560, 780]``.
* ``qwen_pixels`` (Qwen2.5-VL zero-shot): the model's native JSON
  ``[{"bbox_2d": [x1, y1, x2, y2], "label": "..."}]`` in pixels of the processor's *resized* image;
  bare ``[x1, y1, x2, y2]`` lists are accepted when no ``bbox_2d`` object is present.

Parsing converts to crop pixels with the crop size and the model's image size, clips to the
crop, and drops malformed or degenerate boxes with a logged warning. Classification answers are
matched to the given labels after normalisation; no match gives ``None``.
"""

from __future__ import annotations

import logging
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from engine.errors import ConfigError
from engine.types import BoxPx

__all__ = ["BOX_FORMATS", "BoxFormat", "box_format", "match_label", "normalise_label"]

logger = logging.getLogger(__name__)

_NUM = r"[-+]?\d+(?:\.\d+)?"
_BRACKET = re.compile(r"\[([^\[\]{}]*)\]")
_BOX4_OR_5 = re.compile(
    rf"^\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*(?:,\s*({_NUM})\s*)?$"
)
_OBJECT = re.compile(r"\{[^{}]*\}")
_BBOX_2D = re.compile(r"[\"']bbox_2d[\"']\s*:\s*\[([^\[\]]*)\]")
_LABEL = re.compile(r"[\"']label[\"']\s*:\s*\"((?:[^\"\\]|\\.)*)\"")
_SCORE = re.compile(rf"[\"'](?:score|confidence)[\"']\s*:\s*({_NUM})")
_MAX_LABEL_CHARS = 64

Size = tuple[int, int]  # (width, height) in pixels


@dataclass(frozen=True)
class BoxFormat:
    """One box convention: how a crop-pixel box is written for, and read from, the model."""

    name: str

    def encode(
        self, box_px: tuple[float, float, float, float], crop_size: Size, model_size: Size
    ) -> str:
        """Crop-pixel ``(x0, y0, x1, y1)`` -> the text the model reads."""
        if self.name == "grid1000":
            w, h = crop_size
            values = (box_px[0] / w, box_px[1] / h, box_px[2] / w, box_px[3] / h)
            return "[" + ", ".join(str(round(1000 * v)) for v in values) + "]"
        sx, sy = model_size[0] / crop_size[0], model_size[1] / crop_size[1]
        values = (box_px[0] * sx, box_px[1] * sy, box_px[2] * sx, box_px[3] * sy)
        return "[" + ", ".join(str(round(v)) for v in values) + "]"

    def format_answer(self, boxes_px: list[BoxPx], crop_size: Size, model_size: Size) -> str:
        """Training target text for ``boxes_px`` in this convention."""
        if self.name == "grid1000":
            lines = []
            for box in boxes_px:
                text = self.encode(box.xyxy, crop_size, model_size)
                if box.angle_deg is not None:
                    text = text[:-1] + f", {round(box.angle_deg)}]"
                lines.append(f"{box.label}: {text}" if box.label else text)
            return "\n".join(lines)
        objects = []
        for box in boxes_px:
            coords = self.encode(box.xyxy, crop_size, model_size)
            objects.append(f'{{"bbox_2d": {coords}, "label": "{box.label or "object"}"}}')
        return "[" + ", ".join(objects) + "]"

    def parse(
        self, text: str, crop_size: Size, model_size: Size, default_label: str | None = None
    ) -> tuple[BoxPx, ...]:
        """Boxes in crop pixels from model ``text``; never raises."""
        try:
            if self.name == "grid1000":
                return tuple(_parse_grid(text, crop_size, default_label))
            return tuple(_parse_qwen(text, crop_size, model_size, default_label))
        except Exception:  # the parser must never fail a request because of model text
            logger.exception("box parser failed on model text %r; returning no boxes", text[:200])
            return ()


BOX_FORMATS = {"grid1000": BoxFormat("grid1000"), "qwen_pixels": BoxFormat("qwen_pixels")}


def box_format(name: str) -> BoxFormat:
    """The registered :class:`BoxFormat` called ``name``."""
    if name not in BOX_FORMATS:
        raise ConfigError(f"unknown box format {name!r}; known: {', '.join(BOX_FORMATS)}")
    return BOX_FORMATS[name]


def _parse_grid(text: str, crop_size: Size, default_label: str | None) -> list[BoxPx]:
    w, h = crop_size
    boxes, previous_end = [], 0
    for match in _BRACKET.finditer(text):
        values = _numbers(match.group(1))
        label = _label_before(text[previous_end : match.start()]) or default_label
        previous_end = match.end()
        if values is None:
            if re.search(r"\d", match.group(1)):
                logger.warning(
                    "dropped malformed box %r (need 4 numbers, or 5 with an angle)", match.group(0)
                )
            continue
        x0, y0, x1, y1 = (min(max(v, 0.0), 1000.0) for v in values[:4])
        angle = values[4] if len(values) == 5 else None
        box = _make_box(
            x0 * w / 1000,
            y0 * h / 1000,
            x1 * w / 1000,
            y1 * h / 1000,
            label,
            None,
            angle,
            crop_size,
            match.group(0),
        )
        if box is not None:
            boxes.append(box)
    return boxes


def _parse_qwen(
    text: str, crop_size: Size, model_size: Size, default_label: str | None
) -> list[BoxPx]:
    sx, sy = crop_size[0] / model_size[0], crop_size[1] / model_size[1]
    found = []  # (values, label, score, source)
    for obj in _OBJECT.finditer(text):
        bbox = _BBOX_2D.search(obj.group(0))
        if bbox is None:
            continue
        label = _LABEL.search(obj.group(0))
        score = _SCORE.search(obj.group(0))
        found.append(
            (
                _numbers(bbox.group(1), allow_angle=False),
                label.group(1) if label else None,
                float(score.group(1)) if score else None,
                obj.group(0),
            )
        )
    if not found:  # bare [x1, y1, x2, y2] lists
        found = [
            (_numbers(m.group(1), allow_angle=False), None, None, m.group(0))
            for m in _BRACKET.finditer(text)
            if re.search(r"\d", m.group(1))
        ]
    boxes = []
    for values, label, score, source in found:
        if values is None:
            logger.warning("dropped malformed box %r (need 4 numbers)", source[:100])
            continue
        x0, y0, x1, y1 = values
        label = _clean_label(label) or default_label
        box = _make_box(x0 * sx, y0 * sy, x1 * sx, y1 * sy, label, score, None, crop_size, source)
        if box is not None:
            boxes.append(box)
    return boxes


def _numbers(body: str, allow_angle: bool = True) -> tuple[float, ...] | None:
    match = _BOX4_OR_5.match(body)
    if match is None or (match.group(5) is not None and not allow_angle):
        return None
    values = tuple(float(g) for g in match.groups() if g is not None)
    return values if all(math.isfinite(v) for v in values) else None


def _make_box(x0, y0, x1, y1, label, score, angle, crop_size: Size, source: str) -> BoxPx | None:
    w, h = crop_size
    x0, x1 = min(max(x0, 0.0), float(w)), min(max(x1, 0.0), float(w))
    y0, y1 = min(max(y0, 0.0), float(h)), min(max(y1, 0.0), float(h))
    if not (x0 < x1 and y0 < y1):
        logger.warning(
            "dropped degenerate box %r (empty after clipping to %dx%d)", source[:100], w, h
        )
        return None
    if score is not None and not math.isfinite(score):
        score = None
    return BoxPx(x0, y0, x1, y1, label=label, score=score, angle_deg=angle)


def _label_before(segment: str) -> str | None:
    """The label written before a box: the last line of ``segment``, stripped of separators."""
    lines = [line for line in re.split(r"[\n;]", segment) if line.strip()]
    return _clean_label(lines[-1]) if lines else None


def _clean_label(label: str | None) -> str | None:
    if label is None:
        return None
    label = label.strip().strip(":,.-*\"'` \t").strip()
    if not label or len(label) > _MAX_LABEL_CHARS or not any(c.isalpha() for c in label):
        return None
    return label


def normalise_label(text: str) -> str:
    """Lowercase, accents and punctuation folded, ``_``/``-`` as spaces, single spaces."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode() or text
    text = re.sub(r"[_\-/]+", " ", text.lower())
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def match_label(answer: str, labels: Sequence[str]) -> str | None:
    """The label ``answer`` names: an exact normalised match (also ignoring spaces, so "golf
    field" names "golffield"), else the one label found as whole words in the answer (labels
    inside a longer found label do not count, so "dense residential" beats "residential");
    ``None`` when nothing or several unrelated labels match. The one rule for the label the app
    shows (:attr:`engine.types.Answer.label`) and the one evaluation counts
    (:func:`engine.metrics.classification_accuracy`)."""
    norm_answer = normalise_label(answer)
    by_norm = {normalise_label(label): label for label in labels}
    if norm_answer in by_norm:
        return by_norm[norm_answer]
    by_key = {n.replace(" ", ""): label for n, label in by_norm.items()}
    if norm_answer and norm_answer.replace(" ", "") in by_key:
        return by_key[norm_answer.replace(" ", "")]
    padded = f" {norm_answer} "
    hits = [n for n in by_norm if n and f" {n} " in padded]
    outer = [n for n in hits if not any(n != m and f" {n} " in f" {m} " for m in hits)]
    return by_norm[outer[0]] if len(outer) == 1 else None
