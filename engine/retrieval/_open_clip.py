"""open_clip glue for :mod:`engine.retrieval.embedder`: models from names or config dicts, offline.

Architecture names are checked against open_clip's registry (``hf-hub:`` is refused: GeoLens
never downloads), checkpoints must be local files, random inits are seeded without disturbing
torch's global RNG, and weights get a content digest that names the embedding model.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from engine.errors import ConfigError, WeightsNotFoundError
from engine.retrieval._deps import import_torch

__all__ = [
    "check_arch",
    "existing_checkpoint",
    "jsonable",
    "mismatch_error",
    "model_from_config",
    "preprocess_cfg_for",
    "seeded",
    "tokenizer_for",
    "weights_digest",
]


def check_arch(open_clip: Any, arch: str) -> None:
    """Raise :class:`ConfigError` unless ``arch`` is a known open_clip name or ``local-dir:``."""
    if arch.startswith("hf-hub:"):
        raise ConfigError(
            f"{arch!r} would download from the Hugging Face hub, which GeoLens never does; "
            "download the checkpoint yourself and pass the architecture name plus --checkpoint PATH"
        )
    if arch.startswith("local-dir:"):
        return
    known = open_clip.list_models()
    if arch not in known:
        close = difflib.get_close_matches(arch, known, n=8, cutoff=0.5) or known[:8]
        raise ConfigError(
            f"unknown open_clip architecture {arch!r}; close names: {', '.join(close)} "
            f"(all {len(known)}: open_clip.list_models() in Python)"
        )


def existing_checkpoint(checkpoint: str | Path) -> Path:
    """``checkpoint`` as a Path to an existing file, else :class:`WeightsNotFoundError`."""
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(
            f"checkpoint file {path} not found; download it (e.g. RemoteCLIP-ViT-B-32.pt or "
            "RS5M_ViT-B-32.pt) and pass its path, or pass checkpoint=None / --checkpoint none "
            "for a random-init model (tests only)"
        )
    return path


def mismatch_error(path: Path, arch: str, exc: Exception) -> ConfigError:
    """The error for a checkpoint whose tensors do not fit the architecture."""
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    return ConfigError(
        f"checkpoint {path} does not fit {arch}: {first}; pick the architecture the checkpoint was "
        "trained with (RemoteCLIP-ViT-B-32.pt and RS5M_ViT-B-32.pt need ViT-B-32)"
    )


def model_from_config(open_clip: Any, model_cfg: dict, seed: int) -> Any:
    """A ``CLIP``/``CustomTextCLIP`` of an open_clip config dict, random init from ``seed``."""
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in model_cfg]
    if missing:
        raise ConfigError(
            f"open_clip model config lacks {missing}; it needs embed_dim, vision_cfg and text_cfg"
        )
    if "multimodal_cfg" in model_cfg:
        raise ConfigError(
            "CoCa configs (multimodal_cfg) are not supported for retrieval; use a CLIP config"
        )
    cfg = copy.deepcopy(model_cfg)
    custom_text = cfg.pop("custom_text", False) or "hf_model_name" in cfg["text_cfg"]
    model_class = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
    with seeded(seed):
        try:
            return model_class(**cfg)
        except TypeError as exc:
            raise ConfigError(f"open_clip rejected the model config: {exc}") from exc


def tokenizer_for(open_clip: Any, model_cfg: dict) -> Callable:
    """open_clip's bundled-BPE ``SimpleTokenizer``, or the HF tokenizer the config names."""
    text_cfg = model_cfg["text_cfg"]
    context_length = text_cfg.get("context_length", 77)
    kwargs = text_cfg.get("tokenizer_kwargs") or {}
    if text_cfg.get("hf_tokenizer_name"):
        return open_clip.tokenizer.HFTokenizer(
            text_cfg["hf_tokenizer_name"], context_length=context_length, **kwargs
        )
    return open_clip.SimpleTokenizer(context_length=context_length, **kwargs)


def preprocess_cfg_for(open_clip: Any, model: Any, overrides: dict | None) -> dict:
    """Eval preprocessing for the model's image size plus ``overrides``; also set on the model."""
    from dataclasses import asdict

    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    cfg = asdict(PreprocessCfg(size=model.visual.image_size))
    cfg = merge_preprocess_dict(
        cfg, {k: tuple(v) if isinstance(v, list) else v for k, v in (overrides or {}).items()}
    )
    open_clip.set_model_preprocess_cfg(model, cfg)
    return cfg


def weights_digest(model: Any) -> str:
    """sha256 over parameter names and bytes: tells two differently initialised models apart."""
    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """torch's global RNG seeded for a model init, restored afterwards."""
    torch = import_torch()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def jsonable(value: Any) -> Any:
    """``value`` with tuples turned into lists (JSON round-trips then compare equal)."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [jsonable(v) for v in value]
    return value
