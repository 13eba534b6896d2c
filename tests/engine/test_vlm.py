"""The composed VLM on tiny random backbones: no-op adapter, M-RoPE, roles, gradients, labels."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from engine.config import EngineConfig, ExpertConfig, LoraConfig, PrompterConfig
from engine.errors import EngineError
from engine.model import (
    IGNORE_INDEX,
    IMAGE,
    TEXT,
    Sample,
    SemanticVLM,
    build_batch,
    load_backbone,
    resolve_placement,
)
from engine.model.experts import ExpertMLP, attach_experts
from engine.model.lora import attach_lora, lora_parameters
from engine.model.prompter import MultiLevelVisualPrompter
from engine.model.roles import TokenRoles, semantic_role
from tests.engine.tiny import cached_tiny_model_dir, one_torch_thread, random_image  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BACKBONES = ("paper", "qwen2.5-vl")
PROMPTER = PrompterConfig(num_tokens=4)
EXPERTS = ExpertConfig(rank=8)
LORA = LoraConfig(rank=4, alpha=8, dropout=0.0)


def _backbone(name: str):
    cfg = EngineConfig(backbone=name, model_path=cached_tiny_model_dir(name), device="cpu")
    return load_backbone(cfg, resolve_placement("cpu", cfg.quant))


def _sample(
    answer: str | None = None, texts=("A harbor with boats.", "Storage tanks near water.")
) -> Sample:
    return Sample(
        user_text="Where are the storage tanks?",
        query_text="Where are the storage tanks?",
        semantic_texts=texts,
        answer=answer,
    )


def _batch(vlm: SemanticVLM, images=None, samples=None):
    images = images if images is not None else [random_image(333, 500)]
    samples = samples or [_sample() for _ in images]
    return build_batch(
        vlm.backbone, vlm.backbone.preprocess(images), samples, vlm.num_semantic_tokens
    )


def test_zero_shot_qwen_path_matches_the_stock_model_forward():
    """inputs_embeds + our get_rope_index positions == the library's own forward, bit for bit."""
    backbone = _backbone("qwen2.5-vl")
    vlm = SemanticVLM(backbone).eval()
    image = random_image(333, 500)
    batch = _batch(vlm, [image], [_sample(texts=())])
    text = backbone.chat_prompt(
        None, "<|vision_start|><|image_pad|><|vision_end|>" + _sample().user_text
    )
    reference = backbone.processor(text=[text], images=[image], return_tensors="pt")
    assert torch.equal(reference["input_ids"], batch.input_ids)
    with torch.no_grad():
        ours = vlm(batch).logits
        stock = backbone.model(**reference).logits
    assert torch.equal(ours, stock)


@pytest.mark.parametrize("name", BACKBONES)
def test_untrained_experts_and_lora_leave_logits_identical(name):
    backbone = _backbone(name)
    torch.manual_seed(0)
    prompter = MultiLevelVisualPrompter(PROMPTER, backbone.hidden_size, backbone.level_dims).eval()
    base = SemanticVLM(backbone, prompter=prompter).eval()
    batch = _batch(base)
    with torch.no_grad():
        before = base(batch).logits
    roles = TokenRoles()
    experts = attach_experts(
        backbone.decoder.layers, EXPERTS, backbone.hidden_size, 3, roles, torch.float32
    )
    attach_lora(backbone.decoder, LORA, torch.float32)
    adapted = SemanticVLM(backbone, prompter, experts, roles).eval()
    assert len(experts) == 2 and lora_parameters(backbone.decoder)
    with torch.no_grad():
        after = adapted(batch).logits
    assert torch.equal(before, after)


