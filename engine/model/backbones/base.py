"""The small interface every vision-language backbone implements, and the values it passes on.

A backbone owns a vision encoder, an LLM (called with ``inputs_embeds``), the tokenizer and the
image preprocessing. The VLM (:mod:`engine.model.vlm`) composes it with the prompter and the
experts and never looks inside. In a prompt, one image is the text block
``<|vision_start|>`` + ``<|image_pad|>`` x N_img + ``<|vision_pad|>`` x (L * N_a)
+ ``<|vision_end|>``:
the image pads receive the patch tokens and the vision pads the semantic-augmented tokens (both
real tokens of the Qwen vocabulary, replaced by a masked scatter after a count check).

A sample may show several images (change tasks: the before crop, then the after crop): the
:class:`ImageBatch` then lists every image in sample order, and ``images_per_sample`` says how
many belong to each sample; the prompt holds one such block per image, in the same order.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from engine.errors import ConfigError

__all__ = [
    "IMAGE_TOKEN",
    "SEMANTIC_TOKEN",
    "Backbone",
    "Deepstack",
    "EncodedImages",
    "ImageBatch",
]

VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_TOKEN = "<|image_pad|>"
SEMANTIC_TOKEN = "<|vision_pad|>"


@dataclass(frozen=True)
class ImageBatch:
    """Preprocessed images of one batch, ready for :meth:`Backbone.encode_image`.

    ``model_sizes_px`` are (width, height) of each image as the vision encoder sees it (after the
    processor's resize); ``crop_sizes_px`` the (width, height) the caller gave. Box coordinates in
    the model's convention are converted with exactly these two sizes.
    """

    pixel_values: torch.Tensor
    crop_sizes_px: tuple[tuple[int, int], ...]
    model_sizes_px: tuple[tuple[int, int], ...]
    num_image_tokens: tuple[int, ...]  # patch tokens per image in LLM space
    image_grid_thw: torch.Tensor | None = None  # (B, 3) Qwen2.5-VL patch grid; None for paper
    images_per_sample: tuple[int, ...] = ()  # () = one image per sample

    def __post_init__(self) -> None:
        if self.images_per_sample and (
            sum(self.images_per_sample) != len(self.crop_sizes_px)
            or min(self.images_per_sample) < 1
        ):
            raise ValueError(
                f"images_per_sample {self.images_per_sample} does not split "
                f"{len(self.crop_sizes_px)} images into samples of one or more images"
            )

    def __len__(self) -> int:
        """The number of images (not samples)."""
        return len(self.crop_sizes_px)

    @property
    def num_samples(self) -> int:
        return len(self.images_per_sample) if self.images_per_sample else len(self.crop_sizes_px)

    @property
    def counts(self) -> tuple[int, ...]:
        """Images per sample, always explicit."""
        return self.images_per_sample or (1,) * len(self.crop_sizes_px)

    def sample_images(self, sample: int) -> range:
        """Indices of the images of ``sample``, in prompt order."""
        counts = self.counts
        start = sum(counts[:sample])
        return range(start, start + counts[sample])

    def grid_index(self, sample: int) -> int:
        """The image whose pixels the boxes of ``sample`` use: its last (the after image)."""
        return self.sample_images(sample)[-1]

    def grouped(self, images_per_sample) -> ImageBatch:
        """This batch with its images split into samples of ``images_per_sample`` images."""
        counts = tuple(int(n) for n in images_per_sample)
        return dataclasses.replace(self, images_per_sample=() if set(counts) <= {1} else counts)


@dataclass(frozen=True)
class EncodedImages:
    """Vision encoder outputs, padded over the batch (masks: True = a real token)."""

    patch_tokens: torch.Tensor  # (B, N_img, D) in LLM embedding space
    patch_mask: torch.Tensor  # (B, N_img)
    levels: tuple[torch.Tensor, ...]  # L x (B, N_l, D_l) encoder block outputs
    level_mask: torch.Tensor  # (B, N_l)
    deepstack: tuple[torch.Tensor, ...] = ()  # K x (B, N_img, D): Qwen3-VL DeepStack features


@dataclass(frozen=True)
class Deepstack:
    """Image features the LLM adds to its hidden states at the image slots after each of its
    first K decoder layers (Qwen3-VL's DeepStack); prefill only."""

    image_slots: torch.Tensor  # (B, T) bool
    features: tuple[torch.Tensor, ...]  # K x (sum N_img, D), in slot order


class Backbone(nn.Module, abc.ABC):
    """Vision encoder + LLM + tokenizer behind one interface (see module docstring)."""

    name: str
    model_name: str  # the weights' name or path, for answers and adapter manifests
    tokenizer: object  # a transformers PreTrainedTokenizerBase, left padding
    level_layers: tuple[int, ...]  # 1-based encoder blocks giving the L level features
    image_token_id: int  # <|image_pad|>: slots for patch tokens
    semantic_token_id: int  # <|vision_pad|>: slots for semantic-augmented tokens
    answers_zero_shot: bool = False  # a pretrained VLM that answers without adapter modules

    @property
    @abc.abstractmethod
    def device(self) -> torch.device:
        """Where inputs go (the LLM's device)."""

    # --- sizes ---------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def hidden_size(self) -> int:
        """D, the LLM hidden size."""

    @property
    @abc.abstractmethod
    def level_dims(self) -> list[int]:
        """D_l of each level feature."""

    # --- modules -------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def decoder(self) -> nn.Module:
        """The LLM decoder stack (has ``.layers``); LoRA is injected here."""

    @property
    @abc.abstractmethod
    def vision_tower(self) -> nn.Module:
        """The vision encoder (small learning rate in instruction tuning)."""

    @property
    def projector(self) -> nn.Module | None:
        """A new vision -> LLM projector that belongs to the adapter, or None."""
        return None

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, D) LLM token embeddings."""
        return self.decoder.embed_tokens(input_ids)

    # --- images ----------------------------------------------------------------------------
    @abc.abstractmethod
    def preprocess(self, images: list[np.ndarray], scale: float = 1.0) -> ImageBatch:
        """RGB uint8 (H, W, 3) arrays -> an :class:`ImageBatch`; ``scale`` < 1 shrinks the pixel
        budget (used once after an out-of-memory error)."""

    @abc.abstractmethod
    def encode_image(self, images: ImageBatch) -> EncodedImages:
        """Patch tokens in LLM space and the L level features."""

    # --- text ------------------------------------------------------------------------------
    def token_id(self, token: str) -> int:
        """Id of a special token; a clear error if the tokenizer lacks it."""
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise ConfigError(
                f"the {self.name} tokenizer has no {token!r} token; is it a Qwen tokenizer?"
            )
        return token_id

    def image_block(self, num_image_tokens: int, num_semantic_tokens: int) -> str:
        """The prompt text for one image with its patch and semantic slots."""
        return (
            VISION_START
            + IMAGE_TOKEN * num_image_tokens
            + SEMANTIC_TOKEN * num_semantic_tokens
            + VISION_END
        )

    @property
    def chat_template(self) -> str:
        """The Jinja chat template (the tokenizer's own)."""
        if not self.tokenizer.chat_template:
            raise ConfigError(
                f"the {self.name} tokenizer at {self.model_name!r} has no chat template; "
                "use an -Instruct model"
            )
        return self.tokenizer.chat_template

    def chat_prompt(self, system: str | None, user: str) -> str:
        """Render one user turn (with generation prompt) with the model's chat template."""
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": user})
        return self.tokenizer.apply_chat_template(
            messages, chat_template=self.chat_template, tokenize=False, add_generation_prompt=True
        )

    def strip_special_tokens(self, text: str) -> str:
        """User text with any special-token strings removed (they would act as control tokens)."""
        added = self.tokenizer.added_tokens_decoder.values()
        for token in set(self.tokenizer.all_special_tokens) | {
            t.content for t in added if t.special
        }:
            text = text.replace(token, "")
        return text

    def stop_token_ids(self) -> tuple[int, ...]:
        """Token ids that end generation (EOS and the chat turn end)."""
        ids = {self.token_id("<|im_end|>")}
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return tuple(sorted(ids))

    # --- LLM -------------------------------------------------------------------------------
    @abc.abstractmethod
    def position_ids(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, images: ImageBatch
    ) -> torch.Tensor:
        """Prefill position ids for a left-padded batch: (B, T), or (3, B, T) for M-RoPE."""

    @abc.abstractmethod
    def step_position_ids(self, next_positions: torch.Tensor) -> torch.Tensor:
        """Position ids of one decode step from the (B,) next positions: (B, 1) or (3, B, 1)."""

    @property
    @abc.abstractmethod
    def causal_lm(self) -> nn.Module:
        """The module whose forward takes ``inputs_embeds`` and returns logits (and the loss)."""

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
        """Run the LLM on embeddings (B, T, D); the loss covers label positions != -100.
        ``deepstack`` is only for backbones whose encoder gives DeepStack features."""
        if deepstack is not None:
            raise ConfigError(f"the {self.name} backbone has no DeepStack layers")
        return self.causal_lm(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=past_key_values is not None,
            labels=labels,
            logits_to_keep=logits_to_keep,
        )

    def new_cache(self):
        """An empty KV cache (``DynamicCache``) for this LLM."""
        from transformers import DynamicCache

        return DynamicCache(config=self.causal_lm.config)

    @abc.abstractmethod
    def signature(self) -> dict:
        """Architecture facts an adapter depends on (hashed into adapter_config.json)."""


def left_padded_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """1D positions for a left-padded batch: 0 at each row's first real token. (B, T) int64."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def pad_features(chunks: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-image (N_i, C) features into (B, N_max, C) with a (B, N_max) bool mask."""
    n_max = max(c.shape[0] for c in chunks)
    out = chunks[0].new_zeros((len(chunks), n_max, chunks[0].shape[-1]))
    mask = torch.zeros((len(chunks), n_max), dtype=torch.bool, device=chunks[0].device)
    for i, chunk in enumerate(chunks):
        out[i, : chunk.shape[0]] = chunk
        mask[i, : chunk.shape[0]] = True
    return out, mask
