"""Box conventions per model family: how a box is written by, and for, each model.

A model names boxes in its own coordinate space and text format; the engine works in *crop
pixels* (:class:`engine.types.BoxPx`). One registry, ``BOX_CONVENTIONS``, holds a frozen
:class:`BoxConvention` per family; every backend (and the OpenAI-compatible paths) goes through it:

===============  ==========================================  =====================================
name             coordinates                                 text
===============  ==========================================  =====================================
``paper``        integers on a 0-1000 grid of the crop       ``label: [x0, y0, x1, y1(, angle)]``,
                 (GeoLens adapter, ``paper`` backbone)       one box per line; angle in degrees
``qwen2.5-vl``   pixels of the processor's *resized* image   JSON ``[{"bbox_2d": [...], "label"}]``
``qwen3-vl``     0-1000 relative to the image (Qwen3-VL,     JSON ``[{"bbox_2d": [...], "label"}]``
                 Qwen3.5, GLM-V)
===============  ==========================================  =====================================

JSON conventions also accept bare ``[x1, y1, x2, y2]`` lists when no ``bbox_2d`` object is
present (GLM-V writes ``<|begin_of_box|>[x1, y1, x2, y2]<|end_of_box|>``). ``ALIASES`` maps other
names onto these (``qwen3.5``, ``glm-v``; ``grid1000``/``qwen_pixels`` are the names prompt files
in ``assets/prompts`` use). ``model_input_size`` is the (width, height) of the image the vision
encoder saw; only pixel conventions need it.

Parsing clips to the crop and drops malformed or degenerate boxes with a logged warning; it never
raises on model text (hypothesis-fuzzed in ``tests/engine/test_parsing.py``).

Box scores. Given the :class:`TokenTrace` of the generation that wrote the text (the in-process
engine passes it), :meth:`BoxConvention.parse` gives each box the **geometric mean of the
probabilities of the tokens that wrote its four coordinate numbers** (every token whose characters
overlap a number; the angle and the label are not counted). It is the model's own confidence in
the box's *position*, not a calibrated detection probability: a model sure of where it puts a
wrong box scores high, and scores of different models are not comparable. It ranks boxes (merging
across tiles, NMS/WBF) and is in [0, 1]. Without a trace (remote servers), a ``"score"`` or
``"confidence"`` the model wrote in its JSON is used, else the score is None (unknown).
"""

from __future__ import annotations

import enum
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from engine.errors import ConfigError
from engine.types import BoxPx

__all__ = [
    "ALIASES",
    "BOX_CONVENTIONS",
    "BoxConvention",
    "BoxSyntax",
    "CoordSpace",
    "FoundBox",
    "TokenTrace",
    "box_convention",
]

logger = logging.getLogger(__name__)

Size = tuple[int, int]  # (width, height) in pixels
Box4 = tuple[float, float, float, float]  # (x0, y0, x1, y1)

GRID = 1000  # extent of the relative grids

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


CharSpan = tuple[int, int]  # (start, end) character offsets into an answer text


@dataclass(frozen=True)
class TokenTrace:
    """What generated an answer text: per generated token, the probability the model gave it
    (softmax of that step's logits) and the ``(start, end)`` characters of the text it produced
    (tokens released together share a range; see :class:`engine.generation.IncrementalDecoder`)."""

    probs: tuple[float, ...]
    spans: tuple[CharSpan, ...]

    def __post_init__(self) -> None:
        if len(self.probs) != len(self.spans):
            raise ValueError(f"{len(self.probs)} probabilities for {len(self.spans)} token spans")

    def tokens_in(self, ranges: Sequence[CharSpan]) -> list[int]:
        """Indices of the tokens whose characters overlap any of ``ranges`` (each once)."""
        return [
            i
            for i, (start, end) in enumerate(self.spans)
            if start < end and any(start < r_end and r_start < end for r_start, r_end in ranges)
        ]

    def score(self, ranges: Sequence[CharSpan]) -> float | None:
        """Geometric mean of the probabilities of the tokens overlapping ``ranges`` (in [0, 1]);
        None when no token produced those characters."""
        probs = [min(max(self.probs[i], 1e-12), 1.0) for i in self.tokens_in(ranges)]
        if not probs:
            return None
        return math.exp(sum(math.log(p) for p in probs) / len(probs))


