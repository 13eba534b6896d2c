"""The demo model's base: a small SigLIP vision tower and a small Qwen2 LLM, built from configs.

:class:`DemoArch` holds the sizes; :func:`write_base_model` writes the directory layout the
``paper`` backbone loads (``<dir>/llm``: ``Qwen2ForCausalLM`` + tokenizer, ``<dir>/vision``:
``SiglipVisionModel`` + ``SiglipImageProcessor``) with freshly initialised weights. Training
then updates every part (``engine.train`` with the ``llm`` and ``vision`` groups) and
:func:`engine.training.checkpoint.save_base` writes the trained base in the same layout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from engine.errors import ConfigError

__all__ = ["DemoArch", "write_base_model"]


@dataclass(frozen=True)
class DemoArch:
    """Sizes of the demo base model (defaults: the shipped demo model)."""

    image_px: int = 128  # SigLIP input side; crops are resized to it
    patch_px: int = 16  # -> (128 / 16)^2 = 64 image tokens
    vision_width: int = 128
    vision_layers: int = 4
    vision_heads: int = 2
    llm_width: int = 128
    llm_layers: int = 4
    llm_heads: int = 4
    llm_kv_heads: int = 1
    llm_mlp: int = 352
    max_positions: int = 1024
    init_range: float = 0.02

    def __post_init__(self) -> None:
        if self.image_px % self.patch_px:
            raise ConfigError(f"image_px {self.image_px} must be a multiple of {self.patch_px}")
        for width, heads, what in (
            (self.vision_width, self.vision_heads, "vision"),
            (self.llm_width, self.llm_heads, "llm"),
        ):
            if width % heads:
                raise ConfigError(f"{what} width {width} is not divisible by {heads} heads")
        if self.llm_heads % self.llm_kv_heads:
            raise ConfigError(f"llm_heads {self.llm_heads} not divisible by {self.llm_kv_heads}")

    def to_json(self) -> dict:
        return asdict(self)


def write_base_model(arch: DemoArch, tokenizer, out_dir: str | Path, seed: int = 0) -> Path:
    """Write randomly initialised ``llm/`` and ``vision/`` for ``arch`` under ``out_dir``."""
    import torch
    from transformers import (
        Qwen2Config,
        Qwen2ForCausalLM,
        SiglipImageProcessor,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    root = Path(out_dir)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>")}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        llm = Qwen2ForCausalLM(
            Qwen2Config(
                vocab_size=len(tokenizer),
                hidden_size=arch.llm_width,
                intermediate_size=arch.llm_mlp,
                num_hidden_layers=arch.llm_layers,
                num_attention_heads=arch.llm_heads,
                num_key_value_heads=arch.llm_kv_heads,
                max_position_embeddings=arch.max_positions,
                bos_token_id=ids["<|endoftext|>"],
                eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"],
                tie_word_embeddings=True,
                initializer_range=arch.init_range,
            )
        )
        vision = SiglipVisionModel(
            SiglipVisionConfig(
                hidden_size=arch.vision_width,
                intermediate_size=4 * arch.vision_width,
                num_hidden_layers=arch.vision_layers,
                num_attention_heads=arch.vision_heads,
                image_size=arch.image_px,
                patch_size=arch.patch_px,
            )
        )
    llm.save_pretrained(root / "llm")
    tokenizer.save_pretrained(str(root / "llm"))
    vision.save_pretrained(root / "vision")
    processor = SiglipImageProcessor(size={"height": arch.image_px, "width": arch.image_px})
    processor.save_pretrained(root / "vision")
    return root