@pytest.mark.parametrize("name", BACKBONES)
def test_experts_in_every_fourth_decoder_layer_with_2Dr_weights(name):
    vlm = SemanticVLM.with_adapter_modules(_backbone(name), PROMPTER, EXPERTS, LORA, torch.float32)
    layers = vlm.backbone.decoder.layers
    assert len(layers) == 8
    assert [i for i, layer in enumerate(layers) if isinstance(layer.mlp, ExpertMLP)] == [3, 7]
    d, r = vlm.backbone.hidden_size, EXPERTS.rank
    for experts in vlm.experts.values():
        assert experts.down_weight.numel() + experts.up_weight.numel() == 3 * 2 * d * r
        assert experts.gate.bias is None
    # LoRA reached the linears inside the wrapped MLP, and not the vision tower.
    names = list(lora_parameters(vlm.backbone.decoder))
    assert any(".3.mlp.mlp.gate_proj.lora_A" in n for n in names)
    assert not any("lora_" in n for n, _ in vlm.backbone.vision_tower.named_parameters())


@pytest.mark.parametrize("name", BACKBONES)
def test_roles_mark_image_text_and_level_major_semantic_tokens(name):
    vlm = SemanticVLM.with_adapter_modules(
        _backbone(name), PROMPTER, EXPERTS, None, torch.float32
    ).eval()
    batch = _batch(vlm)
    with torch.no_grad():
        _, roles = vlm.embed(batch)
    ids = batch.input_ids
    assert torch.equal(roles == IMAGE, ids == vlm.backbone.image_token_id)
    semantic = roles[ids == vlm.backbone.semantic_token_id]
    expected = torch.tensor(
        [semantic_role(k) for k in range(3) for _ in range(PROMPTER.num_tokens)]
    )
    assert torch.equal(semantic, expected)
    other = (ids != vlm.backbone.image_token_id) & (ids != vlm.backbone.semantic_token_id)
    assert (roles[other] == TEXT).all()


def test_semantic_tokens_take_text_positions_after_the_image_grid():
    vlm = SemanticVLM.with_adapter_modules(
        _backbone("qwen2.5-vl"), PROMPTER, EXPERTS, None, torch.float32
    )
    batch = _batch(vlm)
    positions = vlm.backbone.position_ids(
        batch.input_ids, batch.attention_mask, batch.images
    )  # (3, 1, T)
    ids = batch.input_ids[0]
    image_pos = positions[:, 0, ids == vlm.backbone.image_token_id]
    sem_pos = positions[:, 0, ids == vlm.backbone.semantic_token_id]
    assert image_pos.shape[1] == batch.images.num_image_tokens[0]
    assert len(set(image_pos[1].tolist())) > 1  # real 2D grid (rows differ)
    assert torch.equal(sem_pos[0], sem_pos[1]) and torch.equal(
        sem_pos[1], sem_pos[2]
    )  # text: t = h = w
    start = int(image_pos.max()) + 1
    assert sem_pos[0].tolist() == list(range(start, start + vlm.num_semantic_tokens))


@pytest.mark.parametrize("name", BACKBONES)
def test_gradients_reach_adapter_modules_but_not_frozen_weights(name):
    vlm = SemanticVLM.with_adapter_modules(_backbone(name), PROMPTER, EXPERTS, LORA, torch.float32)
    groups = ["prompter", "experts", "lora"] + (["projector"] if name == "paper" else [])
    vlm.set_trainable(groups)
    vlm.train()
    loss = vlm(_batch(vlm, samples=[_sample(answer="tank: [120, 340, 560, 780]")])).loss
    assert torch.isfinite(loss)
    loss.backward()
    by_group = vlm.parameter_groups()
    trainable = {id(p) for g in groups for p in by_group[g]}
    for group in groups:
        params = by_group[group]
        assert params and all(p.grad is not None for p in params), group
        assert sum(float(p.grad.abs().sum()) for p in params) > 0, group
    frozen = [n for n, p in vlm.named_parameters() if id(p) not in trainable]
    assert frozen and all(
        p.grad is None and not p.requires_grad
        for n, p in vlm.named_parameters()
        if id(p) not in trainable
    )
    assert not any(p.requires_grad for p in by_group["vision"])


def test_unknown_parameter_group_is_an_error():
    vlm = SemanticVLM(_backbone("qwen2.5-vl"))
    with pytest.raises(EngineError, match="unknown parameter groups"):
        vlm.set_trainable(["prompter", "decoder"])