@dataclass(frozen=True)
class FoundBox:
    """A candidate box in model text, before conversion: its numbers (None when malformed), label,
    a score written in the text, the source snippet, and where its pieces are in the text:
    ``value_spans`` (one per number, coordinates first) and ``label_span``."""

    values: tuple[float, ...] | None
    label: str | None
    text_score: float | None
    source: str
    value_spans: tuple[CharSpan, ...] = ()
    label_span: CharSpan | None = None

    @property
    def coord_spans(self) -> tuple[CharSpan, ...]:
        """Character ranges of the four coordinates (an angle excluded)."""
        return self.value_spans[:4]


class CoordSpace(str, enum.Enum):
    """The space a model's box numbers live in."""

    GRID_1000 = "grid_1000"  # 0-1000 relative to the image width and height
    MODEL_PX = "model_px"  # pixels of the image the vision encoder saw (after its resize)


class BoxSyntax(str, enum.Enum):
    """How boxes are written in the model's text."""

    LINES = "lines"  # ``label: [x0, y0, x1, y1(, angle)]`` one per line
    JSON = "json"  # ``[{"bbox_2d": [x1, y1, x2, y2], "label": "..."}]``


@dataclass(frozen=True)
class BoxConvention:
    """One model family's boxes: coordinate space, text syntax and whether an angle may follow."""

    name: str
    space: CoordSpace
    syntax: BoxSyntax
    angle: bool
    families: tuple[str, ...]

    # --- numbers <-> crop pixels ------------------------------------------------------------------
    def to_crop_px(
        self,
        values: Sequence[float],
        crop_size: Size,
        model_input_size: Size,
        label: str | None = None,
        score: float | None = None,
    ) -> BoxPx:
        """4 numbers (5 with an angle, where allowed) in this convention -> a box in crop pixels,
        clipped to the crop. Raises ``ValueError`` for a malformed or empty box."""
        count = (4, 5) if self.angle else (4,)
        values = tuple(float(v) for v in values)
        if len(values) not in count or not all(math.isfinite(v) for v in values):
            raise ValueError(
                f"{self.name} box needs {' or '.join(map(str, count))} finite numbers, got {values}"
            )
        box = self._clipped(values, crop_size, model_input_size, label, score)
        if box is None:
            raise ValueError(f"{self.name} box {values} is empty inside the {crop_size} crop")
        return box

    def from_crop_px(
        self, box_px: BoxPx | Box4, crop_size: Size, model_input_size: Size
    ) -> tuple[int, ...]:
        """A crop-pixel box -> this convention's integers (plus the rounded angle of an oriented
        ``BoxPx`` when the convention has angles)."""
        xyxy = box_px.xyxy if isinstance(box_px, BoxPx) else tuple(box_px)
        sx, sy = self._to_model_scale(crop_size, model_input_size)
        if self.space is CoordSpace.GRID_1000:
            w, h = crop_size
            values = (xyxy[0] / w, xyxy[1] / h, xyxy[2] / w, xyxy[3] / h)
            out = tuple(round(GRID * v) for v in values)
        else:
            out = tuple(round(v) for v in (xyxy[0] * sx, xyxy[1] * sy, xyxy[2] * sx, xyxy[3] * sy))
        angle = box_px.angle_deg if isinstance(box_px, BoxPx) else None
        return out + (round(angle),) if self.angle and angle is not None else out

    # --- text ---------------------------------------------------------------------------------
    def encode(self, box_px: BoxPx | Box4, crop_size: Size, model_input_size: Size) -> str:
        """Crop-pixel ``(x0, y0, x1, y1)`` -> ``"[a, b, c, d]"`` as the model reads it (no angle)."""
        xyxy = box_px.xyxy if isinstance(box_px, BoxPx) else tuple(box_px)
        return _bracket(self.from_crop_px(xyxy, crop_size, model_input_size))

    def format_answer(
        self, boxes_px: Sequence[BoxPx], crop_size: Size, model_input_size: Size
    ) -> str:
        """The answer text a model of this family writes for ``boxes_px`` (training targets)."""
        if self.syntax is BoxSyntax.LINES:
            lines = []
            for box in boxes_px:
                text = _bracket(self.from_crop_px(box, crop_size, model_input_size))
                lines.append(f"{box.label}: {text}" if box.label else text)
            return "\n".join(lines)
        objects = []
        for box in boxes_px:
            coords = self.encode(box.xyxy, crop_size, model_input_size)
            objects.append(f'{{"bbox_2d": {coords}, "label": "{box.label or "object"}"}}')
        return "[" + ", ".join(objects) + "]"

    def locate(self, text: str) -> list[FoundBox]:
        """Every candidate box in model ``text`` with the character spans of its pieces."""
        return _lines(text) if self.syntax is BoxSyntax.LINES else _json(text)

    def parse(
        self,
        text: str,
        crop_size: Size,
        model_input_size: Size,
        default_label: str | None = None,
        trace: TokenTrace | None = None,
    ) -> tuple[BoxPx, ...]:
        """Boxes in crop pixels from model ``text``; never raises. ``trace``: the tokens that
        wrote ``text``, for box scores (see the module docstring)."""
        try:
            boxes = []
            for candidate in self.locate(text):
                values, label, source = candidate.values, candidate.label, candidate.source
                score = candidate.text_score
                if trace is not None:
                    score = trace.score(candidate.coord_spans)
                label = label or default_label
                if values is None or (len(values) == 5 and not self.angle):
                    if self.syntax is BoxSyntax.JSON or re.search(r"\d", source):
                        need = "4 numbers, or 5 with an angle" if self.angle else "4 numbers"
                        logger.warning("dropped malformed box %r (need %s)", source[:100], need)
                    continue
                box = self._clipped(values, crop_size, model_input_size, label, score)
                if box is None:
                    w, h = crop_size
                    logger.warning(
                        "dropped degenerate box %r (empty after clipping to %dx%d)",
                        source[:100],
                        w,
                        h,
                    )
                    continue
                boxes.append(box)
            return tuple(boxes)
        except Exception:  # the parser must never fail a request because of model text
            logger.exception("box parser failed on model text %r; returning no boxes", text[:200])
            return ()

    # --- internals ----------------------------------------------------------------------------
    def _to_model_scale(self, crop_size: Size, model_input_size: Size) -> tuple[float, float]:
        return model_input_size[0] / crop_size[0], model_input_size[1] / crop_size[1]

    def _clipped(self, values, crop_size: Size, model_input_size: Size, label, score):
        """Scale to crop pixels, clip to the crop; None when nothing is left."""
        w, h = crop_size
        if self.space is CoordSpace.GRID_1000:
            x0, y0, x1, y1 = (min(max(v, 0.0), float(GRID)) for v in values[:4])
            x0, y0, x1, y1 = x0 * w / GRID, y0 * h / GRID, x1 * w / GRID, y1 * h / GRID
        else:
            sx, sy = w / model_input_size[0], h / model_input_size[1]
            x0, y0, x1, y1 = values[0] * sx, values[1] * sy, values[2] * sx, values[3] * sy
        x0, x1 = min(max(x0, 0.0), float(w)), min(max(x1, 0.0), float(w))
        y0, y1 = min(max(y0, 0.0), float(h)), min(max(y1, 0.0), float(h))
        if not (x0 < x1 and y0 < y1):
            return None
        if score is not None and not math.isfinite(score):
            score = None
        angle = values[4] if len(values) == 5 else None
        return BoxPx(x0, y0, x1, y1, label=label, score=score, angle_deg=angle)


