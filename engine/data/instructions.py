"""The instruction-sample format shared by training, evaluation and every dataset loader.

One :class:`Sample` is one (image, task, question, answer) example. Boxes are stored in *image
pixels* as :class:`engine.types.BoxPx` (floats) together with ``image_size_px`` (width, height);
:meth:`Sample.boxes_grid` converts them to the adapter's 0-1000 integer grid. Oriented boxes
carry ``angle_deg``.

On disk a dataset is JSON Lines, one sample per line::

    {"id": "rsvqa_lr:7202", "task": "ask", "question": "Is it a rural or an urban area",
     "answer": "rural", "image_path": "images/72.tif", "question_type": "rural_urban",
     "level": "scene", "source": "rsvqa_lr"}

Optional keys: ``image_size_px`` [w, h], ``boxes_px`` and ``region_px`` (objects with x0, y0,
x1, y1 and optional label, angle_deg), ``labels`` (classification choices), ``references``
(all reference answers, e.g. the five captions of an image), ``question_type``, ``level``
("scene"/"object"), ``source``. Relative ``image_path`` values are relative to the JSONL file's
folder. In-memory images (``Sample.image``) cannot be written: save them as files first.

Change samples (tasks ``change_caption``, ``change_ground``, ``change_ask``) show two images of
the same ground on one pixel grid: ``image_path`` is the later ("after") image and
``before_image_path`` the earlier one, of the same size; boxes are in the after image's pixels.
A ``change_ground`` sample may have no boxes (nothing changed: its answer says so)::

    {"id": "pair:3:change_ground", "task": "change_ground", "question": "new building",
     "answer": "[120, 340, 560, 780]", "image_path": "pairs/3_after.png",
     "before_image_path": "pairs/3_before.png", "image_size_px": [256, 256],
     "boxes_px": [{"x0": 30.7, "y0": 87.0, "x1": 143.4, "y1": 199.7, "label": "new building"}]}

Conventions: ``classify`` and ``caption`` samples may have an empty question (the prompt
template supplies the instruction); ``ground`` answers hold the boxes as grid text
(:meth:`engine.data.boxes.GridBox.text`, one box per line), the ``grid1000`` convention that
``engine.parsing`` reads back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.atomic import atomic_file
from engine.data.boxes import GridBox, box_to_grid
from engine.data.images import read_rgb
from engine.errors import DataFormatError
from engine.types import BoxPx, Level, Task

__all__ = [
    "Sample",
    "iter_jsonl",
    "read_jsonl",
    "sample_from_json",
    "sample_to_json",
    "write_jsonl",
]

_NEEDS_QUESTION = (Task.ASK, Task.GROUND, Task.REGION, Task.CHANGE_ASK)


@dataclass(frozen=True)
class Sample:
    """One instruction example. Exactly one of ``image_path`` / ``image`` (uint8 HxWx3) is set;
    change tasks also have exactly one of ``before_image_path`` / ``before_image`` (the earlier
    image, same size; ``image`` is then the later one)."""

    id: str
    task: Task
    question: str
    answer: str
    image_path: str | None = None
    image: np.ndarray | None = field(default=None, compare=False, repr=False)
    image_size_px: tuple[int, int] | None = None  # (width, height)
    boxes_px: tuple[BoxPx, ...] = ()
    region_px: BoxPx | None = None  # the box a `region` question is about
    labels: tuple[str, ...] = ()  # choices for `classify`
    references: tuple[str, ...] = ()  # every reference answer (captions: all of an image's)
    question_type: str | None = None  # e.g. RSVQA "presence", "comp"; per-type accuracy
    level: Level | None = None
    source: str = ""
    before_image_path: str | None = None
    before_image: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"Sample.id must be a non-empty string, got {self.id!r}")
        set_("task", Task.parse(self.task))
        if self.level is not None:
            set_("level", _parse_level(self.level))
        for name in ("question", "answer", "source"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(
                    f"Sample {self.id}: {name} must be a string, got {getattr(self, name)!r}"
                )
        set_("boxes_px", tuple(self.boxes_px))
        set_("labels", tuple(self.labels))
        set_("references", tuple(self.references))
        self._check_image()
        self._check_before()
        self._check_task_fields()

    def _check_image(self) -> None:
        if (self.image_path is None) == (self.image is None):
            raise ValueError(f"Sample {self.id}: set exactly one of image_path and image")
        if self.image is not None:
            img = self.image
            if not (
                isinstance(img, np.ndarray)
                and img.dtype == np.uint8
                and img.ndim == 3
                and img.shape[2] == 3
            ):
                shape = getattr(img, "shape", None)
                raise ValueError(
                    f"Sample {self.id}: image must be uint8 (H, W, 3), "
                    f"got {shape} {getattr(img, 'dtype', type(img))}"
                )
            size = (img.shape[1], img.shape[0])
            if self.image_size_px is not None and tuple(self.image_size_px) != size:
                raise ValueError(
                    f"Sample {self.id}: image_size_px {self.image_size_px} != image {size}"
                )
            object.__setattr__(self, "image_size_px", size)
        elif self.image_size_px is not None:
            w, h = self.image_size_px
            if not (int(w) == w and int(h) == h and w > 0 and h > 0):
                raise ValueError(
                    f"Sample {self.id}: image_size_px must be positive ints, "
                    f"got {self.image_size_px}"
                )
            object.__setattr__(self, "image_size_px", (int(w), int(h)))

    def _check_before(self) -> None:
        has_before = self.before_image_path is not None or self.before_image is not None
        if self.task.is_change and not has_before:
            raise ValueError(
                f"Sample {self.id}: task {self.task.value!r} needs the earlier image "
                "(before_image_path or before_image)"
            )
        if has_before and not self.task.is_change:
            raise ValueError(
                f"Sample {self.id}: a before image is only for change tasks, not "
                f"{self.task.value!r}"
            )
        if self.before_image_path is not None and self.before_image is not None:
            raise ValueError(
                f"Sample {self.id}: set only one of before_image_path and before_image"
            )
        if self.before_image is not None:
            img = self.before_image
            if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3):
                raise ValueError(f"Sample {self.id}: before_image must be uint8 (H, W, 3)")
            if self.image is not None and img.shape != self.image.shape:
                raise ValueError(
                    f"Sample {self.id}: before_image {img.shape} and image {self.image.shape} "
                    "differ; both must be on one pixel grid"
                )

    def _check_task_fields(self) -> None:
        if self.task in _NEEDS_QUESTION and not self.question.strip():
            raise ValueError(f"Sample {self.id}: task {self.task.value!r} needs a question")
        if not self.answer.strip():
            raise ValueError(f"Sample {self.id}: answer is empty")
        if not all(isinstance(b, BoxPx) for b in self.boxes_px):
            raise ValueError(
                f"Sample {self.id}: boxes_px must hold BoxPx values, got {self.boxes_px!r}"
            )
        if (self.boxes_px or self.region_px is not None) and self.image_size_px is None:
            raise ValueError(f"Sample {self.id}: boxes need image_size_px (width, height)")
        if self.task is Task.GROUND and not self.boxes_px:  # change_ground may have none
            raise ValueError(f"Sample {self.id}: a 'ground' sample needs at least one box")
        if self.task is Task.REGION and self.region_px is None:
            raise ValueError(f"Sample {self.id}: a 'region' sample needs region_px")
        if self.task is Task.CLASSIFY:
            if not self.labels:
                raise ValueError(
                    f"Sample {self.id}: a 'classify' sample needs its label set (labels)"
                )
            if self.answer not in self.labels:
                raise ValueError(
                    f"Sample {self.id}: answer {self.answer!r} is not one of "
                    f"labels {list(self.labels)}"
                )

    def boxes_grid(self) -> tuple[GridBox, ...]:
        """``boxes_px`` on the 0-1000 grid of this sample's image."""
        assert self.image_size_px is not None or not self.boxes_px
        return tuple(box_to_grid(b, self.image_size_px) for b in self.boxes_px)

    def load_image(self) -> np.ndarray:
        """The RGB image, uint8 (H, W, 3): the in-memory array or the file read with PIL."""
        if self.image is not None:
            return self.image
        return read_rgb(self.image_path)

    def load_before_image(self) -> np.ndarray | None:
        """The earlier image of a change sample (uint8 (H, W, 3)), or None."""
        if self.before_image is not None:
            return self.before_image
        return read_rgb(self.before_image_path) if self.before_image_path is not None else None

    def load_images(self) -> list[np.ndarray]:
        """The images in prompt order: ``[before, after]`` for change samples, else ``[image]``.
        Raises :class:`DataFormatError` when a pair's two images differ in size."""
        after = self.load_image()
        before = self.load_before_image()
        if before is None:
            return [after]
        if before.shape != after.shape:
            raise DataFormatError(
                f"sample {self.id}: before image {before.shape[1]}x{before.shape[0]} and after "
                f"image {after.shape[1]}x{after.shape[0]} differ; write both on one pixel grid"
            )
        return [before, after]


