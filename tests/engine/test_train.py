"""Training (engine.train): the loss goes down, resume after an interruption is exact, checkpoints
and final adapters load into the engine, trained base weights round-trip, configs fail clearly."""

from __future__ import annotations

import dataclasses
import itertools
import json

import pytest
import torch

from engine import Engine, EngineConfig
from engine.errors import ConfigError, DataFormatError
from engine.training import (
    ModelSection,
    SampleOrder,
    TrainConfig,
    Trainer,
    latest_checkpoint,
    load_train_config,
    lr_multiplier,
)
from engine.training.cli import main as train_main
from tests.engine.tiny import cached_tiny_model_dir, one_torch_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A small synthetic instruction dataset (3 scenes, 96 px crops) written by lab.synthetic."""
    from lab.synthetic import build_dataset

    out = tmp_path_factory.mktemp("train-data")
    build_dataset(out, 3, seed=5, crop_px=96, scene_px=192)
    return out


def _config(tmp_path, data_dir, **optim) -> TrainConfig:
    raw = {
        "output_dir": str(tmp_path / "run"),
        "model": {
            "backbone": "paper",
            "model_path": str(cached_tiny_model_dir("paper")),
            "device": "cpu",
            "prompter": {"num_tokens": 4, "width": 32},
            "experts": {"rank": 8},
            "lora": {"rank": 8, "alpha": 16, "dropout": 0.1},
        },
        "data": {
            "train": [{"path": str(data_dir / "train.jsonl"), "limit": 24}],
            "val": [{"path": str(data_dir / "train.jsonl"), "limit": 8}],
            "weights": {"ground": 2.0, "presence": 0.5},
        },
        "optim": {
            "lr": {"prompter": 3e-3, "projector": 3e-3, "experts": 3e-3, "lora": 3e-3},
            "batch_size": 4,
            "grad_accum": 2,
            "max_steps": 6,
            "warmup_steps": 2,
            "log_every": 1,
            "seed": 3,
            **optim,
        },
    }
    return TrainConfig.from_dict(raw, stage="instruct")


@pytest.mark.parametrize("loss", ["token", "sample"])
def test_short_run_lowers_the_loss_and_writes_log_and_adapter(tmp_path, data_dir, loss):
    config = _config(tmp_path, data_dir, max_steps=12, batch_size=2, warmup_steps=0, loss=loss)
    train = (dataclasses.replace(config.data.train[0], limit=6),)
    config = dataclasses.replace(  # one epoch = 3 steps of 2 x 2 samples, repeated
        config, data=dataclasses.replace(config.data, train=train, weights={}, val_limit=4)
    )
    result = Trainer(config).run()
    first, last = sum(result.losses[:3]) / 3, sum(result.losses[-3:]) / 3
    assert last < 0.7 * first, result.losses
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == list(range(1, 13))
    assert set(rows[0]["lr"]) == {"prompter", "projector", "experts", "lora"}
    assert rows[-1].get("final") and rows[-1]["val_loss"] == pytest.approx(result.val_loss)
    assert (result.final_dir / "adapter" / "adapter.safetensors").is_file()


def test_resume_after_interruption_continues_exactly(tmp_path, data_dir):
    straight = Trainer(_config(tmp_path / "a", data_dir, save_every=3)).run()

    def interrupt(step, loss):
        if step == 5:
            raise KeyboardInterrupt

    config = _config(tmp_path / "b", data_dir, save_every=3)
    with pytest.raises(KeyboardInterrupt):
        Trainer(config).run(on_step=interrupt)
    assert latest_checkpoint(tmp_path / "b" / "run" / "checkpoints").name == "step-0000003"
    resumed = Trainer(config).run(resume=True)
    assert resumed.steps == 6 and len(resumed.losses) == 3  # steps 4, 5, 6 redone
    torch.testing.assert_close(
        torch.tensor(resumed.losses), torch.tensor(straight.losses[3:]), rtol=1e-5, atol=1e-6
    )
    from safetensors.torch import load_file

    a = load_file(str(straight.final_dir / "adapter" / "adapter.safetensors"))
    b = load_file(str(resumed.final_dir / "adapter" / "adapter.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    log = (tmp_path / "b" / "run" / "log.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in log if "loss" in json.loads(r)] == [1, 2, 3, 4, 5, 6]


def test_cli_align_stage_trains_projector_and_prompter_and_engine_loads_it(
    tmp_path, data_dir, capsys
):
    config = {
        "output_dir": str(tmp_path / "align"),
        "model": {
            "backbone": "paper",
            "model_path": str(cached_tiny_model_dir("paper")),
            "device": "cpu",
            "prompter": {"num_tokens": 4, "width": 32},
            "experts": {"rank": 8},
        },
        "data": {"train": [{"path": str(data_dir / "train.jsonl")}]},
        "optim": {"batch_size": 2, "max_steps": 2},
    }
    path = tmp_path / "align.yaml"
    import yaml

    path.write_text(yaml.safe_dump(config))
    assert train_main(["--stage", "align", "--config", str(path)]) == 0
    assert "trained 2 steps" in capsys.readouterr().out
    saved = json.loads((tmp_path / "align" / "train_config.json").read_text())
    assert saved["stage"] == "align"
    trainer_cfg = load_train_config(path, stage="align")
    assert trainer_cfg.tasks == ("caption",) and set(trainer_cfg.group_lr) == {
        "projector",
        "prompter",
    }
    adapter = tmp_path / "align" / "final" / "adapter"
    engine = Engine.from_config(
        EngineConfig(
            backbone="paper",
            model_path=cached_tiny_model_dir("paper"),
            adapter_path=adapter,
            device="cpu",
        )
    )
    assert engine.run(_image(), "caption").text is not None


def _without_lora(model):
    return dataclasses.replace(model, engine=dataclasses.replace(model.engine, lora=None))


def test_stage2_starts_from_the_stage1_adapter(tmp_path, data_dir):
    stage1 = dataclasses.replace(
        _config(tmp_path / "s1", data_dir, max_steps=1, lr=None), stage="align"
    )
    captions = (dataclasses.replace(stage1.data.train[0], limit=None),)
    stage1 = dataclasses.replace(
        stage1,
        model=_without_lora(stage1.model),
        data=dataclasses.replace(stage1.data, train=captions, val=(), weights={}),
    )
    first = Trainer(stage1).run()
    stage2 = _config(tmp_path / "s2", data_dir)
    model = dataclasses.replace(stage2.model, init_adapter=first.final_dir / "adapter")
    stage2 = dataclasses.replace(stage2, model=model)
    trainer = Trainer(stage2)
    from safetensors.torch import load_file

    from engine.model.adapter import adapter_state_dict

    stored = load_file(str(first.final_dir / "adapter" / "adapter.safetensors"))
    current = adapter_state_dict(trainer.vlm)
    for key, value in stored.items():
        torch.testing.assert_close(current[key], value)
    assert any(k.startswith("lora.") for k in current) and not any(
        k.startswith("lora.") for k in stored
    )


def test_training_base_weights_saves_a_loadable_base(tmp_path, data_dir):
    config = _config(
        tmp_path, data_dir, max_steps=2, lr={"llm": 1e-3, "vision": 1e-3, "prompter": 1e-3}
    )
    config = dataclasses.replace(config, model=_without_lora(config.model))
    trainer = Trainer(config)
    result = trainer.run()
    base = result.final_dir / "base"
    assert (base / "llm" / "config.json").is_file() and (base / "vision" / "config.json").is_file()
    engine = Engine.from_config(
        EngineConfig(
            backbone="paper",
            model_path=base,
            adapter_path=result.final_dir / "adapter",
            device="cpu",
        )
    )
    trained = dict(trainer.vlm.backbone.llm.named_parameters())
    loaded = dict(engine.vlm.backbone.llm.named_parameters())
    original = Engine.from_config(
        EngineConfig(backbone="paper", model_path=cached_tiny_model_dir("paper"), device="cpu")
    )
    name = "model.embed_tokens.weight"
    torch.testing.assert_close(loaded[name], trained[name])
    assert not torch.equal(loaded[name], dict(original.vlm.backbone.llm.named_parameters())[name])


def test_sample_order_is_deterministic_weighted_and_resumable():
    order = SampleOrder((1.0, 2.0, 0.0, 0.5), seed=1, global_batch=2)
    epoch = order.epoch(0)
    assert list(epoch).count(1) == 2 and 2 not in epoch
    assert (order.epoch(0) == epoch).all() and not (order.epoch(1) == order.epoch(2)).all()
    assert order.steps_per_epoch == 1
    assert list(order.step_indices(0)) == list(epoch[:2])


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    values = [lr_multiplier(s, total=10, warmup=2, min_ratio=0.1) for s in range(11)]
    assert values[0] == pytest.approx(0.5) and values[1] == pytest.approx(1.0)
    assert values[2] == pytest.approx(1.0) and values[10] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(values[1:]))


def test_model_section_is_an_engine_config_and_round_trips(tmp_path, data_dir):
    config = _config(tmp_path, data_dir)
    engine = config.model.engine
    assert isinstance(engine, EngineConfig) and engine.backbone == "paper"
    assert (engine.prompter.num_tokens, engine.experts.rank, engine.lora.rank) == (4, 8, 8)
    saved = json.loads(json.dumps(config.to_json()))  # as train_config.json holds it
    assert saved["model"]["device"] == "cpu" and saved["model"]["init_adapter"] is None
    again = TrainConfig.from_dict(saved)
    assert again.model.engine.to_dict() == engine.to_dict() and again.optim == config.optim
    optim = {**saved["optim"], "lr": {"prompter": 1e-3}}
    no_lora = {**saved["model"], "lora": None}
    plain = TrainConfig.from_dict({**saved, "model": no_lora, "optim": optim})
    assert plain.model.engine.lora is None
    del no_lora["backbone"]  # the default backbone of a training run is paper
    plain = TrainConfig.from_dict({**saved, "model": no_lora, "optim": optim})
    assert plain.model.engine.backbone == "paper"


def test_bad_configs_fail_with_clear_messages(tmp_path, data_dir):
    good = _config(tmp_path, data_dir).to_json()
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['learning_rate'\]"):
        TrainConfig.from_dict({**good, "optim": {**good["optim"], "learning_rate": 1}})
    with pytest.raises(ConfigError, match="unknown key.*'modle'"):
        TrainConfig.from_dict({**good, "modle": {}})
    with pytest.raises(ConfigError, match="--stage align but .* says stage: instruct"):
        TrainConfig.from_dict(good, stage="align")
    with pytest.raises(ConfigError, match="unknown parameter groups \\['decoder'\\]"):
        TrainConfig.from_dict({**good, "optim": {**good["optim"], "lr": {"decoder": 1e-3}}})
    for section, key, value in (("optim", "number_sigma", 10.0), ("model", "image_positions", "x")):
        with pytest.raises(ConfigError, match=rf"unknown key\(s\) \['{key}'\] in .*{section}"):
            TrainConfig.from_dict({**good, section: {**good[section], key: value}})
    with pytest.raises(ConfigError, match=r"\['adapter_path'\] in .*model.*'init_adapter'"):
        TrainConfig.from_dict({**good, "model": {**good["model"], "adapter_path": "a"}})
    with pytest.raises(ConfigError, match="init_adapter, not adapter_path"):
        ModelSection(EngineConfig(backbone="paper", adapter_path=tmp_path))
    with pytest.raises(ConfigError, match="unknown key.*'retrieval'.* in .*model"):
        TrainConfig.from_dict({**good, "model": {**good["model"], "retrieval": {}}})
    with pytest.raises(ConfigError, match="either the whole LLM"):
        TrainConfig.from_dict({**good, "optim": {**good["optim"], "lr": {"llm": 1, "lora": 1}}})
    with pytest.raises(ConfigError, match="not found"):
        load_train_config(tmp_path / "missing.yaml")
    missing = {**good, "data": {"train": [{"path": str(tmp_path / "nope.jsonl")}]}}
    with pytest.raises(DataFormatError, match="nope.jsonl.*not found"):
        Trainer(TrainConfig.from_dict(missing))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**good, "data": {**good["data"], "tasks": ["dance"]}}))
    assert train_main(["--stage", "instruct", "--config", str(bad)]) == 2


def _image():
    from tests.engine.tiny import random_image

    return random_image(96, 96)
