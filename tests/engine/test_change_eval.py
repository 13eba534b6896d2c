"""Change evaluation: the no-change phrase detector, change/no-change accuracy and change
grounding (hand-computed), the LEVIR-CC loader on a tiny sample written here, and
``python -m engine.evaluate --task change_caption|change_ground`` end to end on the tiny model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from engine import Engine
from engine.data import load_dataset
from engine.data.instructions import Sample, write_jsonl
from engine.errors import DataFormatError
from engine.evaluation import Prediction, predict, summarize
from engine.evaluation.cli import main as evaluate_main
from engine.metrics import (
    change_detection_accuracy,
    change_grounding_scores,
    says_no_change,
)
from engine.types import BoxPx, Task
from tests.engine.tiny import (  # noqa: F401
    cached_tiny_model_dir,
    make_model_say,
    one_torch_thread,
    tiny_paper_engine,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- metrics ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "the scene is the same as before",  # LEVIR-CC's no-change captions
        "there is no difference",
        "the two scenes seem identical",
        "nothing has changed",
        "No change.",
        "no obvious changes in the area",
        "The scene remains the same.",
        "the buildings are unchanged",
    ],
)
def test_no_change_captions_are_recognised(text):
    assert says_no_change(text)


@pytest.mark.parametrize(
    "text",
    [
        "many houses are built along the road",
        "a new building appears in the top left corner",
        "the forest was cleared",
        "the road is unchanged but a house appeared",
        "the same road now has two new villas beside it",
        "",
    ],
)
def test_change_captions_are_not_no_change(text):
    assert not says_no_change(text)


def test_change_detection_accuracy_is_hand_computed():
    report = change_detection_accuracy(
        [True, True, False, False, True], [True, False, False, True, True]
    )
    assert report.accuracy == 3 / 5 and report.n == 5
    assert report.precision == 2 / 3  # called changed: 3, of which 2 changed
    assert report.recall == 2 / 3  # changed: 3, of which 2 called
    assert report.correct == (True, False, True, False, True)


def test_change_grounding_matches_boxes_one_to_one():
    ref_a, ref_b = BoxPx(0, 0, 10, 10), BoxPx(20, 20, 30, 30)
    near_a = BoxPx(0, 0, 10, 8)  # IoU 0.8 with ref_a
    weak_b = BoxPx(24, 20, 34, 30)  # IoU 60 / 140 with ref_b
    report = change_grounding_scores(
        [[near_a, weak_b, BoxPx(0, 0, 10, 9)], [], [BoxPx(1, 1, 2, 2)]],
        [[ref_a, ref_b], [], []],  # pair 2 and 3: no change
    )
    assert report.n == 3 and report.n_boxes == 2
    assert report.acc_at_05 == 0.5  # ref_a found; ref_b only at IoU 0.43
    assert report.precision_at_05 == 1 / 4  # one of the four predicted boxes matched
    # ref_a's match is the IoU 0.9 box (one to one: the best first), ref_b's weak_b
    assert report.miou == pytest.approx((0.9 + 60 / 140) / 2)
    assert report.per_sample == (0.5, 1.0, 0.0)  # a box on a no-change pair is wrong
    empty = change_grounding_scores([[]], [[]])
    assert math.isnan(empty.acc_at_05) and empty.per_sample == (1.0,)


# --- LEVIR-CC loader --------------------------------------------------------------------------------
def _png(path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((32, 32, 3), value, np.uint8)).save(path)


def _sentences(*raws):
    return [
        {"tokens": r.split(), "raw": f" {r} ", "imgid": 0, "sentid": i} for i, r in enumerate(raws)
    ]


def write_levir_cc(root, with_flags: bool = True):
    """A tiny LEVIR-CC: 1 train pair, 3 test pairs (one unchanged), images under images/."""
    entries = [
        ("train", "train_000001.png", 1, ["a road is built"] * 5),
        (
            "test",
            "test_000001.png",
            1,
            ["many houses are built", "some villas appear"] + ["houses are built"] * 3,
        ),
        (
            "test",
            "test_000002.png",
            0,
            ["the scene is the same as before", "there is no difference"] + ["no change"] * 3,
        ),
        (
            "test",
            "test_000003.png",
            1,
            ["a new road appears", "a road is built"] + ["a road is built"] * 3,
        ),
    ]
    images = []
    for i, (split, name, flag, raws) in enumerate(entries):
        _png(root / "images" / split / "A" / name, 10 + i)
        _png(root / "images" / split / "B" / name, 200 - i)
        entry = {
            "filepath": split,
            "filename": name,
            "imgid": i,
            "split": split,
            "sentences": _sentences(*raws),
        }
        if with_flags:
            entry["changeflag"] = flag
        images.append(entry)
    (root / "LevirCCcaptions.json").write_text(json.dumps({"images": images}))
    return root


def test_levir_cc_loader_reads_pairs_references_and_change_flags(tmp_path):
    root = write_levir_cc(tmp_path / "Levir-CC-dataset")
    samples = load_dataset("levir_cc", root)  # default split: test
    assert [s.id for s in samples] == [f"levir_cc:test/test_00000{i}.png" for i in (1, 2, 3)]
    first = samples[0]
    assert first.task is Task.CHANGE_CAPTION and first.question == ""
    assert first.answer == "many houses are built" and len(first.references) == 5
    before, after = first.load_images()
    assert before.mean() == 11 and after.mean() == 199  # A is before, B is after
    assert [s.question_type for s in samples] == ["change", "no_change", "change"]
    assert len(load_dataset("levir_cc", root, split="all")) == 4
    assert len(load_dataset("levir_cc", root / "LevirCCcaptions.json", split="train")) == 1
    unflagged = write_levir_cc(tmp_path / "no-flags", with_flags=False)
    inferred = [s.question_type for s in load_dataset("levir_cc", unflagged)]
    assert inferred == ["change", "no_change", "change"]  # from the references


def test_levir_cc_errors_name_the_fix(tmp_path):
    root = write_levir_cc(tmp_path / "levir")
    with pytest.raises(DataFormatError, match="LevirCCcaptions.json"):
        load_dataset("levir_cc", tmp_path / "nowhere")
    with pytest.raises(DataFormatError, match="splits: \\['test', 'train'\\]"):
        load_dataset("levir_cc", root, split="val")
    with pytest.raises(DataFormatError, match="image_root="):
        load_dataset("levir_cc", root, image_root=str(tmp_path))
    (root / "LevirCCcaptions.json").write_text('{"imgs": []}')
    with pytest.raises(DataFormatError, match="no 'images' list"):
        load_dataset("levir_cc", root)


# --- summaries and the CLI ----------------------------------------------------------------------------
def _pairs_jsonl(folder):
    """Synthetic-style change pairs in the instruction JSONL (as lab writes them)."""
    rows = []
    for i in range(3):
        _png(folder / f"{i}_before.png", 50)
        _png(folder / f"{i}_after.png", 60 + i)
        common = {
            "image_path": str(folder / f"{i}_after.png"),
            "before_image_path": str(folder / f"{i}_before.png"),
            "image_size_px": (32, 32),
        }
        boxes = (BoxPx(0, 0, 16, 16, label="new building"),) if i < 2 else ()
        answer = "[0, 0, 500, 500]" if boxes else "No change."
        rows.append(
            Sample(
                id=f"pair:{i}:ground",
                task="change_ground",
                question="new building",
                answer=answer,
                boxes_px=boxes,
                **common,
            )
        )
        caption = "A new building was built." if boxes else "No change."
        rows.append(
            Sample(id=f"pair:{i}:cap", task="change_caption", question="", answer=caption, **common)
        )
    write_jsonl(rows, folder / "pairs.jsonl")
    return folder / "pairs.jsonl"


@pytest.fixture(scope="module")
def engine() -> Engine:
    return tiny_paper_engine(6, prompter_tokens=None)


def test_change_ground_summary_from_the_engines_boxes(engine, monkeypatch, tmp_path):
    """The model says one box (the top-left quarter) for every pair: the two changed pairs'
    boxes are found (Acc@0.5 = 1), the unchanged pair is called changed (2 of 3 right)."""
    samples = [
        s for s in load_dataset("jsonl", _pairs_jsonl(tmp_path)) if s.task is Task.CHANGE_GROUND
    ]
    make_model_say(engine, monkeypatch, "[0, 0, 500, 500]", repeat=True)
    predictions = predict(engine, samples)
    assert [p.boxes_px[0].xyxy for p in predictions] == [(0, 0, 16, 16)] * 3
    report = summarize("change_ground", samples, predictions, name="m")
    assert report.rows["m"] == {
        "acc@0.5": 1.0,
        "precision@0.5": 2 / 3,
        "miou": 1.0,
        "change_acc": 2 / 3,
    }
    assert report.per_sample == (True, True, False)
    assert "Acc@0.5" in report.table() and "reference change boxes" in report.note


def test_change_caption_summary_has_detection_and_caption_scores():
    samples = [
        Sample(
            id=f"c{i}",
            task="change_caption",
            question="",
            answer=a,
            image=np.zeros((8, 8, 3), np.uint8),
            before_image=np.zeros((8, 8, 3), np.uint8),
            question_type=q,
        )
        for i, (a, q) in enumerate(
            [("many houses are built", "change"), ("no change", "no_change")]
        )
    ]
    predictions = [Prediction("c0", "many houses are built"), Prediction("c1", "a road is built")]
    report = summarize("change_caption", samples, predictions, name="m")
    row = report.rows["m"]
    assert row["change_acc"] == 0.5 and row["change_recall"] == 1.0
    assert 0 < row["bleu1"] < 1 and 0 < row["rouge1"] < 1
    assert report.rows["m / changed pairs"]["bleu1"] == pytest.approx(1.0)  # exact caption
    assert report.per_sample == (True, False)


def _cli_argv(task: str, data, out, *extra: str) -> list[str]:
    """``python -m engine.evaluate`` arguments for the tiny paper model on CPU (4 new tokens)."""
    return ["--task", task, "--data", str(data), *extra, "--model", str(cached_tiny_model_dir("paper")),
            "--device", "cpu", "--max-new-tokens", "4", "--out", str(out)]


@pytest.mark.parametrize("fmt", ["levir_cc", "jsonl"])
def test_the_cli_evaluates_change_captions(tmp_path, fmt, capsys):
    data = write_levir_cc(tmp_path / "levir") if fmt == "levir_cc" else _pairs_jsonl(tmp_path)
    out = tmp_path / "eval"
    argv = _cli_argv("change_caption", data, out, "--format", fmt)
    assert evaluate_main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "change_caption" and metrics["n"] == 3
    assert {"change_acc", "bleu1", "rouge1"} <= set(next(iter(metrics["rows"].values())))
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all("correct" in r for r in rows)
    assert "Change acc." in capsys.readouterr().out


def test_the_cli_evaluates_change_grounding(tmp_path):
    data = _pairs_jsonl(tmp_path)
    out = tmp_path / "eval"
    argv = _cli_argv("change_ground", data, out)
    assert evaluate_main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 3 and "acc@0.5" in next(iter(metrics["rows"].values()))