def _parse_level(value: Level | str) -> Level:
    try:
        return Level(value)
    except ValueError:
        known = ", ".join(lv.value for lv in Level)
        raise ValueError(f"unknown level {value!r}; use one of: {known}") from None


# ---------------------------------------------------------------- JSON rows


def _box_to_json(box: BoxPx) -> dict:
    row = {"x0": box.x0, "y0": box.y0, "x1": box.x1, "y1": box.y1}
    if box.label is not None:
        row["label"] = box.label
    if box.angle_deg is not None:
        row["angle_deg"] = box.angle_deg
    return row


def _box_from_json(row: dict) -> BoxPx:
    if not isinstance(row, dict):
        raise TypeError(f"a box must be an object with x0, y0, x1, y1, got {row!r}")
    missing = [k for k in ("x0", "y0", "x1", "y1") if k not in row]
    if missing:
        raise ValueError(f"box {row} lacks {missing}")
    return BoxPx(
        float(row["x0"]),
        float(row["y0"]),
        float(row["x1"]),
        float(row["y1"]),
        label=row.get("label"),
        angle_deg=None if row.get("angle_deg") is None else float(row["angle_deg"]),
    )


def sample_to_json(sample: Sample, base_dir: Path | None = None) -> dict:
    """JSON-ready dict; ``image_path`` is made relative to ``base_dir`` when it lies inside it."""
    if sample.image_path is None:
        raise DataFormatError(
            f"sample {sample.id} holds an in-memory image; save it to a file and set image_path"
        )
    row: dict = {
        "id": sample.id,
        "task": sample.task.value,
        "question": sample.question,
        "answer": sample.answer,
    }
    row["image_path"] = _relative_path(sample.image_path, base_dir)
    if sample.before_image is not None:
        raise DataFormatError(
            f"sample {sample.id} holds an in-memory before image; save it and set before_image_path"
        )
    if sample.before_image_path is not None:
        row["before_image_path"] = _relative_path(sample.before_image_path, base_dir)
    if sample.image_size_px is not None:
        row["image_size_px"] = list(sample.image_size_px)
    if sample.boxes_px:
        row["boxes_px"] = [_box_to_json(b) for b in sample.boxes_px]
    if sample.region_px is not None:
        row["region_px"] = _box_to_json(sample.region_px)
    for name in ("labels", "references"):
        if getattr(sample, name):
            row[name] = list(getattr(sample, name))
    if sample.question_type is not None:
        row["question_type"] = sample.question_type
    if sample.level is not None:
        row["level"] = sample.level.value
    row["source"] = sample.source
    return row


