"""``paper`` backbone: SigLIP(2) vision tower + 2-layer MLP projector + Qwen2.5-Instruct LLM.

The seed paper (IV-A3) builds on SigLIP2 and Qwen2.5-7B-Instruct. Fixed-resolution SigLIP2
checkpoints (e.g. ``google/siglip2-so400m-patch14-384``) are stored with ``model_type`` "siglip"
and load as ``SiglipVisionModel``; the NaFlex variants (``model_type`` "siglip2") are not
supported yet. The projector (Linear -> GELU -> Linear, vision width -> D) is new and belongs to
the adapter, so this backbone only gives useful answers with a trained adapter.

Image tokens are the projected last-layer patch features; level features are the outputs of the
configured encoder blocks (``output_hidden_states``). Positions in the LLM are 1D RoPE
positions, which give the LLM no 2-D layout of the image (Qwen2-VL's M-RoPE does): the projector
therefore adds a learned row embedding and a learned column embedding (zero-initialised, so an
untrained projector is the plain MLP) to every projected patch token, and localisation (boxes)
can read where a token lies with one linear map. At a smaller input (the OOM retry) the row and
column tables are linearly resampled to the smaller grid. Every image token has its own 1D
position, in raster order, under the LLM's own causal mask.
Directory layout when only ``model_path`` is given: ``<model_path>/llm`` and
``<model_path>/vision``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.config import EngineConfig, default_level_layers
from engine.errors import ConfigError, WeightsNotFoundError
from engine.model.backbones.base import (
    IMAGE_TOKEN,
    SEMANTIC_TOKEN,
    Backbone,
    EncodedImages,
    ImageBatch,
    left_padded_positions,
)
from engine.model.loading import Placement, bnb_config, load_pretrained, resolve_weights

__all__ = ["MLPProjector", "PaperBackbone"]

logger = logging.getLogger(__name__)

SUPPORTED_VISION_TYPES = ("siglip", "siglip_vision_model")


class MLPProjector(nn.Module):
    """Vision features (B, N, D_v) of a square ``grid`` x ``grid`` patch layout (row-major) ->
    LLM space (B, N, D): Linear, GELU, Linear, plus ``row_embed[r] + col_embed[c]`` (zeros at
    initialisation) for the patch in row r, column c."""

    def __init__(self, vision_dim: int, llm_dim: int, grid: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, llm_dim)
        self.fc2 = nn.Linear(llm_dim, llm_dim)
        self.row_embed = nn.Parameter(torch.zeros(grid, llm_dim))  # (G, D)
        self.col_embed = nn.Parameter(torch.zeros(grid, llm_dim))  # (G, D)

    def grid_embedding(self, grid: int) -> torch.Tensor:
        """(grid * grid, D) position term, resampled when ``grid`` is not the trained size."""
        rows, cols = self.row_embed, self.col_embed
        if grid != rows.shape[0]:

            def resample(table: torch.Tensor) -> torch.Tensor:  # (G, D) -> (grid, D)
                return nn.functional.interpolate(
                    table.T[None], size=grid, mode="linear", align_corners=False
                )[0].T

            rows, cols = resample(rows), resample(cols)
        return (rows[:, None, :] + cols[None, :, :]).reshape(grid * grid, -1)  # row-major

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = math.isqrt(x.shape[1])
        if grid * grid != x.shape[1]:
            raise ConfigError(
                f"{x.shape[1]} patch tokens do not form a square grid; the paper backbone needs "
                "a fixed-resolution SigLIP tower fed square images (its preprocess does this)"
            )
        out = self.fc2(nn.functional.gelu(self.fc1(x)))  # (B, N, D)
        return out + self.grid_embedding(grid).to(out.dtype)


class PaperBackbone(Backbone):
    name = "paper"

    def __init__(
        self,
        llm: nn.Module,
        tokenizer,
        vision: nn.Module,
        image_processor,
        cfg: EngineConfig,
        module_dtype: torch.dtype,
    ):
        super().__init__()
        self.llm = llm  # Qwen2ForCausalLM
        self.vision = vision  # SiglipVisionModel
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        self.model_name = str(cfg.model_path)
        depth = vision.config.num_hidden_layers
        self.level_layers = cfg.level_layers or default_level_layers(depth)
        if max(self.level_layers) > depth:
            raise ConfigError(f"level_layers {self.level_layers} exceed the {depth} SigLIP blocks")
        self.image_token_id = self.token_id(IMAGE_TOKEN)
        self.semantic_token_id = self.token_id(SEMANTIC_TOKEN)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # reproducible until adapter weights replace it
            grid = vision.config.image_size // vision.config.patch_size
            self._projector = MLPProjector(vision.config.hidden_size, llm.config.hidden_size, grid)
        self._projector.to(device=llm.device, dtype=module_dtype)

    @classmethod
    def load(cls, cfg: EngineConfig, placement: Placement) -> PaperBackbone:
        from transformers import (
            AutoConfig,
            AutoImageProcessor,
            AutoTokenizer,
            Qwen2ForCausalLM,
            SiglipVisionModel,
        )

        llm_path, vision_path = _component_paths(cfg)
        vision_type = load_pretrained(AutoConfig, vision_path, "SigLIP vision").model_type
        if vision_type not in SUPPORTED_VISION_TYPES:
            raise ConfigError(
                f"vision model {vision_path!r} has model_type {vision_type!r}; the paper backbone "
                f"supports {', '.join(SUPPORTED_VISION_TYPES)} (fixed-resolution SigLIP/SigLIP2, "
                "e.g. google/siglip2-so400m-patch14-384). SigLIP2 NaFlex ('siglip2') is not "
                "supported yet."
            )
        llm_type = load_pretrained(AutoConfig, llm_path, "Qwen2.5 LLM").model_type
        if llm_type != "qwen2":
            raise ConfigError(
                f"LLM {llm_path!r} has model_type {llm_type!r}; the paper backbone needs 'qwen2'"
            )
        common: dict = {"dtype": placement.base_dtype, "device_map": placement.device_map}
        llm_kwargs = dict(common)
        if placement.quantize:
            llm_kwargs.update(
                quantization_config=bnb_config(placement, ["lm_head"]),
                dtype=placement.compute_dtype,
            )
        vision_kwargs = dict(common)
        if placement.quantize_vision:
            vision_kwargs.update(
                quantization_config=bnb_config(placement, []), dtype=placement.compute_dtype
            )
        llm = load_pretrained(Qwen2ForCausalLM, llm_path, "Qwen2.5 LLM", **llm_kwargs)
        vision = load_pretrained(SiglipVisionModel, vision_path, "SigLIP vision", **vision_kwargs)
        tokenizer = load_pretrained(AutoTokenizer, llm_path, "Qwen2.5 tokenizer")
        image_processor = load_pretrained(AutoImageProcessor, vision_path, "SigLIP image processor")
        llm.eval().requires_grad_(False)
        vision.eval().requires_grad_(False)
        return cls(llm, tokenizer, vision, image_processor, cfg, placement.module_dtype)

    # --- sizes and modules ---------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.llm.device

    @property
    def hidden_size(self) -> int:
        return self.llm.config.hidden_size

    @property
    def level_dims(self) -> list[int]:
        return [self.vision.config.hidden_size] * len(self.level_layers)

    @property
    def decoder(self) -> nn.Module:
        return self.llm.model

    @property
    def vision_tower(self) -> nn.Module:
        return self.vision

    @property
    def projector(self) -> nn.Module:
        return self._projector

    # --- images ----------------------------------------------------------------------------
    def preprocess(self, images: list[np.ndarray], scale: float = 1.0) -> ImageBatch:
        native = self.vision.config.image_size
        patch = self.vision.config.patch_size
        side = (
            native if scale >= 1.0 else max(patch, int(native * math.sqrt(scale)) // patch * patch)
        )
        out = self.image_processor(
            images=list(images),
            size={"height": side, "width": side},
            input_data_format="channels_last",
            return_tensors="pt",
        )
        n_tokens = (side // patch) ** 2
        return ImageBatch(
            pixel_values=out["pixel_values"],  # (B, 3, side, side)
            crop_sizes_px=tuple((im.shape[1], im.shape[0]) for im in images),
            model_sizes_px=tuple((side, side) for _ in images),
            num_image_tokens=tuple(n_tokens for _ in images),
        )

    def encode_image(self, images: ImageBatch, need_levels: bool = True) -> EncodedImages:
        pixels = images.pixel_values.to(device=self.llm.device, dtype=self.vision.dtype)
        native = pixels.shape[-1] == self.vision.config.image_size
        out = self.vision(pixels, output_hidden_states=True, interpolate_pos_encoding=not native)
        feats = out.last_hidden_state  # (B, N_img, D_v), post-layernorm
        patch_tokens = self._projector(feats.to(self._projector.fc1.weight.dtype))  # (B, N_img, D)
        mask = torch.ones(patch_tokens.shape[:2], dtype=torch.bool, device=patch_tokens.device)
        levels = (
            tuple(out.hidden_states[block] for block in self.level_layers) if need_levels else ()
        )
        return EncodedImages(patch_tokens, mask, levels, mask)

    # --- LLM ---------------------------------------------------------------------------------
    def position_ids(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, images: ImageBatch
    ) -> torch.Tensor:
        return left_padded_positions(attention_mask)  # (B, T)

    def step_position_ids(self, next_positions: torch.Tensor) -> torch.Tensor:
        return next_positions[:, None]  # (B, 1)

    @property
    def causal_lm(self) -> nn.Module:
        return self.llm

    def signature(self) -> dict:
        lc, vc = self.llm.config, self.vision.config
        llm_keys = (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "intermediate_size",
            "vocab_size",
        )
        return {
            "backbone": self.name,
            "llm": {k: getattr(lc, k) for k in llm_keys},
            "vision": {
                k: getattr(vc, k)
                for k in ("num_hidden_layers", "hidden_size", "patch_size", "image_size")
            },
            "level_layers": list(self.level_layers),
        }


def _component_paths(cfg: EngineConfig) -> tuple[str, str]:
    """(llm, vision) weights for the paper backbone (see the module docstring for the layout)."""
    if cfg.vision_path is not None:
        llm = resolve_weights(cfg.model_path, "Qwen2.5 LLM", hub_hint="Qwen/Qwen2.5-7B-Instruct")
        vision = resolve_weights(
            cfg.vision_path, "SigLIP vision", hub_hint="google/siglip2-so400m-patch14-384"
        )
        return llm, vision
    root = Path(cfg.model_path).expanduser()
    if not (root / "llm").is_dir() or not (root / "vision").is_dir():
        raise WeightsNotFoundError(
            f"paper backbone directory {str(root)!r} must contain 'llm/' (Qwen2.5-Instruct) and "
            "'vision/' (SigLIP); or pass vision_path separately. To obtain them, on a machine with "
            "internet run: huggingface-cli download Qwen/Qwen2.5-7B-Instruct --local-dir <dir>/llm "
            "and huggingface-cli download google/siglip2-so400m-patch14-384 "
            "--local-dir <dir>/vision"
        )
    llm = resolve_weights(root / "llm", "Qwen2.5 LLM", hub_hint="Qwen/Qwen2.5-7B-Instruct")
    vision = resolve_weights(
        root / "vision", "SigLIP vision", hub_hint="google/siglip2-so400m-patch14-384"
    )
    return llm, vision
