"""Training checkpoints: the trained weights plus everything needed to resume exactly.

A checkpoint directory (``<output_dir>/checkpoints/step-0000200``) holds::

    adapter/            engine.model.adapter.save_adapter: prompter, projector, experts, LoRA
    base/llm, base/vision   only when base weights train (groups ``llm`` / ``vision``): the
                        ``paper`` backbone layout, loadable as ``EngineConfig.model_path``
    trainer_state.pt    optimizer, LR scheduler, torch/numpy/python RNG states, step
    meta.json           step, trained groups, loss at that step

It is written into a hidden temporary directory and renamed into place when complete, so a
crash mid-write never leaves a half checkpoint under the final name; :func:`latest_checkpoint`
only considers complete ones. The base is saved with the original Hugging Face key names
(expert wrappers and LoRA layers are unwrapped), so ``from_pretrained`` reads it unchanged.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from engine.atomic import atomic_directory
from engine.errors import ConfigError, WeightsNotFoundError
from engine.model.adapter import ADAPTER_WEIGHTS, save_adapter

__all__ = [
    "BASE_GROUPS",
    "latest_checkpoint",
    "load_checkpoint",
    "load_partial_adapter",
    "prune_checkpoints",
    "save_base",
    "save_checkpoint",
]

BASE_GROUPS = ("llm", "vision")  # groups whose weights live in the base model, not the adapter
STATE_FILE = "trainer_state.pt"
META_FILE = "meta.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def _base_state(model: torch.nn.Module, tied: bool) -> dict[str, torch.Tensor]:
    """``model``'s state dict under its original names: expert wrappers and LoRA removed."""
    state = {}
    for name, tensor in model.state_dict().items():
        if "lora_" in name or ".mlp.experts." in name:
            continue
        name = name.replace(".mlp.mlp.", ".mlp.").replace(".base_layer.", ".")
        if tied and name == "lm_head.weight":
            continue  # tied to the input embeddings; from_pretrained ties it again
        state[name] = tensor
    return state


def save_base(vlm, out_dir: Path, dtype: torch.dtype | None = None) -> Path:
    """Write the ``paper`` base of ``vlm`` (``llm/`` + ``vision/``, with tokenizer and image
    processor) to ``out_dir``; ``dtype`` (e.g. float16) shrinks the files."""
    from safetensors.torch import save_file

    bb = vlm.backbone
    if bb.name != "paper":
        raise ConfigError(
            f"saving trained base weights is supported for backbone 'paper', not {bb.name!r}; "
            "train LoRA ('lora') instead of 'llm'/'vision' for this backbone"
        )
    out_dir = Path(out_dir)
    parts = (
        ("llm", bb.llm, bool(bb.llm.config.tie_word_embeddings), bb.tokenizer),
        ("vision", bb.vision, False, bb.image_processor),
    )
    for name, model, tied, extra in parts:
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        state = {
            k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v)
            .detach()
            .to("cpu")
            .contiguous()
            for k, v in _base_state(model, tied).items()
        }
        model.config.save_pretrained(folder)
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
        extra.save_pretrained(str(folder))
    return out_dir


def _rng_state() -> dict:
    return {
        "torch": torch.random.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def _set_rng_state(state: dict) -> None:
    torch.random.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(
    final: Path, vlm, optimizer, scheduler, step: int, groups: tuple[str, ...], meta: dict
) -> Path:
    """Write a complete checkpoint for optimizer step ``step`` atomically to ``final``."""
    with atomic_directory(final) as tmp:
        if vlm.prompter is not None:
            save_adapter(vlm, tmp / "adapter")
        if any(g in BASE_GROUPS for g in groups):
            save_base(vlm, tmp / "base")
        state = {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_state(),
            "groups": list(groups),
        }
        torch.save(state, tmp / STATE_FILE)
        (tmp / META_FILE).write_text(
            json.dumps({"step": step, "groups": list(groups), **meta}, indent=2), encoding="utf-8"
        )
    return Path(final)


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step under ``checkpoints_dir``, or None."""
    if not checkpoints_dir.is_dir():
        return None
    found = [
        (int(m.group(1)), p)
        for p in checkpoints_dir.iterdir()
        if (m := _STEP_DIR.match(p.name)) and (p / STATE_FILE).is_file()
    ]
    return max(found)[1] if found else None


def prune_checkpoints(checkpoints_dir: Path, keep: int) -> None:
    """Delete all but the ``keep`` most recent complete checkpoints."""
    found = sorted(
        (int(m.group(1)), p)
        for p in checkpoints_dir.iterdir()
        if (m := _STEP_DIR.match(p.name)) and (p / STATE_FILE).is_file()
    )
    for _, path in found[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def _load_base_weights(vlm, base_dir: Path) -> None:
    """Copy the saved ``base/llm`` and ``base/vision`` weights into ``vlm``'s backbone."""
    from safetensors.torch import load_file

    bb = vlm.backbone
    for name, model, tied in (
        ("llm", bb.llm, bool(bb.llm.config.tie_word_embeddings)),
        ("vision", bb.vision, False),
    ):
        stored = load_file(str(base_dir / name / "model.safetensors"))
        current = _base_state(model, tied)
        missing = sorted(set(current) - set(stored))
        if missing:
            raise ConfigError(f"checkpoint base {base_dir / name} lacks weights {missing[:5]}")
        with torch.no_grad():
            for key, target in current.items():
                target.copy_(stored[key].to(dtype=target.dtype, device=target.device))


def load_checkpoint(path: Path, vlm, optimizer, scheduler) -> int:
    """Restore weights, optimizer, scheduler and RNG states from ``path``; returns its step."""
    from engine.model.adapter import load_adapter_weights

    path = Path(path)
    if not (path / STATE_FILE).is_file():
        raise WeightsNotFoundError(f"{path} is not a complete training checkpoint")
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)
    if (path / "base").is_dir():
        _load_base_weights(vlm, path / "base")
    if (path / "adapter").is_dir():
        load_adapter_weights(vlm, path / "adapter")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return int(state["step"])


def load_partial_adapter(vlm, adapter_dir: Path) -> list[str]:
    """Initialise ``vlm``'s adapter modules from ``adapter_dir`` (e.g. stage 1 -> stage 2).

    Every stored weight must exist in ``vlm`` with the same shape; weights ``vlm`` has but the
    file lacks (e.g. LoRA, new in stage 2) keep their fresh init. Returns the names loaded.
    """
    from safetensors.torch import load_file

    from engine.model.adapter import adapter_state_dict, check_base, read_manifest

    manifest = read_manifest(adapter_dir)
    check_base(manifest, vlm.backbone)
    stored = load_file(str(Path(adapter_dir) / ADAPTER_WEIGHTS))
    current = adapter_state_dict(vlm)
    extra = sorted(set(stored) - set(current))
    if extra:
        raise ConfigError(
            f"init adapter {str(adapter_dir)!r} has weights this model lacks: {extra[:5]}; "
            "use the same prompter/experts settings as the run that wrote it"
        )
    with torch.no_grad():
        for name, tensor in stored.items():
            target = current[name]
            if target.shape != tensor.shape:
                raise ConfigError(
                    f"init adapter weight {name}: shape {tuple(tensor.shape)} != model "
                    f"{tuple(target.shape)}; use the same prompter/experts settings"
                )
            target.copy_(tensor.to(device=target.device, dtype=target.dtype))
    return sorted(stored)