def _relative_path(path: str, base_dir: Path | None) -> str:
    if base_dir is None or not os.path.isabs(path):
        return path
    try:
        return Path(path).resolve().relative_to(base_dir.resolve()).as_posix()
    except ValueError:
        return path


_KNOWN_KEYS = {
    "id",
    "task",
    "question",
    "answer",
    "image_path",
    "before_image_path",
    "image_size_px",
    "boxes_px",
    "region_px",
    "labels",
    "references",
    "question_type",
    "level",
    "source",
}


def sample_from_json(row: dict, base_dir: Path | None = None) -> Sample:
    """Inverse of :func:`sample_to_json`; bad rows raise ValueError, TypeError or KeyError."""
    if not isinstance(row, dict):
        raise TypeError(f"each line must be a JSON object, got {type(row).__name__}")
    unknown = sorted(set(row) - _KNOWN_KEYS)
    if unknown:
        raise ValueError(f"unknown keys {unknown}; known keys: {sorted(_KNOWN_KEYS)}")
    missing = [k for k in ("id", "task", "answer", "image_path") if k not in row]
    if missing:
        raise ValueError(f"missing required keys {missing}")
    image_path = str(row["image_path"])
    if base_dir is not None and not os.path.isabs(image_path):
        image_path = str(base_dir / image_path)
    size = row.get("image_size_px")
    before_path = row.get("before_image_path")
    if before_path is not None:
        before_path = str(before_path)
        if base_dir is not None and not os.path.isabs(before_path):
            before_path = str(base_dir / before_path)
    return Sample(
        id=str(row["id"]),
        task=row["task"],
        question=row.get("question", ""),
        answer=row["answer"],
        image_path=image_path,
        image_size_px=None if size is None else tuple(size),
        boxes_px=tuple(_box_from_json(b) for b in row.get("boxes_px", [])),
        region_px=None if row.get("region_px") is None else _box_from_json(row["region_px"]),
        labels=tuple(row.get("labels", [])),
        references=tuple(row.get("references", [])),
        question_type=row.get("question_type"),
        level=row.get("level"),
        source=row.get("source", ""),
        before_image_path=before_path,
    )


# ---------------------------------------------------------------- JSONL files


def iter_jsonl(path: str | Path) -> Iterator[Sample]:
    """Samples of a JSONL file, one per non-blank line; errors name ``file:line``."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"instruction file not found: {str(path)!r}")
    base_dir = path.parent
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield sample_from_json(json.loads(line), base_dir)
            except (ValueError, KeyError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
                raise DataFormatError(f"{path}:{lineno}: bad sample: {exc}") from None


def read_jsonl(path: str | Path) -> list[Sample]:
    """All samples of a JSONL file (see the module docstring for the row format)."""
    return list(iter_jsonl(path))


def write_jsonl(samples: Iterable[Sample], path: str | Path) -> int:
    """Write samples atomically (temp file + rename); returns the number written."""
    path = Path(path)
    count = 0
    with atomic_file(path) as fh:
        for sample in samples:
            fh.write(json.dumps(sample_to_json(sample, path.parent), ensure_ascii=False) + "\n")
            count += 1
    return count
