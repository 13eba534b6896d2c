"""Adapter save/load: identical outputs after a round trip, refusal of a mismatched base."""

from __future__ import annotations

import json

import pytest
import torch

from engine import Engine, EngineConfig, ExpertConfig, GenerationConfig, LoraConfig, PrompterConfig
from engine.errors import ConfigError, WeightsNotFoundError
from engine.model import Sample, build_batch, resolve_placement
from engine.model.adapter import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    MANIFEST_KEYS,
    save_adapter,
)
from engine.model.build import new_trainable_vlm
from tests.engine.tiny import (  # noqa: F401
    cached_tiny_model_dir,
    make_tiny_paper_model_dir,
    one_torch_thread,
    random_image,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BACKBONES = ("paper", "qwen2.5-vl")
IMAGE = random_image(333, 500)


def _config(name: str, **kw) -> EngineConfig:
    return EngineConfig(
        backbone=name,
        model_path=kw.pop("model_path", cached_tiny_model_dir(name)),
        device="cpu",
        prompter=PrompterConfig(num_tokens=4, width=32),
        experts=ExpertConfig(rank=8, every=2),
        lora=LoraConfig(rank=4, alpha=8),
        level_layers=(1, 2) if name == "paper" else (2, 4),
        generation=GenerationConfig(max_new_tokens=12),
        **kw,
    )


def _trained(cfg: EngineConfig):
    """A VLM whose adapter weights all moved away from their (partly zero) initial values."""
    vlm = new_trainable_vlm(cfg, resolve_placement("cpu", cfg.quant))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for group in ("prompter", "projector", "experts", "lora"):
            for param in vlm.parameter_groups()[group]:
                param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    return vlm.eval()


def _logits(vlm) -> torch.Tensor:
    sample = Sample(
        user_text="Where are the tanks?",
        query_text="Where are the tanks?",
        semantic_texts=("A harbor.",),
    )
    batch = build_batch(
        vlm.backbone, vlm.backbone.preprocess([IMAGE]), [sample], vlm.num_semantic_tokens
    )
    with torch.no_grad():
        return vlm(batch).logits


@pytest.mark.parametrize("name", BACKBONES)
def test_round_trip_gives_identical_outputs(name, tmp_path):
    cfg = _config(name)
    trained = _trained(cfg)
    save_adapter(trained, tmp_path / "adapter")
    assert {p.name for p in (tmp_path / "adapter").iterdir()} == {ADAPTER_CONFIG, ADAPTER_WEIGHTS}
    loaded = Engine.from_config(_config(name, adapter_path=tmp_path / "adapter"))
    assert loaded.prompts.mode == "adapter" and loaded.adapter_name == str(tmp_path / "adapter")
    assert torch.equal(_logits(trained), _logits(loaded.vlm))
    original = Engine(cfg, trained, resolve_placement("cpu", cfg.quant))
    assert loaded.run(IMAGE, "caption").text == original.run(IMAGE, "caption").text


def test_manifest_records_base_and_module_configs(tmp_path):
    cfg = _config("qwen2.5-vl")
    save_adapter(_trained(cfg), tmp_path)
    manifest = json.loads((tmp_path / ADAPTER_CONFIG).read_text())
    assert manifest["backbone"] == "qwen2.5-vl" and manifest["base_model"] == str(cfg.model_path)
    assert manifest["base_signature"]["level_layers"] == [2, 4] and len(manifest["base_hash"]) == 16
    assert manifest["prompter"]["num_tokens"] == 4 and manifest["experts"]["every"] == 2
    assert manifest["lora"]["rank"] == 4


def test_adapter_architecture_comes_from_the_manifest(tmp_path):
    """Loading ignores the config's module fields: the weights define the architecture."""
    cfg = _config("paper")
    save_adapter(_trained(cfg), tmp_path)
    engine = Engine.from_config(
        EngineConfig(
            backbone="paper", model_path=cfg.model_path, device="cpu", adapter_path=tmp_path
        )
    )
    assert engine.vlm.prompter.num_tokens == 4 and engine.vlm.backbone.level_layers == (1, 2)
    assert sorted(engine.vlm.experts) == ["1", "3", "5", "7"]


def test_mismatched_base_is_refused(tmp_path):
    cfg = _config("paper")
    save_adapter(_trained(cfg), tmp_path / "adapter")
    other = make_tiny_paper_model_dir(tmp_path / "other-base", llm_layers=6)
    with pytest.raises(ConfigError, match="trained on base") as err:
        Engine.from_config(_config("paper", model_path=other, adapter_path=tmp_path / "adapter"))
    assert "num_hidden_layers': 8" in str(err.value) and "num_hidden_layers': 6" in str(err.value)


def test_adapter_for_another_backbone_is_refused(tmp_path):
    save_adapter(_trained(_config("paper")), tmp_path)
    with pytest.raises(ConfigError, match="for backbone 'paper'"):
        Engine.from_config(_config("qwen2.5-vl", adapter_path=tmp_path))


def test_missing_or_edited_adapter_files(tmp_path):
    with pytest.raises(WeightsNotFoundError, match=ADAPTER_CONFIG):
        Engine.from_config(_config("paper", adapter_path=tmp_path / "nothing"))
    save_adapter(_trained(_config("paper")), tmp_path / "a")
    path = tmp_path / "a" / ADAPTER_CONFIG
    data = json.loads(path.read_text())
    data["base_signature"]["llm"]["hidden_size"] = 128
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="edited by hand"):
        Engine.from_config(_config("paper", adapter_path=tmp_path / "a"))


