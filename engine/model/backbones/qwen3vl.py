"""``qwen3-vl`` backbone: Qwen3-VL-{2B,4B,8B,32B}-Instruct, the MoE Qwen3-VL-{30B-A3B,235B-A22B},
and Qwen3.5 (dense and MoE), which share its processor, chat tokens and M-RoPE.

These models keep Qwen2.5-VL's interface, so this backbone extends :class:`Qwen25VLBackbone`:

* Images: the same ``Qwen2VLImageProcessor`` resize, with patch 16 and merge 2 (multiples of
  32); the size the model saw is read back from ``image_grid_thw`` x patch size, as for Qwen2.5.
* Boxes: the model writes ``bbox_2d`` on a 0-1000 grid relative to the image
  (``BOX_CONVENTIONS["qwen3-vl"]``), so the resize does not enter the mapping.
* Positions: the model's own ``get_rope_index`` (image tokens = 1 in ``mm_token_type_ids``).
* DeepStack: the vision tower also merges the outputs of a few ViT blocks
  (``deepstack_visual_indexes``), and the LLM adds feature k to its hidden states at the image
  positions after decoder layer k. The library does this only when it runs the vision tower
  itself, so :meth:`lm_forward` calls the text model with those features (prefill only) and
  applies the LM head; without them the answers would not be the model's.
* The ViT has no window attention: level features come out in the processor's patch order.

The checkpoint's ``model_type`` picks the class (``MODEL_FAMILIES``). Qwen3.5 has no DeepStack,
and its LLM mixes Gated DeltaNet (linear attention) with full-attention layers; the library's
``DynamicCache`` holds both states, and the prompt asks for no thinking block
(``enable_thinking=False``). NF4 quantizes ``nn.Linear`` weights only: MoE experts are fused 3-D
parameters and stay in the compute dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

from engine.config import EngineConfig
from engine.errors import ConfigError
from engine.model.backbones.base import Deepstack, EncodedImages, ImageBatch, pad_features
from engine.model.backbones.qwen25vl import Qwen25VLBackbone
from engine.model.loading import Placement, bnb_config, load_pretrained, resolve_weights

__all__ = ["MODEL_FAMILIES", "ModelFamily", "Qwen3VLBackbone"]


@dataclass(frozen=True)
class ModelFamily:
    """How one checkpoint ``model_type`` loads: its transformers class, and whether its vision
    tower gives DeepStack features."""

    class_name: str
    deepstack: bool


# checkpoint model_type -> family (Qwen3-VL dense and MoE; Qwen3.5 dense and MoE)
MODEL_FAMILIES = {
    "qwen3_vl": ModelFamily("Qwen3VLForConditionalGeneration", deepstack=True),
    "qwen3_vl_moe": ModelFamily("Qwen3VLMoeForConditionalGeneration", deepstack=True),
    "qwen3_5": ModelFamily("Qwen3_5ForConditionalGeneration", deepstack=False),
    "qwen3_5_moe": ModelFamily("Qwen3_5MoeForConditionalGeneration", deepstack=False),
}


class Qwen3VLBackbone(Qwen25VLBackbone):
    name = "qwen3-vl"

    @classmethod
    def load(cls, cfg: EngineConfig, placement: Placement) -> Qwen3VLBackbone:
        """Load model + processor from ``cfg.model_path`` on ``placement``'s device/quantization."""
        import transformers
        from transformers import AutoConfig, AutoProcessor

        path = resolve_weights(cfg.model_path, "Qwen3-VL", hub_hint="Qwen/Qwen3-VL-4B-Instruct")
        config = load_pretrained(AutoConfig, path, "Qwen3-VL config")
        family = MODEL_FAMILIES.get(config.model_type)
        if family is None:
            raise ConfigError(
                f"{str(cfg.model_path)!r} is a {config.model_type!r} checkpoint; backbone "
                f"'qwen3-vl' loads {', '.join(MODEL_FAMILIES)} (Qwen3-VL or Qwen3.5, dense or "
                "MoE); use --backbone qwen2.5-vl for Qwen2.5-VL"
            )
        kwargs: dict = {"dtype": placement.base_dtype, "device_map": placement.device_map}
        if placement.quantize:
            skip = ["lm_head"] + ([] if placement.quantize_vision else ["model.visual"])
            kwargs["quantization_config"] = bnb_config(placement, skip)
            kwargs["dtype"] = placement.compute_dtype
        model_class = getattr(transformers, family.class_name)
        model = load_pretrained(model_class, path, "Qwen3-VL", config=config, **kwargs)
        processor = load_pretrained(AutoProcessor, path, "Qwen3-VL processor")
        model.eval().requires_grad_(False)
        return cls(model, processor, cfg.level_layers, cfg)

    # --- images ----------------------------------------------------------------------------
    def encode_image(self, images: ImageBatch, need_levels: bool = True) -> EncodedImages:
        visual = self.vision_tower
        device = self.model.device
        grid = images.image_grid_thw.to(device)
        pixels = images.pixel_values.to(device=device, dtype=visual.dtype)  # (sum patches, C*T*P*P)
        out = visual(pixels, grid_thw=grid, output_hidden_states=need_levels)
        counts = list(images.num_image_tokens)
        patch_tokens, patch_mask = pad_features(list(torch.split(out.pooler_output, counts)))
        deepstack = ()
        if MODEL_FAMILIES[self.model.config.model_type].deepstack:
            deepstack = tuple(  # K x (B, N_img, D), padded like the patch tokens
                pad_features(list(torch.split(feature, counts)))[0]
                for feature in out.deepstack_features
            )
        if not need_levels:
            return EncodedImages(patch_tokens, patch_mask, (), patch_mask[:, :0], deepstack)
        patches_per_image = grid.prod(-1).tolist()
        levels, level_mask = [], None
        for block in self.level_layers:
            hidden = out.hidden_states[block]  # (sum patches, D_v), processor patch order
            padded, level_mask = pad_features(list(torch.split(hidden, patches_per_image)))
            levels.append(padded)  # (B, N_l, D_v)
        return EncodedImages(patch_tokens, patch_mask, tuple(levels), level_mask, deepstack)

    # --- LLM ---------------------------------------------------------------------------------
    def lm_forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past_key_values=None,
        labels: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        deepstack: Deepstack | None = None,
    ) -> CausalLMOutputWithPast:
        """The text model with DeepStack features at the image slots, then the LM head."""
        extra = {}
        if deepstack is not None:
            extra = {
                "visual_pos_masks": deepstack.image_slots,
                "deepstack_visual_embeds": list(deepstack.features),
            }
        out = self.decoder(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=past_key_values is not None,
            **extra,
        )
        hidden = out.last_hidden_state  # (B, T, D)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.model.lm_head(hidden)  # (B, T', V)
        loss = None
        if labels is not None:
            vocab_size = self.model.config.text_config.vocab_size
            loss = self.model.loss_function(logits=logits, labels=labels, vocab_size=vocab_size)
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=out.past_key_values)

    def chat_prompt(self, system: str | None, user: str) -> str:
        """As the base, with ``enable_thinking=False``: Qwen3.5 thinks before answering unless
        told not to, and the parsers read the answer itself; templates without the switch
        (Qwen3-VL Instruct) ignore it."""
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": user})
        return self.tokenizer.apply_chat_template(
            messages,
            chat_template=self.chat_template,
            tokenize=False,
            add_generation_prompt=True,
            enable_thinking=False,
        )

    def signature(self) -> dict:
        facts = super().signature()
        facts["model_type"] = self.model.config.model_type
        return facts
