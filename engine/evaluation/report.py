"""The paper's metrics for one task over predictions, as table rows (:func:`engine.metrics.format_table`).

* ``ask`` / ``region``: accuracy per question type and their average (RSVQA normalisation of
  yes/no and numbers; optional RSVQA count/area buckets and the paper's "Avg." subset);
* ``classify``: overall accuracy and the per-class mean;
* ``ground``: Acc@0.5 and mean IoU of the first predicted box against the first reference box,
  overall and per question type when there are several;
* ``caption``: BLEU-1, ROUGE-1, METEOR and (with a local encoder) BERTScore-F1.
* ``change_caption``: change/no-change accuracy (the caption says "no change" or not; the truth
  is the sample's ``question_type`` "change"/"no_change", else its reference caption), then the
  caption metrics against the references;
* ``change_ground``: change-grounding Acc@0.5 (reference change boxes found), precision@0.5 and
  mIoU (:func:`engine.metrics.change_grounding_scores`), and change/no-change accuracy (a pair
  is called changed when the answer has a box; the truth: the sample has reference boxes);
* ``change_ask``: accuracy after answer normalisation, as ``ask``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.data.instructions import Sample
from engine.errors import InputError
from engine.evaluation.runner import Prediction
from engine.metrics import (
    caption_scores,
    change_detection_accuracy,
    change_grounding_scores,
    classification_accuracy,
    format_table,
    grounding_scores,
    says_no_change,
    vqa_accuracy,
)
from engine.types import Task

__all__ = ["EvalOptions", "EvalReport", "summarize"]


@dataclass(frozen=True)
class EvalOptions:
    """Metric options: RSVQA buckets, the types averaged in "Avg.", a BERTScore encoder."""

    count_buckets: bool = False
    area_buckets: bool = False
    average_over: tuple[str, ...] | None = None
    bertscore_model: str | None = None


@dataclass(frozen=True)
class EvalReport:
    """Table rows (metric name -> fraction) and per-sample correctness / IoU."""

    task: Task
    rows: dict[str, dict[str, float | None]]
    per_sample: tuple = field(repr=False)
    n: int
    note: str = ""

    def table(self, title: str = "") -> str:
        return format_table(self.rows, title=title or f"{self.task.value} (n={self.n})")

    def to_json(self) -> dict:
        return {"task": self.task.value, "n": self.n, "rows": self.rows, "note": self.note}


def summarize(
    task: Task | str,
    samples: Sequence[Sample],
    predictions: Sequence[Prediction],
    options: EvalOptions = EvalOptions(),
    name: str = "model",
) -> EvalReport:
    """Metrics of ``predictions`` for ``samples`` (all of task ``task``); ``name`` labels the row."""
    task = Task.parse(task)
    if not samples:
        raise InputError(f"no {task.value!r} samples to evaluate; check --task and --data")
    wrong = sorted({s.task.value for s in samples if s.task is not task})
    if wrong:
        raise InputError(f"--task {task.value} but the data has {wrong} samples; filter them")
    if task in (Task.ASK, Task.REGION, Task.CHANGE_ASK):
        return _vqa(task, samples, predictions, options, name)
    if task is Task.CHANGE_CAPTION:
        return _change_caption(samples, predictions, options, name)
    if task is Task.CHANGE_GROUND:
        return _change_ground(samples, predictions, name)
    if task is Task.CLASSIFY:
        return _classify(samples, predictions, name)
    if task is Task.GROUND:
        return _ground(samples, predictions, name)
    return _caption(samples, predictions, options, name)


def _vqa(task, samples, predictions, options, name) -> EvalReport:
    report = vqa_accuracy(
        [p.text for p in predictions],
        [s.answer for s in samples],
        [s.question_type for s in samples],
        count_buckets=options.count_buckets,
        area_buckets=options.area_buckets,
        average_over=options.average_over,
    )
    row = {**report.per_group, "average": report.average, "overall": report.overall}
    return EvalReport(task, {name: row}, report.correct, report.n)


def _classify(samples, predictions, name) -> EvalReport:
    labels = sorted({label for s in samples for label in s.labels} | {s.answer for s in samples})
    report = classification_accuracy(
        [p.label or p.text for p in predictions], [s.answer for s in samples], labels
    )
    row = {"overall": report.overall, "average": report.average}
    return EvalReport(Task.CLASSIFY, {name: row}, report.correct, report.n)


def _ground(samples, predictions, name) -> EvalReport:
    missing = [s.id for s in samples if not s.boxes_px]
    if missing:
        raise InputError(f"grounding samples without a reference box: {missing[:5]}")
    firsts = [p.boxes_px[0] if p.boxes_px else None for p in predictions]
    report = grounding_scores(firsts, [s.boxes_px[0] for s in samples])
    rows = {name: report.row()}
    types = sorted({s.question_type for s in samples if s.question_type})
    if len(types) > 1:
        for qtype in types:
            idx = [i for i, s in enumerate(samples) if s.question_type == qtype]
            sub = grounding_scores([firsts[i] for i in idx], [samples[i].boxes_px[0] for i in idx])
            rows[f"{name} / {qtype}"] = sub.row()
    return EvalReport(Task.GROUND, rows, report.ious, report.n)


def _caption(samples, predictions, options, name) -> EvalReport:
    references = [s.references or (s.answer,) for s in samples]
    report = caption_scores(
        [p.text for p in predictions], references, bertscore_model=options.bertscore_model
    )
    note = f"METEOR: {report.meteor_variant}" + (f"; {report.note}" if report.note else "")
    return EvalReport(Task.CAPTION, {name: report.row()}, (), report.n, note)


def truth_changed(sample: Sample) -> bool:
    """Whether a change sample's pair changed: ``question_type`` "change"/"no_change" when set;
    else a ``change_ground`` sample changed when it has boxes, a caption when its reference does
    not say "no change"."""
    if sample.question_type in ("change", "no_change"):
        return sample.question_type == "change"
    if sample.task is Task.CHANGE_GROUND:
        return bool(sample.boxes_px)
    return not says_no_change(sample.answer)


def _change_caption(samples, predictions, options, name) -> EvalReport:
    detection = change_detection_accuracy(
        [not says_no_change(p.text) for p in predictions], [truth_changed(s) for s in samples]
    )
    references = [s.references or (s.answer,) for s in samples]
    captions = caption_scores(
        [p.text for p in predictions], references, bertscore_model=options.bertscore_model
    )
    rows = {name: {**detection.row(), **captions.row()}}
    changed = [i for i, s in enumerate(samples) if truth_changed(s)]
    if changed and len(changed) < len(samples):  # caption scores on the changed pairs alone
        sub = caption_scores(
            [predictions[i].text for i in changed],
            [references[i] for i in changed],
            bertscore_model=options.bertscore_model,
        )
        rows[f"{name} / changed pairs"] = {"change_acc": None, **sub.row()}
    note = f"METEOR: {captions.meteor_variant}" + (f"; {captions.note}" if captions.note else "")
    return EvalReport(Task.CHANGE_CAPTION, rows, detection.correct, detection.n, note)


def _change_ground(samples, predictions, name) -> EvalReport:
    report = change_grounding_scores(
        [p.boxes_px for p in predictions], [s.boxes_px for s in samples]
    )
    detection = change_detection_accuracy(
        [bool(p.boxes_px) for p in predictions], [truth_changed(s) for s in samples]
    )
    rows = {name: {**report.row(), "change_acc": detection.accuracy}}
    note = (
        f"{report.n_boxes} reference change boxes in {report.n} pairs; Acc@0.5 = share of them "
        "matched one to one by a predicted box at IoU >= 0.5"
    )
    found_all = tuple(v == 1.0 for v in report.per_sample)  # every change box of the pair found
    return EvalReport(Task.CHANGE_GROUND, rows, found_all, report.n, note)
