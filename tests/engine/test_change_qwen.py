"""Change requests on Qwen2.5-VL and Qwen3-VL (tiny random models): two images in one user turn,
the way the library's processor and ``model.generate`` take them, and boxes on the after grid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine import Engine, EngineConfig, GenerationConfig
from engine.generation import greedy_steps
from engine.model import SemanticVLM, build_batch, load_backbone, resolve_placement
from engine.model.inputs import prompt_sample
from engine.prompts import load_prompt_set
from engine.types import Task
from tests.engine.test_qwen3vl import make_tiny_qwen3vl_model_dir
from tests.engine.tiny import (  # noqa: F401
    cached_tiny_model_dir,
    make_model_say,
    one_torch_thread,
    random_image,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

AFTER = random_image(333, 500, seed=21)
BEFORE = random_image(333, 500, seed=22)
BLOCK = "<|vision_start|><|image_pad|><|vision_end|>"


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory) -> Path:
    return make_tiny_qwen3vl_model_dir(tmp_path_factory.mktemp("qwen3vl-change"))


def _model_dir(name: str, qwen3_dir: Path) -> Path:
    return qwen3_dir if name == "qwen3-vl" else cached_tiny_model_dir(name)


def _backbone(name: str, model_dir: Path):
    cfg = EngineConfig(backbone=name, model_path=model_dir, device="cpu")
    return load_backbone(cfg, resolve_placement("cpu", cfg.quant))


@pytest.mark.parametrize("name", ["qwen2.5-vl", "qwen3-vl"])
@pytest.mark.parametrize("task", [Task.CHANGE_CAPTION, Task.CHANGE_GROUND])
def test_two_image_greedy_loop_equals_the_library_generate(name, task, qwen3_dir):
    """Our prompt has the two image blocks the processor expands for two images (before, after),
    and our KV-cached loop gives the tokens ``model.generate`` gives for both images."""
    backbone = _backbone(name, _model_dir(name, qwen3_dir))
    prompts = load_prompt_set(name, "zero_shot")
    sample = prompt_sample(
        backbone,
        prompts,
        task,
        to_prompter=False,
        question="new building" if task.has_boxes else None,
    )
    images = backbone.preprocess([BEFORE, AFTER]).grouped([2])
    assert images.model_sizes_px[0] == images.model_sizes_px[1]  # one model grid for both
    batch = build_batch(backbone, images, [sample], 0)
    steps = greedy_steps(
        SemanticVLM(backbone).eval(), batch, 10, stop_ids=(), pad_id=backbone.tokenizer.pad_token_id
    )
    ours = [s[0] for s in steps]
    label_before, label_after = prompts.pair_labels
    text = backbone.chat_prompt(
        sample.system, label_before + BLOCK + label_after + BLOCK + sample.user_text
    )
    inputs = backbone.processor(text=[text], images=[BEFORE, AFTER], return_tensors="pt")
    assert torch.equal(inputs["input_ids"], batch.input_ids)  # same prompt, same image slots
    assert int((batch.input_ids == backbone.image_token_id).sum()) == sum(images.num_image_tokens)
    with torch.no_grad():
        out = backbone.model.generate(
            **inputs, max_new_tokens=10, min_new_tokens=10, do_sample=False
        )
    assert ours == out[0, inputs["input_ids"].shape[1] :].tolist()


def test_swapping_the_two_images_changes_the_library_logits(qwen3_dir):
    """Order matters to the model (before first): a sanity check that both images are used."""
    backbone = _backbone("qwen3-vl", qwen3_dir)
    prompts = load_prompt_set("qwen3-vl", "zero_shot")
    sample = prompt_sample(backbone, prompts, Task.CHANGE_CAPTION, to_prompter=False)
    vlm = SemanticVLM(backbone).eval()

    def logits(pair):
        batch = build_batch(backbone, backbone.preprocess(pair).grouped([2]), [sample], 0)
        with torch.no_grad():
            return vlm.prefill(batch, backbone.new_cache())[0]

    assert not torch.allclose(logits([BEFORE, AFTER]), logits([AFTER, BEFORE]), atol=1e-5)


@pytest.fixture(scope="module", params=["qwen2.5-vl", "qwen3-vl"])
def engine(request, qwen3_dir) -> Engine:
    cfg = EngineConfig(
        backbone=request.param,
        model_path=_model_dir(request.param, qwen3_dir),
        device="cpu",
        generation=GenerationConfig(max_new_tokens=8),
    )
    return Engine.from_config(cfg)


@pytest.mark.parametrize(
    "task, question",
    [(Task.CHANGE_CAPTION, None), (Task.CHANGE_GROUND, "new building"), (Task.CHANGE_ASK, "Why?")],
)
def test_change_tasks_generate_and_parse(engine, task, question):
    answer = engine.run(AFTER, task, question, before=BEFORE)
    assert answer.task is task and answer.image_size_px == (500, 333)
    assert 0 < answer.timing.new_tokens <= 8 and engine.prompts.mode == "zero_shot"


def test_change_ground_bbox_2d_becomes_after_crop_pixels(engine, monkeypatch):
    bb = engine.vlm.backbone
    model_w, model_h = bb.preprocess([AFTER]).model_sizes_px[0]
    if engine.config.backbone == "qwen3-vl":  # relative 0-1000 grid
        box = [100, 200, 500, 600]
        expected = (50.0, 66.6, 250.0, 199.8)
    else:  # pixels of the resized image
        box = [round(f * s) for f, s in zip((0.1, 0.2, 0.5, 0.6), (model_w, model_h) * 2)]
        sx, sy = 500 / model_w, 333 / model_h
        expected = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
    make_model_say(engine, monkeypatch, json.dumps([{"bbox_2d": box, "label": "new building"}]))
    [found] = engine.run(AFTER, Task.CHANGE_GROUND, "new building", before=BEFORE).boxes_px
    assert found.xyxy == pytest.approx(expected, abs=1e-6) and found.label == "new building"
