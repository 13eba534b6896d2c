"""The change stage of the demo model (lab.demo.change_stage): its data mix, its training config
(continuing the shipped model), the change-grounding matching and the atomic export."""

from __future__ import annotations

import json

import pytest

from engine.types import BoxPx
from lab.demo.change_stage import (
    SHIPPED,
    ChangeStage,
    build_change_data,
    change_config,
    match_boxes,
    sampling_weights,
)


def test_match_boxes_is_one_to_one_at_iou_half():
    truth = [BoxPx(0, 0, 10, 10), BoxPx(20, 20, 30, 30)]
    assert match_boxes([BoxPx(0, 0, 10, 10)], truth) == 1
    # one prediction cannot count for two true boxes
    assert match_boxes([BoxPx(0, 0, 30, 30)], [BoxPx(0, 0, 29, 29), BoxPx(0, 0, 28, 28)]) == 1
    assert match_boxes([BoxPx(0, 0, 10, 10), BoxPx(21, 21, 30, 30)], truth) == 2
    assert match_boxes([BoxPx(5, 5, 15, 15)], truth) == 0  # IoU 1/7
    assert match_boxes([], truth) == 0


@pytest.fixture(scope="module")
def small_work(tmp_path_factory):
    work = tmp_path_factory.mktemp("change_stage")
    stage = ChangeStage(change_pairs=6, val_pairs=3, replay_scenes=3)
    build_change_data(stage, work)
    return stage, work


def test_data_mix_gives_change_samples_their_share(small_work):
    stage, work = small_work
    weights = sampling_weights(stage, work / "data")
    mass = {"change": 0.0, "single": 0.0}
    for name, part in (("change_train/pairs.jsonl", "change"), ("replay/train.jsonl", "single")):
        for line in (work / "data" / name).read_text().splitlines():
            row = json.loads(line)
            mass[part] += weights.get(row.get("question_type") or row["task"], 1.0)
    assert mass["change"] / (mass["change"] + mass["single"]) == pytest.approx(stage.change_share)
    # every change row is a two-image row of the engine's format
    rows = [
        json.loads(x) for x in (work / "data/change_train/pairs.jsonl").read_text().splitlines()
    ]
    assert all(r["before_image_path"] and r["image_path"] for r in rows)


def test_config_continues_the_shipped_model_with_replay(small_work):
    stage, work = small_work
    config = change_config(stage, work)
    assert config.model.engine.model_path == SHIPPED / "model"
    assert config.model.init_adapter == SHIPPED / "adapter"
    assert config.retrieval.kb_dir == SHIPPED / "kb"
    assert [s.path.name for s in config.data.train] == ["train.jsonl", "pairs.jsonl"]
    assert "vision" not in config.optim.lr  # the tower stays frozen
    assert config.optim.max_steps == stage.steps and config.output_dir == work / "runs" / "change"


def test_export_refuses_an_unfinished_run_and_leaves_the_target_alone(tmp_path):
    from lab.demo.export import export_trained_model

    out = tmp_path / "demo"
    (out / "model").mkdir(parents=True)
    (out / "model" / "keep.txt").write_text("old")
    with pytest.raises(FileNotFoundError, match="finished training run"):
        export_trained_model(tmp_path / "no_run" / "final", out)
    assert (out / "model" / "keep.txt").read_text() == "old"
