"""Value types that cross the engine's public boundary.

Everything the app receives from the engine is one of these small frozen dataclasses. Boxes are
in *crop pixels* (``_px``): x to the right, y down, origin at the top-left pixel edge, so
``(0, 0, W, H)`` covers the whole image handed to :meth:`engine.Engine.run`.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

__all__ = ["CHANGE_TASKS", "Answer", "BoxPx", "Evidence", "Level", "Task", "Timing"]


class Task(str, enum.Enum):
    """What the analyst asks for. The value is the wire name used by prompts and the CLI."""

    ASK = "ask"  # visual question answering
    CAPTION = "caption"  # describe the image / region
    GROUND = "ground"  # boxes for a phrase ("where are the storage tanks?")
    CLASSIFY = "classify"  # pick one scene class from given labels
    REGION = "region"  # ask about a box inside the crop
    # Change tasks take two crops of the same ground on one pixel grid: ``before`` (earlier) and
    # the request's image (later, "after"); boxes come back in the after crop's pixels.
    CHANGE_CAPTION = "change_caption"  # describe what changed between the two dates
    CHANGE_GROUND = "change_ground"  # boxes of what changed ("where are the new buildings?")
    CHANGE_ASK = "change_ask"  # a free question about the change

    @property
    def is_change(self) -> bool:
        """True for the two-image change tasks (they need a ``before`` crop)."""
        return self in CHANGE_TASKS

    @property
    def has_boxes(self) -> bool:
        """True for the tasks whose answer is boxes (``ground``, ``change_ground``)."""
        return self in (Task.GROUND, Task.CHANGE_GROUND)

    @classmethod
    def parse(cls, value: Task | str) -> Task:
        """``Task`` from its wire name; the error lists the known names."""
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            from engine.errors import InputError

            known = ", ".join(t.value for t in cls)
            raise InputError(f"unknown task {value!r}; use one of: {known}") from None


CHANGE_TASKS = frozenset({Task.CHANGE_CAPTION, Task.CHANGE_GROUND, Task.CHANGE_ASK})


class Level(str, enum.Enum):
    """Semantic level of a description in the knowledge base (paper III-A1)."""

    SCENE = "scene"
    OBJECT = "object"


@dataclass(frozen=True)
class BoxPx:
    """An axis-aligned box in crop pixels, optionally oriented by ``angle_deg``.

    With ``angle_deg`` set, the box is the rectangle of size ``(x1-x0, y1-y0)`` centred on the
    box centre and rotated by ``angle_deg`` degrees (counter-clockwise as seen on screen, i.e.
    from +x towards -y).
    """

    x0: float
    y0: float
    x1: float
    y1: float
    label: str | None = None
    score: float | None = None
    angle_deg: float | None = None

    def __post_init__(self) -> None:
        coords = (self.x0, self.y0, self.x1, self.y1)
        if not all(math.isfinite(c) for c in coords):
            raise ValueError(f"BoxPx coordinates must be finite, got {coords}")
        if not (self.x0 < self.x1 and self.y0 < self.y1):
            raise ValueError(f"BoxPx needs x0 < x1 and y0 < y1, got {coords}")
        if self.score is not None and not math.isfinite(self.score):
            raise ValueError(f"BoxPx score must be finite, got {self.score}")

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)

    @property
    def area(self) -> float:
        return (self.x1 - self.x0) * (self.y1 - self.y0)


@dataclass(frozen=True)
class Evidence:
    """One retrieved description shown to the analyst as evidence (paper III-A1)."""

    text: str
    score: float  # cosine similarity in [-1, 1]
    source: str  # corpus file or dataset the description came from
    level: str | None = None  # "scene" / "object" when known
    metadata: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds spent in each stage of one request."""

    retrieval_s: float = 0.0
    first_token_s: float = 0.0  # from request start to the first generated token
    decode_s: float = 0.0
    total_s: float = 0.0
    new_tokens: int = 0

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.decode_s if self.decode_s > 0 else 0.0


@dataclass(frozen=True)
class Answer:
    """The engine's reply to one request."""

    text: str
    task: Task
    boxes_px: tuple[BoxPx, ...] = ()
    evidence: tuple[Evidence, ...] = ()
    timing: Timing = Timing()
    model: str = ""
    adapter: str | None = None
    image_size_px: tuple[int, int] = (0, 0)  # (width, height) of the image the boxes refer to
    label: str | None = None  # chosen class for Task.CLASSIFY
