"""Adapter files: prompter + projector + experts + LoRA as safetensors, plus adapter_config.json.

Layout of an adapter directory::

    adapter_config.json   format, backbone, base model name, base signature and its hash,
                          prompter / experts / LoRA configs
    adapter.safetensors   prompter.*, projector.*, experts.<layer>.*, lora.<decoder-relative name>

The base *signature* (layer counts and widths of the LLM and vision tower, and the level layers)
is what the weights depend on; loading onto a base with another signature is refused with a
message naming both. A different base model *name* alone (a moved directory) only logs a warning.

Older adapter configs may record settings of experiments that were removed (docs/lab.md): they
still load when such a key holds the setting's default, which is what this engine always does
(one RoPE position per image token, the LLM's causal mask: :data:`REMOVED_SETTING_DEFAULTS`);
any other value is refused, since this engine cannot run the model the adapter was trained as.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from engine.config import ExpertConfig, LoraConfig, PrompterConfig
from engine.errors import ConfigError, WeightsNotFoundError
from engine.model.lora import lora_parameters

__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "MANIFEST_KEYS",
    "REMOVED_SETTING_DEFAULTS",
    "AdapterManifest",
    "adapter_state_dict",
    "load_adapter_weights",
    "read_manifest",
    "save_adapter",
    "signature_hash",
]

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter.safetensors"
FORMAT = "geolens-adapter/1"
# weights added after the format was fixed whose zero value is an exact no-op (the paper
# projector's row/column embeddings): an adapter written without them loads with zeros
OPTIONAL_ZERO_WEIGHTS = frozenset({"projector.row_embed", "projector.col_embed"})
# the keys adapter_config.json has (AdapterManifest.to_json)
MANIFEST_KEYS = frozenset(
    ("format", "backbone", "base_model", "base_hash", "base_signature")
    + ("prompter", "experts", "lora")
)
# the defaults of removed settings that older configs record: what this engine always does
REMOVED_SETTING_DEFAULTS = frozenset({"sequence", "causal"})


def signature_hash(signature: dict) -> str:
    """Short stable hash of a base signature."""
    return hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class AdapterManifest:
    """The contents of ``adapter_config.json``."""

    backbone: str
    base_model: str
    base_signature: dict
    prompter: PrompterConfig
    experts: ExpertConfig
    lora: LoraConfig | None
    format: str = FORMAT

    @property
    def base_hash(self) -> str:
        return signature_hash(self.base_signature)

    @property
    def level_layers(self) -> tuple[int, ...]:
        return tuple(self.base_signature["level_layers"])

    def to_json(self) -> str:
        data = {
            "format": self.format,
            "backbone": self.backbone,
            "base_model": self.base_model,
            "base_hash": self.base_hash,
            "base_signature": self.base_signature,
            "prompter": asdict(self.prompter),
            "experts": asdict(self.experts),
            "lora": asdict(self.lora) if self.lora is not None else None,
        }
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str) -> AdapterManifest:
        try:
            data = json.loads(text)
            if data["format"] != FORMAT:
                raise ConfigError(
                    f"{where}: adapter format {data['format']!r}, this engine reads {FORMAT!r}"
                )
            experts = dict(data["experts"])
            if experts.get("layers") is not None:
                experts["layers"] = tuple(experts["layers"])
            lora = data["lora"]
            manifest = cls(
                backbone=data["backbone"],
                base_model=data["base_model"],
                base_signature=data["base_signature"],
                prompter=PrompterConfig(**data["prompter"]),
                experts=ExpertConfig(**experts),
                lora=LoraConfig(
                    **{
                        **lora,
                        "target_modules": tuple(lora["target_modules"]),
                        # adapters written before task routing: LoRA on every task
                        "tasks": tuple(lora["tasks"]) if lora.get("tasks") else None,
                    }
                )
                if lora
                else None,
            )
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ConfigError(f"{where} is not a valid GeoLens adapter config: {err!r}") from err
        _check_removed_settings(data, where)
        if data.get("base_hash") != manifest.base_hash:
            raise ConfigError(
                f"{where}: base_hash does not match base_signature (file edited by hand?)"
            )
        return manifest


def _check_removed_settings(data: dict, where: str) -> None:
    """Refuse an adapter whose config records a removed setting at another value than its
    default (keys this format does not have; see the module docstring)."""
    for key in sorted(set(data) - MANIFEST_KEYS):
        value = data[key]
        if value not in REMOVED_SETTING_DEFAULTS:
            raise ConfigError(
                f"{where}: the adapter was trained with {key}={value!r}, an option that was "
                "removed in favour of the default (one RoPE position per image token, the LLM's "
                "causal mask), the only model this engine runs; retrain the adapter"
            )


def adapter_state_dict(vlm) -> dict[str, torch.Tensor]:
    """All adapter weights of ``vlm`` under their file names (see module docstring)."""
    state: dict[str, torch.Tensor] = {}
    if vlm.prompter is not None:
        state.update({f"prompter.{k}": v for k, v in vlm.prompter.state_dict().items()})
    if vlm.backbone.projector is not None:
        state.update({f"projector.{k}": v for k, v in vlm.backbone.projector.state_dict().items()})
    state.update({f"experts.{k}": v for k, v in vlm.experts.state_dict().items()})
    state.update({f"lora.{k}": p.data for k, p in lora_parameters(vlm.backbone.decoder).items()})
    return state


def save_adapter(vlm, path: str | Path) -> Path:
    """Write ``vlm``'s adapter to the directory ``path`` (created); returns the path."""
    from safetensors.torch import save_file

    if vlm.prompter is None:
        raise ConfigError("this model has no adapter modules to save (it runs zero-shot)")
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    manifest = AdapterManifest(
        backbone=vlm.backbone.name,
        base_model=vlm.backbone.model_name,
        base_signature=vlm.backbone.signature(),
        prompter=vlm.prompter_config,
        experts=vlm.expert_config,
        lora=vlm.lora_config,
    )
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in adapter_state_dict(vlm).items()}
    save_file(tensors, str(root / ADAPTER_WEIGHTS), metadata={"format": FORMAT})
    (root / ADAPTER_CONFIG).write_text(manifest.to_json() + "\n", encoding="utf-8")
    return root


