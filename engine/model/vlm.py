"""The semantic-augmented VLM: backbone + multi-level visual prompter + semantic experts + LoRA.

Sequence fed to the LLM (one image per sample, left-padded batch)::

    [chat prefix] <|vision_start|> [image tokens x N_img] [semantic tokens x L*N_a] <|vision_end|>
    [user text] [assistant prefix] [answer ...]

A change sample has two such blocks (before, then after, each after its label text); the
prompter runs once per block (its query rows are per image) and the experts see both blocks'
image and semantic tokens with their roles.

Image tokens come from the backbone's encoder, semantic tokens from the prompter (level-major:
level 0's N_a tokens first); both are placed with a masked scatter after a count check. Token roles
(image / text / semantic level k) are computed here and set on the shared
:class:`engine.model.roles.TokenRoles` before every LLM call, for the expert wrappers to read.

Without a prompter (Qwen2.5-VL / Qwen3-VL zero-shot) the same path runs with no semantic slots:
retrieved descriptions then travel in the prompt text instead. Backbones whose encoder gives
DeepStack features (Qwen3-VL) get them, with the image slots, in the prefill's LLM call. Training: ``forward(batch)`` with
``batch.labels`` returns the next-token loss on the answer tokens only; :meth:`parameter_groups`
exposes prompter / projector / experts / LoRA / vision for per-group learning rates, and ``llm``
(the base LLM itself: embeddings, decoder, norm, LM head) for training a small model from scratch.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from engine.config import ExpertConfig, LoraConfig, PrompterConfig
from engine.errors import EngineError
from engine.model.backbones.base import Backbone, Deepstack, EncodedImages
from engine.model.experts import attach_experts
from engine.model.inputs import VLMBatch
from engine.model.lora import attach_lora, lora_parameters, route_lora
from engine.model.prompter import MultiLevelVisualPrompter, PrompterInputs
from engine.model.roles import IMAGE, SEMANTIC, TEXT, TokenRoles

__all__ = ["PARAMETER_GROUPS", "SemanticVLM"]

logger = logging.getLogger(__name__)

PARAMETER_GROUPS = ("prompter", "projector", "experts", "lora", "vision", "llm")


class SemanticVLM(nn.Module):
    """Composition of a :class:`Backbone` with the paper's modules (any of them may be absent)."""

    def __init__(
        self,
        backbone: Backbone,
        prompter: MultiLevelVisualPrompter | None = None,
        experts: nn.ModuleDict | None = None,
        roles: TokenRoles | None = None,
        prompter_config: PrompterConfig | None = None,
        expert_config: ExpertConfig | None = None,
        lora_config: LoraConfig | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.prompter = prompter
        self.experts = experts if experts is not None else nn.ModuleDict()
        self.roles = roles or TokenRoles()
        self.prompter_config = prompter_config
        self.expert_config = expert_config
        self.lora_config = lora_config

    @classmethod
    def with_adapter_modules(
        cls,
        backbone: Backbone,
        prompter_config: PrompterConfig,
        expert_config: ExpertConfig,
        lora_config: LoraConfig | None,
        dtype: torch.dtype,
    ) -> SemanticVLM:
        """Attach a fresh prompter, experts (zero up-projections) and LoRA (zero B)."""
        roles = TokenRoles()
        prompter = MultiLevelVisualPrompter(
            prompter_config, backbone.hidden_size, backbone.level_dims
        )
        prompter.to(device=backbone.device, dtype=dtype)
        num_levels = len(backbone.level_layers)
        layers = backbone.decoder.layers
        experts = attach_experts(
            layers, expert_config, backbone.hidden_size, num_levels, roles, dtype
        )
        if lora_config is not None:
            attach_lora(backbone.decoder, lora_config, dtype)
        vlm = cls(backbone, prompter, experts, roles, prompter_config, expert_config, lora_config)
        vlm.set_trainable(())
        return vlm

    # --- shapes ------------------------------------------------------------------------------
    @property
    def num_semantic_tokens(self) -> int:
        """L * N_a with a prompter, else 0."""
        return self.prompter.num_output_tokens if self.prompter is not None else 0

    @property
    def has_adapter_modules(self) -> bool:
        return self.prompter is not None

    # --- embedding -----------------------------------------------------------------------------
    def embed(self, batch: VLMBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Input embeddings (B, T, D) with image and semantic tokens placed, and roles (B, T)."""
        embeds, roles, _ = self._embed(batch)
        return embeds, roles

    def _embed(self, batch: VLMBatch) -> tuple[torch.Tensor, torch.Tensor, Deepstack | None]:
        """:meth:`embed` plus the DeepStack features of backbones that have them."""
        bb = self.backbone
        ids = batch.input_ids.to(bb.device)
        encoded = bb.encode_image(batch.images, need_levels=self.prompter is not None)
        embeds = bb.embed_tokens(ids)  # (B, T, D)
        roles = torch.full_like(ids, TEXT)
        image_slots = ids == bb.image_token_id  # (B, T)
        _check_count("image", int(image_slots.sum()), int(encoded.patch_mask.sum()))
        image_tokens = encoded.patch_tokens[encoded.patch_mask]  # (sum N_img, D)
        embeds = embeds.masked_scatter(image_slots[..., None], image_tokens.to(embeds.dtype))
        roles = roles.masked_fill(image_slots, IMAGE)
        deepstack = None
        if encoded.deepstack:  # K x (sum N_img, D) in slot order, like the patch tokens
            features = tuple(f[encoded.patch_mask] for f in encoded.deepstack)
            deepstack = Deepstack(image_slots, features)
        if self.prompter is None:
            return embeds, roles, deepstack
        semantic_slots = ids == bb.semantic_token_id  # (B, T)
        per_row = semantic_slots.sum(dim=1).tolist()
        for row, count in zip(per_row, batch.images.counts):  # one L*N_a block per image
            _check_count("semantic", row, count * self.num_semantic_tokens)
        # one prompter pass per image block: (N_images, L*N_a, D), in slot order
        tokens = self.prompter(self._prompter_inputs(batch, encoded))
        embeds = embeds.masked_scatter(semantic_slots[..., None], tokens.to(embeds.dtype))
        n_a = self.prompter.num_tokens
        levels = torch.arange(self.num_semantic_tokens, device=ids.device) // n_a  # slot -> level
        roles[semantic_slots] = (SEMANTIC + levels).repeat(len(batch.images))
        return embeds, roles, deepstack

    def _prompter_inputs(self, batch: VLMBatch, encoded: EncodedImages) -> PrompterInputs:
        bb, device = self.backbone, self.backbone.device
        return PrompterInputs(
            query_embeds=bb.embed_tokens(batch.query_ids.to(device)),  # (B, Q, D)
            query_mask=batch.query_mask.to(device),
            semantic_embeds=bb.embed_tokens(batch.semantic_ids.to(device)),  # (B, S, D)
            semantic_mask=batch.semantic_mask.to(device),
            levels=encoded.levels,
            level_masks=tuple(encoded.level_mask for _ in encoded.levels),
        )

    # --- forward passes --------------------------------------------------------------------------
    def forward(self, batch: VLMBatch) -> CausalLMOutputWithPast:
        """Full forward; with ``batch.labels`` the output has the loss on the answer tokens."""
        embeds, roles, deepstack = self._embed(batch)
        self.roles.set(roles)
        mask = batch.attention_mask.to(self.backbone.device)
        input_ids = batch.input_ids.to(mask.device)
        positions = self.backbone.position_ids(input_ids, mask, batch.images)
        labels = batch.labels.to(mask.device) if batch.labels is not None else None
        return self.backbone.lm_forward(embeds, mask, positions, labels=labels, deepstack=deepstack)

    def prefill(self, batch: VLMBatch, cache) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the prompt into ``cache``; returns last logits (B, V) and next positions (B,)."""
        embeds, roles, deepstack = self._embed(batch)
        self.roles.set(roles)
        mask = batch.attention_mask.to(self.backbone.device)
        input_ids = batch.input_ids.to(mask.device)
        positions = self.backbone.position_ids(input_ids, mask, batch.images)
        out = self.backbone.lm_forward(
            embeds,
            mask,
            positions,
            past_key_values=cache,
            logits_to_keep=1,
            deepstack=deepstack,
        )
        row_dims = (0, 2) if positions.ndim == 3 else (1,)  # (3, B, T) M-RoPE or (B, T)
        return out.logits[:, -1], positions.amax(dim=row_dims) + 1

    def decode_step(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor, cache
    ) -> torch.Tensor:
        """One cached step: ``tokens`` (B,) at ``positions`` (B,) -> next logits (B, V)."""
        embeds = self.backbone.embed_tokens(tokens[:, None])  # (B, 1, D)
        self.roles.set_text(embeds.shape[0], 1)  # generated tokens are text
        step_positions = self.backbone.step_position_ids(positions)
        out = self.backbone.lm_forward(
            embeds, attention_mask, step_positions, past_key_values=cache, logits_to_keep=1
        )
        return out.logits[:, -1]

    def route_lora(self, task) -> bool:
        """Turn the LoRA on for ``task`` (a :class:`engine.types.Task` or its name) when
        ``lora_config.tasks`` is ``None`` or names it, off otherwise (then the model computes
        exactly what it computes without LoRA); returns whether LoRA is on (False: no LoRA)."""
        if self.lora_config is None:
            return False
        name = getattr(task, "value", task)
        return route_lora(self.backbone.decoder, self.lora_config.tasks, name)

    # --- training support ------------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by group (see ``PARAMETER_GROUPS``); empty lists for absent modules."""
        bb = self.backbone
        groups = {
            "prompter": list(self.prompter.parameters()) if self.prompter is not None else [],
            "projector": list(bb.projector.parameters()) if bb.projector is not None else [],
            "experts": list(self.experts.parameters()),
            "lora": list(lora_parameters(bb.decoder).values()),
            "vision": list(bb.vision_tower.parameters()),
        }
        # llm: every other backbone weight (decoder, embeddings, final norm, LM head)
        taken = {id(p) for params in groups.values() for p in params}
        groups["llm"] = [p for p in bb.parameters() if id(p) not in taken]
        return groups

    def set_trainable(self, groups) -> None:
        """Freeze everything, then unfreeze the named groups (quantized weights stay frozen)."""
        groups = tuple(groups)
        unknown = [g for g in groups if g not in PARAMETER_GROUPS]
        if unknown:
            raise EngineError(
                f"unknown parameter groups {unknown}; use {', '.join(PARAMETER_GROUPS)}"
            )
        self.requires_grad_(False)
        by_group = self.parameter_groups()
        for group in groups:
            for param in by_group[group]:
                if param.is_floating_point():
                    param.requires_grad_(True)
                else:
                    logger.warning(
                        "group %r: %s parameter stays frozen (quantized)", group, param.dtype
                    )


def _check_count(kind: str, slots: int, tokens: int) -> None:
    if slots != tokens:
        raise EngineError(
            f"{kind} slots in the prompt ({slots}) do not match the {kind} tokens ({tokens})"
        )
