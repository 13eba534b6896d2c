"""Where and how weights are loaded: device, dtypes, 4-bit NF4 quantization, missing weights.

* Device ``auto`` picks CUDA when torch sees a GPU, else CPU; ``cuda`` without a GPU is an error.
* Quantization (``QuantConfig.mode``): NF4 with double quantization and bf16 compute through
  bitsandbytes' ``BitsAndBytesConfig``; on CPU the same code runs unquantized (or NF4 when
  ``mode='nf4'``; bitsandbytes >= 0.49 has CPU kernels).
* New modules (prompter, projector, experts) are bf16 on CUDA and fp32 on CPU.
* Names resolve to local directories or, on an online machine, through the normal
  ``from_pretrained`` cache; a missing model raises :class:`WeightsNotFoundError` naming the path
  and the command that fetches it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.config import QuantConfig
from engine.errors import ConfigError, MissingDependencyError, WeightsNotFoundError

__all__ = ["Placement", "bnb_config", "load_pretrained", "resolve_placement", "resolve_weights"]

logger = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass(frozen=True)
class Placement:
    """Device and dtypes for one engine instance."""

    device: torch.device
    quantize: bool  # load the LLM in 4-bit NF4
    quantize_vision: bool  # also the vision tower
    base_dtype: torch.dtype  # unquantized base weights
    compute_dtype: torch.dtype  # NF4 matmul compute dtype
    module_dtype: torch.dtype  # new modules: prompter, projector, experts
    double_quant: bool = True

    @property
    def device_map(self) -> dict[str, object]:
        return {"": self.device.index if self.device.type == "cuda" else "cpu"}


def resolve_placement(device: str, quant: QuantConfig) -> Placement:
    """Device ``auto|cuda|cpu`` and the quantization config -> a :class:`Placement`."""
    has_cuda = torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        raise ConfigError("device='cuda' but torch sees no CUDA GPU; use device='cpu' or 'auto'")
    on_cuda = device == "cuda" or (device == "auto" and has_cuda)
    torch_device = (
        torch.device("cuda", torch.cuda.current_device()) if on_cuda else torch.device("cpu")
    )
    quantize = quant.mode == "nf4" or (quant.mode == "auto" and on_cuda)
    wide = torch.bfloat16 if on_cuda else torch.float32
    compute = _DTYPES[quant.compute_dtype] if quant.compute_dtype else wide
    return Placement(
        device=torch_device,
        quantize=quantize,
        quantize_vision=quantize and quant.quantize_vision,
        base_dtype=wide,
        compute_dtype=compute,
        module_dtype=wide,
        double_quant=quant.double_quant,
    )


def bnb_config(placement: Placement, skip_modules: list[str]):
    """``BitsAndBytesConfig`` for 4-bit NF4; ``skip_modules`` stay unquantized (prefix match)."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise MissingDependencyError(
            "4-bit loading needs bitsandbytes: pip install bitsandbytes==0.50.2 "
            "(or set quant.mode='none')"
        ) from err
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=placement.double_quant,
        bnb_4bit_compute_dtype=placement.compute_dtype,
        llm_int8_skip_modules=skip_modules,
    )


def resolve_weights(name_or_path: str | Path, what: str, hub_hint: str | None = None) -> str:
    """A local directory (checked) or a hub name (resolved later by from_pretrained).

    ``what`` names the component for messages; ``hub_hint`` is the hub name to suggest.
    """
    path = Path(name_or_path).expanduser()
    text = str(name_or_path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise WeightsNotFoundError(
                f"{what} directory {str(path)!r} has no config.json; "
                f"it must be a saved Hugging Face model. {_how_to_get(hub_hint or text)}"
            )
        return str(path)
    if path.exists():
        raise WeightsNotFoundError(f"{what} path {text!r} is a file; pass the model directory")
    if not _HUB_ID.match(text):
        raise WeightsNotFoundError(
            f"{what} weights not found: no directory {text!r}. {_how_to_get(hub_hint)}"
        )
    return text


def load_pretrained(loader, name_or_path: str, what: str, **kwargs):
    """``loader.from_pretrained(name_or_path, **kwargs)`` with missing weights made explicit."""
    try:
        return loader.from_pretrained(name_or_path, **kwargs)
    except OSError as err:
        raise WeightsNotFoundError(
            f"{what} weights not found for {name_or_path!r} (not a local directory and not in "
            f"the Hugging Face cache; this machine may be offline). {_how_to_get(name_or_path)}"
        ) from err


def _how_to_get(hub_name: str | None) -> str:
    name = hub_name if hub_name and _HUB_ID.match(hub_name) else "<org>/<model>"
    return (
        f"To obtain them, on a machine with internet run: huggingface-cli download {name} "
        f"--local-dir /path/to/{name.split('/')[-1]} ; copy that directory here and pass it "
        f"as the model path (--model /path/to/{name.split('/')[-1]})."
    )
