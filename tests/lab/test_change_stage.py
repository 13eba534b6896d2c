"""The change stage of the demo model (lab.demo.change_stage): its data mix, its training config
(continuing the shipped model), the change-grounding matching and the atomic export."""

from __future__ import annotations

import json

import pytest

from engine.types import BoxPx
from lab.demo.change_stage import (
    CHANGE_TASKS,
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


def test_lora_mode_trains_a_task_routed_lora_on_change_pairs_only(small_work):
    stage, work = small_work
    config = change_config(stage, work, name="lora", mode="lora")
    engine = config.model.engine
    assert engine.model_path == SHIPPED / "model" and config.model.init_adapter == SHIPPED / "adapter"
    assert engine.lora.tasks == CHANGE_TASKS and engine.lora.alpha == 2 * stage.lora_rank
    assert config.optim.lr == {"lora": stage.lora_lr}  # the shipped weights stay frozen
    assert [s.path.parent.name for s in config.data.train] == ["change_train"]  # no replay
    assert [s.path.parent.name for s in config.data.val] == ["change_val"]
    with pytest.raises(ValueError, match="change-stage mode"):
        change_config(stage, work, mode="partial")


def test_adapter_only_export_keeps_the_shipped_base(tmp_path):
    """A LoRA run has no final/base: only the adapter is swapped, atomically, as fp16."""
    import torch
    from safetensors.torch import load_file, save_file

    from lab.demo.export import export_trained_adapter

    out, final = tmp_path / "demo", tmp_path / "run" / "final"
    (out / "model").mkdir(parents=True)
    (out / "model" / "keep.txt").write_text("old base")
    (final / "adapter").mkdir(parents=True)
    (final / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model": "/tmp/x"}))
    save_file({"lora.w": torch.ones(2, 2)}, str(final / "adapter" / "adapter.safetensors"))
    export_trained_adapter(final, out)
    assert (out / "model" / "keep.txt").read_text() == "old base"
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["base_model"] == "model"
    assert load_file(str(out / "adapter" / "adapter.safetensors"))["lora.w"].dtype == torch.float16
    (final / "base").mkdir()  # a run that trained base weights must not lose them
    with pytest.raises(ValueError, match="export_trained_model"):
        export_trained_adapter(final, out)
