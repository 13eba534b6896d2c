"""Evaluation (engine.evaluate): paper metrics from predictions (hand-checked), the CLI end to end
on tiny synthetic data, and on the real benchmark samples in ../shared/data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.data.instructions import Sample
from engine.evaluation import EvalOptions, Prediction, summarize
from engine.evaluation.cli import main as evaluate_main
from engine.parsing import match_label
from engine.types import BoxPx, Task
from tests.engine.tiny import cached_tiny_model_dir, one_torch_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")

IMAGE = np.zeros((100, 200, 3), dtype=np.uint8)


def _sample(i, task, answer, qtype=None, **kw) -> Sample:
    return Sample(
        id=f"s{i}",
        task=task,
        question=kw.pop("question", "q"),
        answer=answer,
        image=IMAGE,
        question_type=qtype,
        **kw,
    )


def test_vqa_summary_counts_per_type_with_rsvqa_normalisation():
    samples = [
        _sample(0, Task.ASK, "yes", "presence"),
        _sample(1, Task.ASK, "no", "presence"),
        _sample(2, Task.ASK, "3", "count"),
        _sample(3, Task.ASK, "12", "count"),
    ]
    preds = [Prediction(s.id, t) for s, t in zip(samples, ["Yes.", "yes", "three", "15"])]
    report = summarize("ask", samples, preds, name="m")
    row = report.rows["m"]
    assert row["presence"] == 0.5 and row["count"] == 0.5
    assert row["average"] == 0.5 and row["overall"] == 0.5
    assert report.per_sample == (True, False, True, False)
    assert "| m | 50.0 | 50.0 | 50.0 | 50.0 |" in report.table()
    bucketed = summarize("ask", samples, preds, EvalOptions(count_buckets=True), name="m")
    assert bucketed.rows["m"]["count"] == 1.0  # 12 and 15: both "between 10 and 100"


LABELS = ("rural", "urban", "industrial", "golffield", "dense_residential", "residential")
CLASSIFY_ANSWERS = (
    "urban",
    "Urban area.",
    "It is an urban scene",
    "suburban",  # a label inside another word names nothing
    "rural or urban",  # two labels: none
    "golf field",
    "Dense residential",
    "dense residential area",
    "residential",
    "industrial!",
    "a forest",
    "",
)


@pytest.mark.parametrize("answer", CLASSIFY_ANSWERS)
def test_evaluation_counts_a_classify_answer_right_exactly_when_the_app_shows_that_label(answer):
    """The app shows ``Answer.label`` (the engine's :func:`engine.parsing.match_label`); the
    evaluation must count an answer right for a class exactly when that label is the class,
    whether the prediction carries the label or only the text."""
    shown = match_label(answer, LABELS)
    for gold in LABELS:
        samples = [_sample(0, Task.CLASSIFY, gold, labels=LABELS)]
        with_label = Prediction("s0", answer, label=shown)
        text_only = Prediction("s0", answer)
        for prediction in (with_label, text_only):
            report = summarize("classify", samples, [prediction])
            assert report.per_sample == ((shown == gold),), (answer, gold, shown)


def test_grounding_summary_is_acc_at_05_and_mean_iou():
    box = BoxPx(0, 0, 100, 100)
    samples = [
        _sample(
            i, Task.GROUND, "[0, 0, 500, 1000]", "ground", boxes_px=(box,), image_size_px=(200, 100)
        )
        for i in range(3)
    ]
    preds = [
        Prediction("s0", "a", (BoxPx(0, 0, 100, 100),)),  # IoU 1
        Prediction("s1", "b", (BoxPx(50, 0, 150, 100),)),  # IoU 1/3
        Prediction("s2", "c", ()),  # no box -> IoU 0
    ]
    row = summarize("ground", samples, preds, name="m").rows["m"]
    assert row["acc@0.5"] == pytest.approx(1 / 3)
    assert row["miou"] == pytest.approx((1 + 1 / 3) / 3)


def test_classification_and_caption_summaries():
    labels = ("rural", "urban")
    samples = [
        _sample(i, Task.CLASSIFY, a, labels=labels, question="")
        for i, a in enumerate(["rural", "urban", "urban"])
    ]
    preds = [Prediction("s0", "Rural."), Prediction("s1", "rural"), Prediction("s2", "urban")]
    row = summarize("classify", samples, preds, name="m").rows["m"]
    assert row["overall"] == pytest.approx(2 / 3) and row["average"] == pytest.approx(0.75)
    captions = [
        _sample(
            0,
            Task.CAPTION,
            "a red house near a lake",
            question="",
            references=("a red house near a lake", "a house"),
        )
    ]
    report = summarize("caption", captions, [Prediction("s0", "a red house near a lake")])
    assert report.rows["model"]["bleu1"] == pytest.approx(1.0)
    assert report.rows["model"]["rouge1"] == pytest.approx(1.0)
    assert report.rows["model"]["bertscore_f1"] is None and "BERTScore" in report.note


def test_summary_refuses_mixed_tasks():
    from engine.errors import InputError

    with pytest.raises(InputError, match="--task ground but the data has \\['ask'\\]"):
        summarize("ground", [_sample(0, Task.ASK, "yes")], [Prediction("s0", "yes")])


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from lab.synthetic import build_dataset

    out = tmp_path_factory.mktemp("eval-data")
    build_dataset(out, 3, seed=8, crop_px=96, scene_px=192)
    return out / "train.jsonl"


@pytest.mark.parametrize(
    ("task", "columns"),
    [
        ("ask", ("Presence", "Avg.")),
        ("classify", ("Overall",)),
        ("ground", ("Acc@0.5", "mIoU")),
        ("caption", ("BLEU-1", "ROUGE-1", "METEOR", "BERT")),
    ],
)
def test_cli_end_to_end_on_tiny_data(task, columns, tiny_data, tmp_path, capsys):
    out = tmp_path / "eval"
    code = evaluate_main(
        [
            "--task",
            task,
            "--data",
            str(tiny_data),
            "--model",
            str(cached_tiny_model_dir("paper")),
            "--device",
            "cpu",
            "--limit",
            "5",
            "--batch-size",
            "3",
            "--max-new-tokens",
            "6",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("| Method"))
    assert all(c in header for c in columns), header
    from engine.data import read_jsonl

    expected = min(5, sum(s.task.value == task for s in read_jsonl(tiny_data)))
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == expected > 0 and all(r["task"] == task for r in rows)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == task and metrics["n"] == expected


def test_cli_reports_bad_arguments(tiny_data, capsys):
    code = evaluate_main(
        ["--task", "ask", "--data", str(tiny_data), "--format", "nope", "--model", "x"]
    )
    assert code == 2 and "unknown dataset format 'nope'" in capsys.readouterr().err


DIOR_IMAGE = ["--option", "image_path={root}/grounding/dior_00001.jpg"]


@pytest.mark.parametrize(
    ("data", "fmt", "task", "options", "columns"),
    [
        ("rsvqa_lr", "rsvqa", "ask", [], ("Avg.",)),
        ("rsvqa_hr", "rsvqa", "ask", [], ("Avg.",)),
        ("grounding/dior_rsvg_00001.xml", "dior_rsvg", "ground", DIOR_IMAGE, ("Acc@0.5",)),
        ("scenes", "scene_folders", "classify", [], ("Overall",)),
    ],
)
def test_cli_runs_on_real_benchmark_samples(shared_data, data, fmt, task, options, columns, capsys):
    args = ["--task", task, "--data", str(shared_data / data), "--format", fmt]
    args += ["--model", str(cached_tiny_model_dir("paper")), "--device", "cpu", "--limit", "4"]
    args += ["--max-new-tokens", "4", *[o.format(root=shared_data) for o in options]]
    code = evaluate_main(args)
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("| Method"))
    assert all(c in header for c in columns)
    assert any(line.startswith("| paper:") for line in lines)