BOX_CONVENTIONS: dict[str, BoxConvention] = {
    c.name: c
    for c in (
        BoxConvention(
            "paper",
            CoordSpace.GRID_1000,
            BoxSyntax.LINES,
            angle=True,
            families=("GeoLens adapter", "paper"),
        ),
        BoxConvention(
            "qwen2.5-vl", CoordSpace.MODEL_PX, BoxSyntax.JSON, angle=False, families=("Qwen2.5-VL",)
        ),
        BoxConvention(
            "qwen3-vl",
            CoordSpace.GRID_1000,
            BoxSyntax.JSON,
            angle=False,
            families=("Qwen3-VL", "Qwen3.5", "GLM-V"),
        ),
    )
}

ALIASES: dict[str, str] = {
    "qwen3.5": "qwen3-vl",
    "glm-v": "qwen3-vl",
    "grid1000": "paper",  # the prompt files' name (assets/prompts)
    "qwen_pixels": "qwen2.5-vl",  # the prompt files' name (assets/prompts)
}


def box_convention(name: str) -> BoxConvention:
    """The registered :class:`BoxConvention` called ``name`` (or one of its ``ALIASES``)."""
    convention = BOX_CONVENTIONS.get(ALIASES.get(name, name))
    if convention is None:
        raise ConfigError(
            f"unknown box convention {name!r}; known: {', '.join(BOX_CONVENTIONS)} "
            f"(aliases: {', '.join(ALIASES)})"
        )
    return convention


