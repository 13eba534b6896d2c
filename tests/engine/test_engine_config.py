"""EngineConfig and its nested configs: defaults, validation messages, derived values."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import (
    EngineConfig,
    ExpertConfig,
    GenerationConfig,
    ImageConfig,
    LoraConfig,
    PrompterConfig,
    QuantConfig,
    RetrievalConfig,
    default_level_layers,
)
from engine.errors import ConfigError


def test_defaults_resolve_per_backbone():
    qwen = EngineConfig()
    assert qwen.backbone == "qwen2.5-vl" and qwen.model_path == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert qwen.vision_path is None
    paper = EngineConfig(backbone="paper")
    assert paper.model_path == "Qwen/Qwen2.5-7B-Instruct"
    assert paper.vision_path == "google/siglip2-so400m-patch14-384"
    local = EngineConfig(backbone="paper", model_path="/models/geolens")
    assert local.vision_path is None  # the directory layout llm/ + vision/ applies


def test_documented_defaults_of_values_the_paper_lost():
    cfg = EngineConfig()
    assert cfg.prompter.num_tokens == 144 and cfg.prompter.width is None
    assert cfg.experts.rank == 64 and cfg.experts.every == 4
    assert (cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout) == (64, 128, 0.05)
    assert cfg.retrieval.top_k == 3
    assert cfg.quant.mode == "auto" and cfg.quant.double_quant


@pytest.mark.parametrize(
    "build,message",
    [
        (lambda: EngineConfig(backbone="llava"), "paper, qwen2.5-vl"),
        (lambda: EngineConfig(device="tpu"), "auto, cuda, cpu"),
        (lambda: EngineConfig(model_path=" "), "model_path"),
        (lambda: EngineConfig(vision_path="/x"), "only applies to backbone 'paper'"),
        (lambda: EngineConfig(level_layers=(0, 5)), "1-based"),
        (lambda: EngineConfig(prompter={"num_tokens": 4}), "must be a PrompterConfig"),
        (lambda: PrompterConfig(num_tokens=0), "prompter.num_tokens"),
        (lambda: PrompterConfig(width=100, num_heads=3), "divisible"),
        (lambda: ExpertConfig(rank=-1), "experts.rank"),
        (lambda: ExpertConfig(layers=(1, 1)), "duplicate"),
        (lambda: ExpertConfig(activation="relu6"), "gelu, silu, identity"),
        (lambda: LoraConfig(dropout=1.5), "lora.dropout"),
        (lambda: LoraConfig(target_modules=("qkv",)), "q_proj"),
        (lambda: QuantConfig(mode="int8"), "auto, nf4, none"),
        (lambda: QuantConfig(compute_dtype="fp8"), "bfloat16"),
        (lambda: RetrievalConfig(top_k=0), "retrieval.top_k"),
        (lambda: GenerationConfig(max_new_tokens=0), "max_new_tokens"),
        (lambda: ImageConfig(oom_retry_scale=1.0), "oom_retry_scale"),
        (lambda: ImageConfig(min_pixels=100, max_pixels=10), "min_pixels"),
    ],
)
def test_invalid_values_are_config_errors_naming_the_field(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_expert_layers_every_and_explicit():
    assert ExpertConfig().layer_indices(28) == (3, 7, 11, 15, 19, 23, 27)
    assert ExpertConfig(every=2).layer_indices(5) == (1, 3)
    assert ExpertConfig(layers=(9, 2)).layer_indices(10) == (2, 9)


def test_default_level_layers_are_thirds_of_the_encoder():
    assert default_level_layers(27) == (9, 18, 27)  # SigLIP so400m
    assert default_level_layers(32) == (11, 21, 32)  # Qwen2.5-VL ViT
    assert default_level_layers(3) == (1, 2, 3)
    with pytest.raises(ConfigError, match="too few"):
        default_level_layers(2)


def test_prompter_heads_divide_the_width():
    assert PrompterConfig().heads_for(3584) == 28
    assert PrompterConfig().heads_for(64) == 1
    assert 1000 % PrompterConfig().heads_for(1000) == 0


def test_to_dict_is_json_ready():
    import json

    cfg = EngineConfig(adapter_path=Path("/a"), retrieval=RetrievalConfig(kb_dir=Path("/kb")))
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["adapter_path"] == "/a" and data["retrieval"]["kb_dir"] == "/kb"
