"""CUDA path: NF4 placement and dtypes, a bf16 run, and out-of-memory handling (needs a GPU)."""

from __future__ import annotations

import pytest
import torch

from engine import (
    Engine,
    EngineConfig,
    ExpertConfig,
    GenerationConfig,
    ImageConfig,
    LoraConfig,
    PrompterConfig,
    QuantConfig,
)
from engine.errors import OutOfMemoryError
from engine.model import SemanticVLM, resolve_placement
from tests.engine.tiny import cached_tiny_model_dir, random_image

pytestmark = pytest.mark.gpu

IMAGE = random_image(333, 500)


def _engine(name: str, **kw) -> Engine:
    return Engine.from_config(
        EngineConfig(
            backbone=name,
            model_path=cached_tiny_model_dir(name),
            device="cuda",
            generation=GenerationConfig(max_new_tokens=8),
            **kw,
        )
    )


@pytest.mark.parametrize("name", ["qwen2.5-vl", "paper"])
def test_auto_quant_on_cuda_is_nf4_with_bf16_modules(name):
    import bitsandbytes as bnb

    engine = _engine(name)
    assert engine.placement.quantize and engine.placement.compute_dtype == torch.bfloat16
    backbone = engine.vlm.backbone
    linears = [m for m in backbone.decoder.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert linears and all(m.weight.device.type == "cuda" for m in linears)
    assert linears[0].weight.quant_type == "nf4" and linears[0].compute_dtype == torch.bfloat16
    assert all(
        p.dtype == torch.bfloat16
        for p in backbone.vision_tower.parameters()
        if p.is_floating_point()
    )
    if engine.vlm.prompter is not None:  # paper: new modules are bf16 on the GPU
        modules = [engine.vlm.prompter, engine.vlm.experts, backbone.projector]
        assert all(p.dtype == torch.bfloat16 and p.is_cuda for m in modules for p in m.parameters())
    answer = engine.run(IMAGE, "ground", question="storage tank")
    assert answer.timing.new_tokens > 0


def test_bf16_without_quantization_and_adapter_modules_on_cuda():
    cfg = EngineConfig(
        model_path=cached_tiny_model_dir("qwen2.5-vl"),
        device="cuda",
        quant=QuantConfig(mode="none"),
    )
    engine = Engine.from_config(cfg)
    assert all(p.dtype == torch.bfloat16 for p in engine.vlm.parameters())
    vlm = SemanticVLM.with_adapter_modules(
        engine.vlm.backbone,
        PrompterConfig(num_tokens=4),
        ExpertConfig(rank=8),
        LoraConfig(rank=4, alpha=8),
        resolve_placement("cuda", cfg.quant).module_dtype,
    )
    assert all(p.dtype == torch.bfloat16 and p.is_cuda for p in vlm.experts.parameters())
    assert Engine(cfg, vlm.eval(), engine.placement).run(IMAGE, "caption").timing.new_tokens > 0


def test_out_of_memory_retries_then_raises_a_clean_error_and_the_engine_survives():
    engine = _engine(
        "qwen2.5-vl", quant=QuantConfig(mode="none"), image=ImageConfig(max_pixels=2000 * 2000)
    )
    torch.cuda.synchronize()
    total = torch.cuda.get_device_properties(0).total_memory
    fraction = (torch.cuda.memory_allocated() + 2**20) / total  # room for ~1 MiB of activations
    torch.cuda.set_per_process_memory_fraction(fraction)
    try:
        with pytest.raises(OutOfMemoryError, match="out of GPU memory"):
            engine.run(random_image(2000, 2000), "caption")
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert engine.run(IMAGE, "caption").timing.new_tokens > 0