@pytest.mark.parametrize("name", BACKBONES)
def test_labels_cover_the_answer_and_turn_end_only(name):
    vlm = SemanticVLM.with_adapter_modules(_backbone(name), PROMPTER, EXPERTS, None, torch.float32)
    answer = "tank: [120, 340, 560, 780]"
    images = [random_image(200, 300, seed=1), random_image(333, 500, seed=2)]
    batch = _batch(vlm, images, [_sample(answer=answer), _sample(answer="yes")])
    tok = vlm.backbone.tokenizer
    for row, expected in zip(batch.labels, (answer, "yes")):
        kept = row[row != IGNORE_INDEX]
        assert tok.decode(kept) == expected + "<|im_end|>"
    assert (batch.labels[batch.attention_mask == 0] == IGNORE_INDEX).all()


@pytest.mark.parametrize("name", BACKBONES)
def test_left_padded_batch_matches_single_requests(name):
    vlm = SemanticVLM.with_adapter_modules(
        _backbone(name), PROMPTER, EXPERTS, None, torch.float32
    ).eval()
    images = [random_image(333, 500, seed=3), random_image(120, 90, seed=4)]
    samples = [_sample(), _sample(texts=())]
    with torch.no_grad():
        joint, _ = vlm.prefill(_batch(vlm, images, samples), vlm.backbone.new_cache())
        single = [
            vlm.prefill(_batch(vlm, [im], [s]), vlm.backbone.new_cache())[0]
            for im, s in zip(images, samples)
        ]
    torch.testing.assert_close(joint, torch.cat(single), rtol=1e-4, atol=1e-4)


def test_left_padded_positions_start_at_each_rows_first_real_token():
    from engine.model.backbones.base import left_padded_positions

    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6, [0] * 5 + [1]])
    assert left_padded_positions(mask).tolist() == [
        [0, 0, 0, 1, 2, 3],
        [0, 1, 2, 3, 4, 5],
        [0, 0, 0, 0, 0, 0],
    ]


def _paper_vlm() -> SemanticVLM:
    cfg = EngineConfig(backbone="paper", model_path=cached_tiny_model_dir("paper"), device="cpu")
    backbone = load_backbone(cfg, resolve_placement("cpu", cfg.quant))
    return SemanticVLM.with_adapter_modules(backbone, PROMPTER, EXPERTS, None, torch.float32).eval()


def _decode_step_and_full_forward(vlm: SemanticVLM, batch):
    """Prefill ``batch``, decode one more token per row from the cache, and run the longer batch
    in one full forward: (prefill logits, step logits, full-forward logits, longer batch)."""
    tokens = torch.tensor([7, 11][: len(batch)])
    longer = dataclasses.replace(
        batch,
        input_ids=torch.cat([batch.input_ids, tokens[:, None]], 1),
        attention_mask=torch.cat([batch.attention_mask, torch.ones_like(tokens[:, None])], 1),
    )
    with torch.no_grad():
        cache = vlm.backbone.new_cache()
        prefill, next_positions = vlm.prefill(batch, cache)
        step = vlm.decode_step(tokens, longer.attention_mask, next_positions, cache)
        full = vlm(longer).logits[:, -1]
    return prefill, step, full, longer


def test_paper_prefill_and_decode_step_match_a_full_forward():
    """Left-padded two-image batch with layout tables in use: the cached decode step (text at
    the next 1D position) equals a full forward over the longer prompt, and the batched prefill
    equals single requests."""
    vlm = _paper_vlm()
    with torch.no_grad():
        vlm.backbone.projector.row_embed.normal_(std=0.5)  # give the layout tables some content
        vlm.backbone.projector.col_embed.normal_(std=0.5)
    images = [random_image(333, 500, seed=3), random_image(120, 90, seed=4)]
    samples = [_sample(), _sample(texts=())]
    joint, step, full, _ = _decode_step_and_full_forward(vlm, _batch(vlm, images, samples))
    with torch.no_grad():
        single = [
            vlm.prefill(_batch(vlm, [im], [s]), vlm.backbone.new_cache())[0]
            for im, s in zip(images, samples)
        ]
    torch.testing.assert_close(step, full, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(joint, torch.cat(single), rtol=1e-4, atol=1e-4)
