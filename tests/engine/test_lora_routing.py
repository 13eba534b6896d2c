"""Task-routed LoRA (``LoraConfig.tasks``): the LoRA runs for its tasks only, every other request
computes exactly what the model without LoRA computes; ``tasks`` survives a save/load round
trip, and adapters written without it load as ``None`` (LoRA on every task)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine import Engine, EngineConfig, ExpertConfig, GenerationConfig, LoraConfig, PrompterConfig
from engine.errors import ConfigError
from engine.model import resolve_placement
from engine.model.adapter import ADAPTER_CONFIG, ADAPTER_WEIGHTS, read_manifest, save_adapter
from engine.model.build import new_trainable_vlm
from engine.types import Task
from tests.engine.tiny import cached_tiny_model_dir, one_torch_thread, random_image  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")

AFTER = random_image(96, 128, seed=21)
BEFORE = random_image(96, 128, seed=22)
CHANGE_TASKS = ("change_caption", "change_ground", "change_ask")


def _config(lora: LoraConfig | None, adapter_path=None) -> EngineConfig:
    return EngineConfig(
        backbone="paper",
        model_path=cached_tiny_model_dir("paper"),
        device="cpu",
        prompter=PrompterConfig(num_tokens=4, width=32),
        experts=ExpertConfig(rank=8, every=2),
        lora=lora,
        level_layers=(1, 2),
        generation=GenerationConfig(max_new_tokens=6),
        adapter_path=adapter_path,
    )


def _save_trained(lora: LoraConfig, path):
    """Save an adapter whose weights (LoRA included, so it is no no-op) all moved."""
    vlm = new_trainable_vlm(_config(lora), resolve_placement("cpu", _config(lora).quant))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for group in ("prompter", "projector", "experts", "lora"):
            for param in vlm.parameter_groups()[group]:
                param.add_(torch.randn(param.shape, generator=generator) * 0.3)
    return save_adapter(vlm.eval(), path)


def _without_lora(adapter, path):
    """The same adapter with its LoRA removed (config and weights): the model without LoRA."""
    path.mkdir()
    config = json.loads((adapter / ADAPTER_CONFIG).read_text())
    config["lora"] = None
    (path / ADAPTER_CONFIG).write_text(json.dumps(config))
    weights = load_file(str(adapter / ADAPTER_WEIGHTS))
    save_file({k: v for k, v in weights.items() if not k.startswith("lora.")}, str(path / ADAPTER_WEIGHTS))
    return path


def _run(engine: Engine, monkeypatch, task: str, **kw):
    """``engine.run`` plus the logits of its real prefill (recorded, not changed)."""
    seen = []
    prefill = engine.vlm.prefill

    def recording(*args):
        logits, positions = prefill(*args)
        seen.append(logits.clone())
        return logits, positions

    with monkeypatch.context() as patch:
        patch.setattr(engine.vlm, "prefill", recording)
        answer = engine.run(AFTER, task, **kw)
    return answer, seen[0]


REQUESTS = {
    "caption": {},
    "ground": {"question": "storage tank"},
    "change_caption": {"before": BEFORE},
    "change_ground": {"question": "new building", "before": BEFORE},
}


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    root = tmp_path_factory.mktemp("routing")
    routed = _save_trained(LoraConfig(rank=4, alpha=8, dropout=0.0, tasks=CHANGE_TASKS), root / "routed")
    everywhere = _save_trained(LoraConfig(rank=4, alpha=8, dropout=0.0), root / "everywhere")
    plain = _without_lora(routed, root / "plain")
    return {
        "routed": Engine.from_config(_config(None, routed)),
        "everywhere": Engine.from_config(_config(None, everywhere)),
        "plain": Engine.from_config(_config(None, plain)),
        "plain_everywhere": Engine.from_config(_config(None, _without_lora(everywhere, root / "p2"))),
    }


def test_single_image_requests_are_exactly_the_model_without_lora(engines, monkeypatch):
    routed, plain = engines["routed"], engines["plain"]
    assert routed.vlm.lora_config.tasks == CHANGE_TASKS and plain.vlm.lora_config is None
    # change, single, change, single: the switch works both ways, request after request
    for task in ("change_caption", "caption", "change_ground", "ground"):
        kw = REQUESTS[task]
        got, got_logits = _run(routed, monkeypatch, task, **kw)
        want, want_logits = _run(plain, monkeypatch, task, **kw)
        if Task.parse(task).is_change:
            assert not torch.equal(got_logits, want_logits), task
        else:
            assert torch.equal(got_logits, want_logits), task
            assert (got.text, got.boxes_px) == (want.text, want.boxes_px), task


def test_untargeted_lora_runs_for_every_task(engines, monkeypatch):
    """``tasks=None`` (the behaviour before routing): the LoRA also changes single-image output."""
    assert engines["everywhere"].vlm.lora_config.tasks is None
    for task in ("caption", "change_caption"):
        _, got = _run(engines["everywhere"], monkeypatch, task, **REQUESTS[task])
        _, want = _run(engines["plain_everywhere"], monkeypatch, task, **REQUESTS[task])
        assert not torch.equal(got, want), task


def test_routing_keeps_which_parameters_train():
    lora = LoraConfig(rank=4, alpha=8, tasks=("change_caption",))
    vlm = new_trainable_vlm(_config(lora), resolve_placement("cpu", _config(lora).quant))
    vlm.set_trainable(("lora",))
    params = vlm.parameter_groups()["lora"]
    assert params and all(p.requires_grad for p in params)
    assert vlm.route_lora(Task.CAPTION) is False
    assert all(p.requires_grad for p in params)  # peft's disable alone would freeze them
    assert vlm.route_lora(Task.CHANGE_CAPTION) is True
    vlm.set_trainable(("prompter",))
    assert vlm.route_lora("change_caption") is True and not any(p.requires_grad for p in params)


def test_tasks_survive_the_round_trip_and_old_adapters_load_untargeted(tmp_path):
    adapter = _save_trained(LoraConfig(rank=4, alpha=8, tasks=CHANGE_TASKS), tmp_path / "a")
    saved = json.loads((adapter / ADAPTER_CONFIG).read_text())
    assert saved["lora"]["tasks"] == list(CHANGE_TASKS)
    assert read_manifest(adapter).lora.tasks == CHANGE_TASKS
    del saved["lora"]["tasks"]  # an adapter written before task routing
    (adapter / ADAPTER_CONFIG).write_text(json.dumps(saved))
    assert read_manifest(adapter).lora.tasks is None


@pytest.mark.parametrize("tasks", [(), "change_caption", ("change_caption", "nonsense")])
def test_bad_task_lists_are_refused(tasks):
    with pytest.raises(ConfigError, match="lora.tasks"):
        LoraConfig(tasks=tasks)
