"""Run an :class:`engine.Engine` over dataset samples and keep one prediction per sample.

Samples that ask the same thing (task, question, labels) are answered together with
:meth:`engine.Engine.run_batch` in chunks of ``batch_size`` (left-padded batched generation);
``region`` samples, which carry their own box, and change samples (two images: ``before=``)
run one at a time with :meth:`engine.Engine.run`.
Predictions come back in the order of the samples and can be written as JSONL.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.data.instructions import Sample
from engine.types import Answer, BoxPx, Task

__all__ = ["Prediction", "predict", "write_predictions"]


@dataclass(frozen=True)
class Prediction:
    """The engine's answer to one sample (boxes in the sample image's pixels)."""

    sample_id: str
    text: str
    boxes_px: tuple[BoxPx, ...] = ()
    label: str | None = None

    @classmethod
    def from_answer(cls, sample: Sample, answer: Answer) -> Prediction:
        return cls(sample.id, answer.text, answer.boxes_px, answer.label)


def _group_key(sample: Sample) -> tuple:
    return (sample.task, sample.question, sample.labels)


def predict(engine, samples: Sequence[Sample], batch_size: int = 16, progress: bool = False):
    """One :class:`Prediction` per sample, in order."""
    from tqdm import tqdm

    groups: dict[tuple, list[int]] = {}
    singles: list[int] = []
    for i, sample in enumerate(samples):
        if sample.task is Task.REGION or sample.task.is_change:
            singles.append(i)
        else:
            groups.setdefault(_group_key(sample), []).append(i)
    out: list[Prediction | None] = [None] * len(samples)
    bar = tqdm(total=len(samples), desc="evaluate", disable=not progress)
    for (task, question, labels), indices in groups.items():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            answers = engine.run_batch(
                [samples[i].load_image() for i in chunk],
                task,
                question=question or None,
                labels=list(labels) or None,
            )
            for i, answer in zip(chunk, answers):
                out[i] = Prediction.from_answer(samples[i], answer)
            bar.update(len(chunk))
    for i in singles:
        s = samples[i]
        if s.task.is_change:
            before, after = s.load_images()
            answer = engine.run(after, s.task, s.question or None, before=before)
        else:
            answer = engine.run(s.load_image(), s.task, s.question or None, s.region_px.xyxy)
        out[i] = Prediction.from_answer(s, answer)
        bar.update(1)
    bar.close()
    return out


def _box_json(box: BoxPx) -> dict:
    return {"x0": box.x0, "y0": box.y0, "x1": box.x1, "y1": box.y1, "label": box.label}


def write_predictions(
    path: Path, samples: Sequence[Sample], predictions: Sequence[Prediction], correct=None
) -> Path:
    """JSONL, one row per sample: id, task, question type, question, reference, prediction,
    predicted boxes / label, and ``correct`` (bool) or ``iou`` (float) when given."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for i, (s, p) in enumerate(zip(samples, predictions, strict=True)):
            row = {
                "id": s.id,
                "task": s.task.value,
                "question_type": s.question_type,
                "question": s.question,
                "reference": s.answer,
                "prediction": p.text,
            }
            if p.boxes_px:
                row["boxes_px"] = [_box_json(b) for b in p.boxes_px]
            if s.boxes_px:
                row["reference_boxes_px"] = [_box_json(b) for b in s.boxes_px]
            if p.label is not None:
                row["label"] = p.label
            if correct is not None:
                key = "iou" if isinstance(correct[i], float) else "correct"
                row[key] = correct[i]
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