# --- text scanning: one FoundBox per candidate box -------------------------------------------------


def _lines(text: str) -> list[FoundBox]:
    found, previous_end = [], 0
    for match in _BRACKET.finditer(text):
        label, label_span = _label_before(text[previous_end : match.start()], previous_end)
        previous_end = match.end()
        values, spans = _numbers(match.group(1), match.start(1))
        found.append(FoundBox(values, label, None, match.group(0), spans, label_span))
    return found


def _json(text: str) -> list[FoundBox]:
    found = []
    for obj in _OBJECT.finditer(text):
        bbox = _BBOX_2D.search(obj.group(0))
        if bbox is None:
            continue
        label = _LABEL.search(obj.group(0))
        score = _SCORE.search(obj.group(0))
        values, spans = _numbers(bbox.group(1), obj.start() + bbox.start(1))
        found.append(
            FoundBox(
                values if values is None or len(values) == 4 else None,
                _clean_label(label.group(1)) if label else None,
                float(score.group(1)) if score else None,
                obj.group(0),
                spans,
                (obj.start() + label.start(1), obj.start() + label.end(1)) if label else None,
            )
        )
    if found:
        return found
    bare = []  # bare [x1, y1, x2, y2] lists
    for m in _BRACKET.finditer(text):
        if re.search(r"\d", m.group(1)):
            values, spans = _numbers(m.group(1), m.start(1))
            four = values if values is None or len(values) == 4 else None
            bare.append(FoundBox(four, None, None, m.group(0), spans))
    return bare


def _numbers(body: str, offset: int = 0) -> tuple[tuple[float, ...] | None, tuple[CharSpan, ...]]:
    """The 4 or 5 numbers of a bracket body and their character spans (``offset``: where the
    body starts in the text); (None, ()) when malformed."""
    match = _BOX4_OR_5.match(body)
    if match is None:
        return None, ()
    groups = [i for i in range(1, 6) if match.group(i) is not None]
    values = tuple(float(match.group(i)) for i in groups)
    if not all(math.isfinite(v) for v in values):
        return None, ()
    return values, tuple((offset + match.start(i), offset + match.end(i)) for i in groups)


def _bracket(values: Sequence[int]) -> str:
    return "[" + ", ".join(str(v) for v in values) + "]"


def _label_before(segment: str, offset: int = 0) -> tuple[str | None, CharSpan | None]:
    """The label written before a box: the last line of ``segment``, stripped of separators,
    and the character span of that line (``offset``: where ``segment`` starts in the text)."""
    lines = [m for m in re.finditer(r"[^\n;]+", segment) if m.group(0).strip()]
    if not lines:
        return None, None
    label = _clean_label(lines[-1].group(0))
    span = (offset + lines[-1].start(), offset + lines[-1].end())
    return label, (span if label is not None else None)


def _clean_label(label: str | None) -> str | None:
    if label is None:
        return None
    label = label.strip().strip(":,.-*\"'` \t").strip()
    if not label or len(label) > _MAX_LABEL_CHARS or not any(c.isalpha() for c in label):
        return None
    return label
