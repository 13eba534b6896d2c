"""Placement decisions and a real 4-bit NF4 load of tiny models on CPU (bitsandbytes >= 0.49)."""

from __future__ import annotations

import pytest
import torch

from engine import (
    Engine,
    EngineConfig,
    ExpertConfig,
    GenerationConfig,
    LoraConfig,
    PrompterConfig,
    QuantConfig,
)
from engine.model import Sample, SemanticVLM, build_batch, resolve_placement
from engine.model.experts import ExpertMLP
from engine.model.loading import bnb_config
from tests.engine.tiny import cached_tiny_model_dir, one_torch_thread, random_image  # noqa: F401

bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_placement_on_cpu():
    plain = resolve_placement("cpu", QuantConfig())
    assert (
        not plain.quantize
        and plain.base_dtype == torch.float32
        and plain.module_dtype == torch.float32
    )
    nf4 = resolve_placement(
        "auto" if not torch.cuda.is_available() else "cpu", QuantConfig(mode="nf4")
    )
    assert nf4.quantize and nf4.compute_dtype == torch.float32 and not nf4.quantize_vision
    assert (
        resolve_placement("cpu", QuantConfig(mode="nf4", compute_dtype="bfloat16")).compute_dtype
        == torch.bfloat16
    )


def test_bnb_config_is_nf4_with_double_quant():
    cfg = bnb_config(
        resolve_placement("cpu", QuantConfig(mode="nf4", compute_dtype="bfloat16")), ["lm_head"]
    )
    assert cfg.load_in_4bit and cfg.bnb_4bit_quant_type == "nf4" and cfg.bnb_4bit_use_double_quant
    assert cfg.bnb_4bit_compute_dtype == torch.bfloat16 and cfg.llm_int8_skip_modules == ["lm_head"]


@pytest.mark.parametrize("name", ["qwen2.5-vl", "paper"])
def test_nf4_load_on_cpu_quantizes_the_llm_only(name):
    cfg = EngineConfig(
        backbone=name,
        model_path=cached_tiny_model_dir(name),
        device="cpu",
        quant=QuantConfig(mode="nf4"),
        generation=GenerationConfig(max_new_tokens=8),
    )
    engine = Engine.from_config(cfg)
    backbone = engine.vlm.backbone
    decoder_linears = [m for m in backbone.decoder.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(decoder_linears) == 8 * 7  # q, k, v, o, gate, up, down in each of 8 layers
    assert decoder_linears[0].weight.quant_type == "nf4"
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in backbone.vision_tower.modules())
    lm_head = backbone.model.lm_head if name == "qwen2.5-vl" else backbone.llm.lm_head
    assert not isinstance(lm_head, bnb.nn.Linear4bit)
    answer = engine.run(random_image(120, 160), "ask", question="What is here?")
    assert answer.timing.new_tokens > 0


def test_nf4_weights_are_the_checkpoint_weights_quantized():
    """Each 4-bit linear computes what the checkpoint's fp32 linear computes, up to NF4 error."""
    from safetensors.torch import load_file

    model_dir = cached_tiny_model_dir("qwen2.5-vl")
    cfg = EngineConfig(model_path=model_dir, device="cpu", quant=QuantConfig(mode="nf4"))
    decoder = Engine.from_config(cfg).vlm.backbone.decoder
    stored = load_file(str(model_dir / "model.safetensors"))
    for name in ("layers.0.self_attn.q_proj", "layers.5.mlp.down_proj"):
        layer = decoder.get_submodule(name)
        assert isinstance(layer, bnb.nn.Linear4bit)
        weight = stored[f"model.{name}.weight"]  # checkpoint key layout of Qwen2.5-VL
        x_in = torch.randn(4, weight.shape[1])
        with torch.no_grad():
            got, want = (
                layer(x_in),
                torch.nn.functional.linear(x_in, weight, stored.get(f"model.{name}.bias")),
            )
        similarity = torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0)
        assert 0.97 < similarity < 1.0, (name, float(similarity))  # close, but really quantized


def test_experts_and_lora_on_a_4bit_llm_train_on_cpu():
    cfg = EngineConfig(
        model_path=cached_tiny_model_dir("qwen2.5-vl"), device="cpu", quant=QuantConfig(mode="nf4")
    )
    placement = resolve_placement("cpu", cfg.quant)
    backbone = Engine.from_config(cfg).vlm.backbone
    model = SemanticVLM.with_adapter_modules(
        backbone,
        PrompterConfig(num_tokens=4),
        ExpertConfig(rank=8),
        LoraConfig(rank=4, alpha=8),
        placement.module_dtype,
    )
    layer = model.backbone.decoder.layers[3]
    assert isinstance(layer.mlp, ExpertMLP) and isinstance(
        layer.mlp.mlp.gate_proj.base_layer, bnb.nn.Linear4bit
    )
    model.set_trainable(["prompter", "experts", "lora"])
    sample = Sample(
        user_text="Describe.",
        query_text="Describe.",
        semantic_texts=("A harbor.",),
        answer="A harbor.",
    )
    batch = build_batch(
        model.backbone,
        model.backbone.preprocess([random_image(120, 160)]),
        [sample],
        model.num_semantic_tokens,
    )
    model.train()
    model(batch).loss.backward()
    assert all(p.grad is not None for p in model.parameter_groups()["lora"])