def test_zero_shot_model_has_no_adapter_to_save(tmp_path):
    engine = Engine.from_config(
        EngineConfig(model_path=cached_tiny_model_dir("qwen2.5-vl"), device="cpu")
    )
    with pytest.raises(ConfigError, match="no adapter modules"):
        save_adapter(engine.vlm, tmp_path)


def test_adapter_saved_before_the_projector_grid_tables_loads_with_zero_tables(tmp_path):
    from safetensors.torch import load_file, save_file

    cfg = _config("paper")
    vlm = _trained(cfg)
    with torch.no_grad():  # the old projector: no row/column terms
        vlm.backbone.projector.row_embed.zero_()
        vlm.backbone.projector.col_embed.zero_()
    save_adapter(vlm, tmp_path / "old")
    weights = tmp_path / "old" / ADAPTER_WEIGHTS
    tensors = load_file(str(weights))
    del tensors["projector.row_embed"], tensors["projector.col_embed"]
    save_file(tensors, str(weights), metadata={"format": "geolens-adapter/1"})

    loaded = Engine.from_config(_config("paper", adapter_path=tmp_path / "old"))
    torch.testing.assert_close(_logits(loaded.vlm), _logits(vlm))
    tensors["prompter.unknown"] = torch.zeros(1)  # other gaps or extras are still refused
    save_file(tensors, str(weights), metadata={"format": "geolens-adapter/1"})
    with pytest.raises(ConfigError, match="does not fit"):
        Engine.from_config(_config("paper", adapter_path=tmp_path / "old"))


@pytest.fixture(scope="module")
def saved_paper_adapter(tmp_path_factory):
    """A trained paper adapter on disk and the logits of the model it came from."""
    trained = _trained(_config("paper"))
    with torch.no_grad():  # let the layout tables matter
        trained.backbone.projector.row_embed.normal_(std=0.5)
    path = save_adapter(trained, tmp_path_factory.mktemp("adapter") / "adapter")
    return path, _logits(trained)


def test_the_manifest_lists_exactly_its_keys(saved_paper_adapter):
    path, _ = saved_paper_adapter
    assert set(json.loads((path / ADAPTER_CONFIG).read_text())) == MANIFEST_KEYS


@pytest.mark.parametrize(
    "setting, default", [("image_positions", "sequence"), ("image_attention", "causal")]
)
def test_old_adapters_with_removed_settings_at_their_defaults_still_load(
    tmp_path, saved_paper_adapter, setting, default
):
    """Adapters written while these experiment settings existed record them; at the default
    (what every model now does) they load and give the same model."""
    path, expected = saved_paper_adapter
    old = tmp_path / "old"
    old.mkdir()
    (old / ADAPTER_WEIGHTS).write_bytes((path / ADAPTER_WEIGHTS).read_bytes())
    manifest = json.loads((path / ADAPTER_CONFIG).read_text())
    (old / ADAPTER_CONFIG).write_text(json.dumps({**manifest, setting: default}))
    loaded = Engine.from_config(_config("paper", adapter_path=old))
    torch.testing.assert_close(_logits(loaded.vlm), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "setting, value", [("image_positions", "shared"), ("image_attention", "bidirectional")]
)
def test_adapters_trained_with_a_removed_setting_are_refused(
    tmp_path, saved_paper_adapter, setting, value
):
    path, _ = saved_paper_adapter
    (tmp_path / ADAPTER_WEIGHTS).write_bytes((path / ADAPTER_WEIGHTS).read_bytes())
    manifest = json.loads((path / ADAPTER_CONFIG).read_text())
    (tmp_path / ADAPTER_CONFIG).write_text(json.dumps({**manifest, setting: value}))
    with pytest.raises(ConfigError) as err:
        Engine.from_config(_config("paper", adapter_path=tmp_path))
    message = str(err.value)
    assert f"{setting}={value!r}" in message and "removed in favour of the default" in message
    with pytest.raises(TypeError):  # and no config takes the option any more
        _config("paper", **{setting: value})
