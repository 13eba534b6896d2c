"""The model trains: overfit a tiny adapter on one grounding example, save it, load it through
``Engine.from_config`` and get the trained box back in crop pixels (crop -> model -> parser)."""

from __future__ import annotations

import pytest
import torch

from engine import Engine, EngineConfig, ExpertConfig, LoraConfig, PrompterConfig, Task
from engine.model import IGNORE_INDEX, Sample, build_batch, resolve_placement
from engine.model.adapter import save_adapter
from engine.model.build import new_trainable_vlm
from engine.prompts import load_prompt_set
from tests.engine.tiny import cached_tiny_model_dir, one_torch_thread, random_image  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ANSWER = "storage tank: [100, 200, 300, 400]"


def _config(name: str, **kw) -> EngineConfig:
    return EngineConfig(
        backbone=name,
        model_path=cached_tiny_model_dir(name),
        device="cpu",
        prompter=PrompterConfig(num_tokens=4, width=32),
        experts=ExpertConfig(rank=8),
        lora=LoraConfig(rank=8, alpha=16, dropout=0.0),
        **kw,
    )


def _overfit(name: str, image, max_steps: int = 60):
    cfg = _config(name)
    torch.manual_seed(0)
    vlm = new_trainable_vlm(cfg, resolve_placement("cpu", cfg.quant))
    groups = ["prompter", "experts", "lora"] + (["projector"] if name == "paper" else [])
    vlm.set_trainable(groups)
    prompts = load_prompt_set(name, "adapter")
    user = prompts.render(Task.GROUND, question="storage tank")
    sample = Sample(user_text=user, query_text=user, answer=ANSWER, system=prompts.system)
    batch = build_batch(
        vlm.backbone, vlm.backbone.preprocess([image]), [sample], vlm.num_semantic_tokens
    )
    optimizer = torch.optim.AdamW(
        [p for g in groups for p in vlm.parameter_groups()[g]], lr=3e-3, weight_decay=0.0
    )
    vlm.train()
    losses = []
    for _ in range(max_steps):
        out = vlm(batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
        targets, predicted = batch.labels[0, 1:], out.logits[0, :-1].argmax(-1)
        answer_positions = targets != IGNORE_INDEX
        if losses[-1] < 0.2 and torch.equal(predicted[answer_positions], targets[answer_positions]):
            break
    return vlm.eval(), losses


@pytest.mark.parametrize("name", ["paper", "qwen2.5-vl"])
def test_overfit_adapter_answers_with_its_box_after_save_and_load(name, tmp_path):
    image = random_image(333, 500)
    vlm, losses = _overfit(name, image)
    assert losses[-1] < 0.2 < losses[0], losses
    save_adapter(vlm, tmp_path / "adapter")
    engine = Engine.from_config(_config(name, adapter_path=tmp_path / "adapter"))
    answer = engine.run(image, "ground", question="storage tank")
    assert answer.text == ANSWER
    (box,) = answer.boxes_px
    assert box.label == "storage tank"
    assert box.xyxy == pytest.approx(
        (50.0, 66.6, 150.0, 133.2)
    )  # 0-1000 grid -> 500x333 crop pixels