def read_manifest(path: str | Path) -> AdapterManifest:
    """Read ``adapter_config.json``; missing files raise :class:`WeightsNotFoundError`."""
    root = Path(path)
    config, weights = root / ADAPTER_CONFIG, root / ADAPTER_WEIGHTS
    for needed in (config, weights):
        if not needed.is_file():
            raise WeightsNotFoundError(
                f"adapter file {str(needed)!r} not found; an adapter directory holds "
                f"{ADAPTER_CONFIG} "
                f"and {ADAPTER_WEIGHTS} as written by the GeoLens training CLI (or drop --adapter "
                "to run the backbone zero-shot)"
            )
    return AdapterManifest.from_json(config.read_text(encoding="utf-8"), str(config))


def check_base(manifest: AdapterManifest, backbone) -> None:
    """Refuse an adapter trained on another base; warn when only the base name differs."""
    if manifest.backbone != backbone.name:
        raise ConfigError(
            f"adapter is for backbone {manifest.backbone!r}, not {backbone.name!r}; "
            f"pick --backbone {manifest.backbone}"
        )
    signature = backbone.signature()
    if signature_hash(signature) != manifest.base_hash:
        raise ConfigError(
            f"adapter was trained on base {manifest.base_model!r} (hash {manifest.base_hash}, "
            f"{manifest.base_signature}) but the loaded base {backbone.model_name!r} differs "
            f"(hash {signature_hash(signature)}, {signature}); load the matching base model"
        )
    if Path(manifest.base_model).name != Path(backbone.model_name).name:  # a moved base is fine
        logger.warning(
            "adapter base name %r differs from %r (same architecture; continuing)",
            manifest.base_model,
            backbone.model_name,
        )


def load_adapter_weights(vlm, path: str | Path) -> None:
    """Copy the adapter weights at ``path`` into ``vlm`` (built from the same manifest)."""
    from safetensors.torch import load_file

    stored = load_file(str(Path(path) / ADAPTER_WEIGHTS))
    expected = adapter_state_dict(vlm)
    missing, extra = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
    optional = [name for name in missing if name in OPTIONAL_ZERO_WEIGHTS]
    if optional:  # adapters saved before the projector had them: zeros are exactly the old model
        logger.info("adapter at %s has no %s; keeping them at zero", path, ", ".join(optional))
        for name in optional:
            expected.pop(name).zero_()
        missing = [name for name in missing if name not in OPTIONAL_ZERO_WEIGHTS]
    if missing or extra:
        raise ConfigError(
            f"adapter at {str(path)!r} does not fit this model: "
            f"missing {missing[:5]}, unexpected {extra[:5]}"
        )
    with torch.no_grad():
        for name, target in expected.items():
            if target.shape != stored[name].shape:
                raise ConfigError(
                    f"adapter weight {name}: shape {tuple(stored[name].shape)} "
                    f"!= model {tuple(target.shape)}"
                )
            target.copy_(stored[name].to(device=target.device, dtype=target.dtype))
