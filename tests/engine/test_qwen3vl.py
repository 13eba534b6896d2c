"""The ``qwen3-vl`` backbone on tiny random Qwen3-VL models (dense and MoE) built here.

Covers: every task generates and parses; our greedy loop gives exactly ``model.generate``'s
tokens (which needs the DeepStack features in the prefill); the processor's resize to multiples
of 32 is what the boxes are mapped with; ``bbox_2d`` on the 0-1000 grid lands in crop pixels on
a non-square crop; the region box is written on the same grid; retrieved descriptions reach the
prompt. The CUDA test (NF4) is marked ``gpu``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine import Engine, EngineConfig, GenerationConfig
from engine.errors import ConfigError
from engine.generation import generate, greedy_steps
from engine.model import Sample, SemanticVLM, build_batch, load_backbone, resolve_placement
from engine.types import Answer, Evidence, Task
from tests.engine.tiny import (  # noqa: F401
    INIT_RANGE,
    QWEN_SPECIAL_TOKENS,
    cached_tiny_model_dir,
    make_model_say,
    make_tiny_tokenizer,
    one_torch_thread,
    random_image,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Qwen3-VL's chat template reduced to string contents: unlike Qwen2.5's, no default system turn.
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
IMAGE = random_image(333, 500)  # non-square crop: width 500, height 333
MAX_PIXELS = 128 * 128  # the tiny processor resizes a 500 x 333 crop down
REQUESTS = {
    Task.ASK: {"question": "How many storage tanks are there?"},
    Task.CAPTION: {},
    Task.GROUND: {"question": "storage tank"},
    Task.CLASSIFY: {"labels": ["harbor", "farmland", "airport"]},
    Task.REGION: {"region_px": (50, 40, 300, 200), "question": "What is here?"},
}


FAMILIES = {  # model_type -> transformers class prefix
    "qwen3_vl": "Qwen3VL",
    "qwen3_vl_moe": "Qwen3VLMoe",
    "qwen3_5": "Qwen3_5",
    "qwen3_5_moe": "Qwen3_5Moe",
}


def make_tiny_qwen3vl_model_dir(path: Path, model_type: str = "qwen3_vl") -> Path:
    """Save a tiny Qwen3-VL (4 ViT blocks 32 wide with DeepStack after blocks 0 and 2, 4 decoder
    layers 64 wide) with its processor (patch 16, merge 2). ``qwen3_vl_moe``: 4 experts, top 2;
    ``qwen3_5``: Qwen3.5, no DeepStack, 3 Gated DeltaNet layers then 1 full-attention layer;
    ``qwen3_5_moe``: both."""
    import transformers
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    tokenizer = make_tiny_tokenizer()
    tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 4096,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5e6,
            "mrope_section": [4, 2, 2],
            "mrope_interleaved": True,
        },
        "pad_token_id": ids["<|endoftext|>"],
        "initializer_range": INIT_RANGE,
    }
    vision = {
        "depth": 4,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": 64,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "num_position_embeddings": 64,
        "deepstack_visual_indexes": [0, 2],
    }
    if model_type in ("qwen3_vl_moe", "qwen3_5_moe"):
        text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32)
    if model_type == "qwen3_5_moe":
        text.update(shared_expert_intermediate_size=32)
    if model_type in ("qwen3_5", "qwen3_5_moe"):
        del vision["deepstack_visual_indexes"]
        text["rope_parameters"]["partial_rotary_factor"] = 1.0
        text.update(
            linear_key_head_dim=16,
            linear_value_head_dim=16,
            linear_num_key_heads=2,
            linear_num_value_heads=4,
        )
    prefix = FAMILIES[model_type]
    config = getattr(transformers, f"{prefix}Config")(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    getattr(transformers, f"{prefix}ForConditionalGeneration")(config).save_pretrained(path)
    size = {"shortest_edge": 32 * 32, "longest_edge": MAX_PIXELS}
    Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(
            size=size, patch_size=16, merge_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3
        ),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(size=size, patch_size=16, merge_size=2),
        chat_template=QWEN3_CHAT_TEMPLATE,
    ).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_tiny_qwen3vl_model_dir(tmp_path_factory.mktemp("qwen3vl"))


@pytest.fixture(scope="module")
def engine(model_dir) -> Engine:
    cfg = EngineConfig(
        backbone="qwen3-vl",
        model_path=model_dir,
        device="cpu",
        generation=GenerationConfig(max_new_tokens=16),
    )
    return Engine.from_config(cfg)


def _backbone(model_dir: Path):
    cfg = EngineConfig(backbone="qwen3-vl", model_path=model_dir, device="cpu")
    return load_backbone(cfg, resolve_placement("cpu", cfg.quant))


# --- generation -----------------------------------------------------------------------------------
@pytest.mark.parametrize("task", [t for t in Task if not t.is_change])  # change: test_change.py
def test_every_task_runs_and_parses(engine, task):
    answer = engine.run(IMAGE, task, **REQUESTS[task])
    assert isinstance(answer, Answer) and answer.task is task
    assert answer.image_size_px == (500, 333)
    assert answer.model.startswith("qwen3-vl:") and answer.adapter is None
    assert engine.prompts.mode == "zero_shot" and engine.prompts.box_format.name == "qwen3-vl"
    assert 0 < answer.timing.new_tokens <= 16
    if task is not Task.GROUND:
        assert answer.boxes_px == ()
    if task is not Task.CLASSIFY:
        assert answer.label is None


def _greedy_equals_generate(backbone, image, new_tokens: int = 12) -> None:
    vlm = SemanticVLM(backbone).eval()
    sample = Sample(user_text="Describe this image.", query_text="Describe this image.")
    batch = build_batch(backbone, backbone.preprocess([image]), [sample], 0)
    ours = [
        s[0]
        for s in greedy_steps(
            vlm, batch, new_tokens, stop_ids=(), pad_id=backbone.tokenizer.pad_token_id
        )
    ]
    text = backbone.chat_prompt(
        None, "<|vision_start|><|image_pad|><|vision_end|>Describe this image."
    )
    inputs = backbone.processor(text=[text], images=[image], return_tensors="pt")
    assert torch.equal(inputs["input_ids"], batch.input_ids)  # same prompt, same image slots
    with torch.no_grad():
        out = backbone.model.generate(
            **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False
        )
    assert ours == out[0, inputs["input_ids"].shape[1] :].tolist()


def test_greedy_loop_matches_the_library_generate(model_dir):
    """Our KV-cached loop (DeepStack in the prefill, M-RoPE positions) == model.generate."""
    backbone = _backbone(model_dir)
    encoded = backbone.encode_image(backbone.preprocess([IMAGE]), need_levels=False)
    assert len(encoded.deepstack) == 2  # the features the LLM adds after layers 0 and 1
    _greedy_equals_generate(backbone, IMAGE)


def test_logits_equal_the_stock_forward_and_need_the_deepstack_features(model_dir):
    """inputs_embeds + DeepStack + our positions == the library's own forward, bit for bit;
    leaving DeepStack out changes them (so the equality above is not vacuous)."""
    backbone = _backbone(model_dir)
    vlm = SemanticVLM(backbone).eval()
    sample = Sample(user_text="Where are the tanks?", query_text="Where are the tanks?")
    batch = build_batch(backbone, backbone.preprocess([IMAGE]), [sample], 0)
    text = backbone.chat_prompt(
        None, "<|vision_start|><|image_pad|><|vision_end|>" + sample.user_text
    )
    reference = backbone.processor(text=[text], images=[IMAGE], return_tensors="pt")
    with torch.no_grad():
        ours = vlm(batch).logits
        stock = backbone.model(**reference).logits
        embeds, _ = vlm.embed(batch)
        positions = backbone.position_ids(batch.input_ids, batch.attention_mask, batch.images)
        without = backbone.lm_forward(embeds, batch.attention_mask, positions).logits
    assert torch.equal(ours, stock)
    assert not torch.allclose(without, stock)


@pytest.mark.parametrize("model_type", ["qwen3_vl_moe", "qwen3_5", "qwen3_5_moe"])
def test_moe_and_qwen35_load_and_match_the_library_generate(tmp_path, model_type):
    backbone = _backbone(make_tiny_qwen3vl_model_dir(tmp_path, model_type))
    expected = f"{FAMILIES[model_type]}ForConditionalGeneration"
    assert type(backbone.model).__name__ == expected
    _greedy_equals_generate(backbone, random_image(200, 120, seed=3), new_tokens=8)


def test_the_prompt_asks_qwen35_for_no_thinking_block(model_dir, monkeypatch):
    """With Qwen3's switch in the template, the generation prompt closes an empty think block."""
    backbone = _backbone(model_dir)
    switch = (
        "{%- if add_generation_prompt and enable_thinking is defined and enable_thinking is false"
        " %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    )
    monkeypatch.setattr(backbone.tokenizer, "chat_template", QWEN3_CHAT_TEMPLATE + switch)
    prompt = backbone.chat_prompt(None, "Describe.")
    assert prompt == "<|im_start|>user\nDescribe.<|im_end|>\n<|im_start|>assistant\n" + (
        "<think>\n\n</think>\n\n"
    )


def test_a_checkpoint_of_another_family_is_a_clear_error():
    with pytest.raises(ConfigError, match="'qwen2_5_vl' checkpoint.*--backbone qwen2.5-vl"):
        _backbone(cached_tiny_model_dir("qwen2.5-vl"))


def test_qwen35_left_padded_rows_match_single_requests(tmp_path):
    """Gated DeltaNet layers carry a recurrent state: left padding must not leak into it."""
    backbone = _backbone(make_tiny_qwen3vl_model_dir(tmp_path, "qwen3_5"))
    vlm = SemanticVLM(backbone).eval()
    images = [random_image(333, 500, seed=5), random_image(120, 200, seed=6)]
    samples = [Sample(user_text="Describe.", query_text="Describe.")] * 2
    pad = backbone.tokenizer.pad_token_id

    def run(imgs, smps):
        batch = build_batch(backbone, backbone.preprocess(imgs), smps, 0)
        return generate(vlm, batch, 8, stop_ids=(), pad_id=pad).token_ids

    joint = run(images, samples)
    assert joint == tuple(run([im], [s])[0] for im, s in zip(images, samples))


def test_batched_generation_matches_single_requests(engine):
    images = [random_image(333, 500, seed=5), random_image(120, 200, seed=6)]
    batch = engine.run_batch(images, Task.CAPTION)
    single = [engine.run(im, Task.CAPTION) for im in images]
    assert [a.text for a in batch] == [a.text for a in single]


# --- resize and boxes -------------------------------------------------------------------------------
def test_model_size_is_the_processors_resize_in_multiples_of_32(engine):
    bb = engine.vlm.backbone
    images = bb.preprocess([IMAGE, random_image(97, 413, seed=2)])
    for i, image in enumerate((IMAGE, random_image(97, 413, seed=2))):
        out = bb.processor.image_processor(images=[image], return_tensors="pt")
        _, grid_h, grid_w = out["image_grid_thw"][0].tolist()
        assert images.model_sizes_px[i] == (grid_w * 16, grid_h * 16)
        assert all(side % 32 == 0 for side in images.model_sizes_px[i])
        assert images.num_image_tokens[i] == grid_h * grid_w // 4
    assert images.model_sizes_px[0] != (500, 333)  # resized, and not to the crop's aspect


def _say(engine: Engine, monkeypatch, text: str) -> None:
    make_model_say(engine, monkeypatch, text)


def test_bbox_2d_on_the_1000_grid_becomes_crop_pixels_on_a_non_square_crop(engine, monkeypatch):
    """0-1000 relative to the image, whatever the resize: x / 1000 * 500, y / 1000 * 333."""
    text = json.dumps([{"bbox_2d": [100, 200, 500, 600], "label": "storage tank"}])
    _say(engine, monkeypatch, text)
    answer = engine.run(IMAGE, Task.GROUND, question="storage tank")
    assert answer.text == text
    [found] = answer.boxes_px
    assert found.xyxy == pytest.approx((50.0, 66.6, 250.0, 199.8), abs=1e-6)
    assert found.label == "storage tank"


def test_the_region_is_written_on_the_1000_grid(engine, monkeypatch):
    seen = []
    monkeypatch.setattr(engine, "_batch", lambda images, samples: seen.extend(samples) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        engine.run(IMAGE, Task.REGION, region_px=(50, 40, 300, 200), question="What is here?")
    # 50/500, 40/333, 300/500, 200/333 of 1000, rounded
    assert "[100, 120, 600, 601]" in seen[0].user_text


class _Descriptions:
    def retrieve_for_image(self, image, k):
        return [Evidence(text="A harbor with oil storage tanks.", score=0.9, source="kb:1")][:k]


def test_retrieved_descriptions_go_into_the_prompt(engine, monkeypatch):
    monkeypatch.setattr(engine, "retriever", _Descriptions())
    seen = []
    monkeypatch.setattr(engine, "_batch", lambda images, samples: seen.extend(samples) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        engine.run(IMAGE, Task.CAPTION)
    assert "- A harbor with oil storage tanks.\n" in seen[0].user_text
    assert seen[0].semantic_texts == ()  # zero-shot: text, not the prompter


# --- CUDA ------------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_nf4_on_cuda_runs_every_task(model_dir):
    import bitsandbytes as bnb

    cfg = EngineConfig(
        backbone="qwen3-vl",
        model_path=model_dir,
        device="cuda",
        generation=GenerationConfig(max_new_tokens=8),
    )
    engine = Engine.from_config(cfg)
    assert engine.placement.quantize
    decoder = engine.vlm.backbone.decoder
    assert isinstance(decoder.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    assert not isinstance(engine.vlm.backbone.model.lm_head, bnb.nn.Linear4bit)
    for task in (t for t in Task if not t.is_change):
        assert engine.run(IMAGE, task, **REQUESTS[task]).timing.new_tokens > 0
