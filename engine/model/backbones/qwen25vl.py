"""``qwen2.5-vl`` backbone: Qwen2.5-VL-{3B,7B}-Instruct with its own ViT, merger and LLM.

* Images go through the model's own ``Qwen2VLImageProcessor`` (``smart_resize`` to multiples of
  28 within min/max pixels). The size the model saw is read back from ``image_grid_thw``
  (grid x patch size), never re-derived, so box coordinates map back exactly.
* Patch tokens: the vision model's merged output (``pooler_output``), one per 2x2 patches.
* Level features: outputs of the configured ViT blocks, taken with ``output_hidden_states``
  (no hooks of ours). The ViT runs its blocks in window order; we undo that permutation with the
  library's own ``get_vision_window_index`` so features are in the processor's patch order.
* Positions: 3D M-RoPE ids from the model's own ``get_rope_index``; the semantic slots are text
  (``mm_token_type_ids`` 0), so they take consecutive text positions after the image grid.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from engine.config import EngineConfig, default_level_layers
from engine.errors import ConfigError
from engine.model.backbones.base import (
    SEMANTIC_TOKEN,
    Backbone,
    EncodedImages,
    ImageBatch,
    pad_features,
)
from engine.model.loading import Placement, bnb_config, load_pretrained, resolve_weights

__all__ = ["Qwen25VLBackbone"]


class Qwen25VLBackbone(Backbone):
    name = "qwen2.5-vl"
    answers_zero_shot = True

    def __init__(
        self, model: nn.Module, processor, level_layers: tuple[int, ...] | None, cfg: EngineConfig
    ):
        super().__init__()
        self.model = model  # Qwen2_5_VLForConditionalGeneration
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"
        self.image_config = cfg.image
        self.model_name = str(cfg.model_path)
        depth = model.config.vision_config.depth
        self.level_layers = level_layers or default_level_layers(depth)
        if max(self.level_layers) > depth:
            raise ConfigError(f"level_layers {self.level_layers} exceed the {depth} ViT blocks")
        self.image_token_id = model.config.image_token_id
        self.semantic_token_id = self.token_id(SEMANTIC_TOKEN)

    @classmethod
    def load(cls, cfg: EngineConfig, placement: Placement) -> Qwen25VLBackbone:
        """Load model + processor from ``cfg.model_path`` on ``placement``'s device/quantization."""
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

        path = resolve_weights(cfg.model_path, "Qwen2.5-VL", hub_hint="Qwen/Qwen2.5-VL-3B-Instruct")
        kwargs: dict = {"dtype": placement.base_dtype, "device_map": placement.device_map}
        if placement.quantize:
            skip = ["lm_head"] + ([] if placement.quantize_vision else ["model.visual"])
            kwargs["quantization_config"] = bnb_config(placement, skip)
            kwargs["dtype"] = placement.compute_dtype
        model = load_pretrained(Qwen2_5_VLForConditionalGeneration, path, "Qwen2.5-VL", **kwargs)
        processor = load_pretrained(AutoProcessor, path, "Qwen2.5-VL processor")
        model.eval().requires_grad_(False)
        return cls(model, processor, cfg.level_layers, cfg)

    @property
    def chat_template(self) -> str:
        """The tokenizer's template, else the processor's (Qwen2.5-VL ships one there)."""
        template = self.tokenizer.chat_template or self.processor.chat_template
        if not template:
            raise ConfigError(
                f"no chat template in {self.model_name!r} (tokenizer or processor); "
                "use an -Instruct model"
            )
        return template

    # --- sizes and modules ---------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def hidden_size(self) -> int:
        return self.model.config.text_config.hidden_size

    @property
    def level_dims(self) -> list[int]:
        return [self.model.config.vision_config.hidden_size] * len(self.level_layers)

    @property
    def decoder(self) -> nn.Module:
        return self.model.model.language_model

    @property
    def vision_tower(self) -> nn.Module:
        return self.model.model.visual

    # --- images ----------------------------------------------------------------------------
    def preprocess(self, images: list[np.ndarray], scale: float = 1.0) -> ImageBatch:
        ip = self.processor.image_processor
        max_pixels = int((self.image_config.max_pixels or ip.size["longest_edge"]) * scale)
        min_pixels = min(self.image_config.min_pixels or ip.size["shortest_edge"], max_pixels)
        out = ip(
            images=list(images),
            size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
            input_data_format="channels_last",
            return_tensors="pt",
        )
        grid = out["image_grid_thw"]  # (B, 3): t, h, w in patches
        patch, merge = ip.patch_size, ip.merge_size
        model_sizes = tuple((int(w) * patch, int(h) * patch) for _, h, w in grid.tolist())
        # Same count as Qwen2_5_VLProcessor.replace_image_token: patches / merge^2.
        num_tokens = tuple(int(n) for n in (grid.prod(-1) // merge**2).tolist())
        return ImageBatch(
            pixel_values=out["pixel_values"],
            crop_sizes_px=tuple((im.shape[1], im.shape[0]) for im in images),
            model_sizes_px=model_sizes,
            num_image_tokens=num_tokens,
            image_grid_thw=grid,
        )

    def encode_image(self, images: ImageBatch, need_levels: bool = True) -> EncodedImages:
        visual = self.vision_tower
        device = self.model.device
        grid = images.image_grid_thw.to(device)
        pixels = images.pixel_values.to(device=device, dtype=visual.dtype)  # (sum patches, C*T*P*P)
        out = visual(pixels, grid_thw=grid, output_hidden_states=need_levels)
        merged = out.pooler_output  # (sum N_img, D), image after image
        patch_tokens, patch_mask = pad_features(
            list(torch.split(merged, list(images.num_image_tokens)))
        )
        if not need_levels:
            return EncodedImages(patch_tokens, patch_mask, (), patch_mask[:, :0])
        patches_per_image = grid.prod(-1).tolist()
        unpermute = self._window_order_inverse(grid)
        levels, level_mask = [], None
        for block in self.level_layers:
            hidden = out.hidden_states[block]  # (sum patches, D_v) in window order
            hidden = self._unpermute(hidden, unpermute)
            padded, level_mask = pad_features(list(torch.split(hidden, patches_per_image)))
            levels.append(padded)  # (B, N_l, D_v)
        return EncodedImages(patch_tokens, patch_mask, tuple(levels), level_mask)

    def _window_order_inverse(self, grid: torch.Tensor) -> torch.Tensor:
        from transformers.vision_utils import get_vision_window_index

        vc = self.model.config.vision_config
        window_index, _ = get_vision_window_index(
            grid,
            spatial_merge_size=vc.spatial_merge_size,
            window_size=vc.window_size,
            patch_size=vc.patch_size,
        )
        return torch.argsort(window_index.to(grid.device))

    def _unpermute(self, hidden: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        unit = self.model.config.vision_config.spatial_merge_size**2
        seq, dim = hidden.shape
        return hidden.reshape(seq // unit, unit, dim)[inverse].reshape(seq, dim)

    # --- LLM ---------------------------------------------------------------------------------
    def position_ids(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, images: ImageBatch
    ) -> torch.Tensor:
        mm_token_type_ids = (input_ids == self.image_token_id).int()  # 1 = image, 0 = text
        positions, _ = self.model.model.get_rope_index(
            input_ids,
            mm_token_type_ids=mm_token_type_ids,
            image_grid_thw=images.image_grid_thw.to(input_ids.device),
            attention_mask=attention_mask,
        )
        return positions  # (3, B, T)

    def step_position_ids(self, next_positions: torch.Tensor) -> torch.Tensor:
        return next_positions.view(1, -1, 1).expand(3, -1, 1)  # (3, B, 1)

    @property
    def causal_lm(self) -> nn.Module:
        return self.model

    def signature(self) -> dict:
        tc, vc = self.model.config.text_config, self.model.config.vision_config
        return {
            "backbone": self.name,
            "llm": {k: getattr(tc, k) for k in _TEXT_KEYS},
            "vision": {
                k: getattr(vc, k)
                for k in ("depth", "hidden_size", "patch_size", "spatial_merge_size")
            },
            "level_layers": list(self.level_layers),
        }


_TEXT_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "vocab_size",
)
