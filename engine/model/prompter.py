"""Multi-level visual prompter (paper III-A2): aggregation tokens -> semantic-augmented tokens.

N_a learnable aggregation tokens A (N_a x W) gather, in order:

1. the user's intent: self-attention over [A; user-query token embeddings], keep the A part
   (eq. 1-2);
2. retrieved semantics: cross-attention from A to the LLM token embeddings of the top-k retrieved
   descriptions, concatenated, with a key padding mask (eq. 3). A sample with no retrieved text
   skips this update (its A passes through unchanged);
3. visual context per level: L parallel cross-attentions from A to the level-l vision features,
   each first projected D_l -> W (eq. 4).

The L outputs are concatenated into L * N_a semantic-augmented tokens (eq. 5), normalised and
projected W -> D into the LLM's embedding space; the VLM places them after the image tokens.
Every block is a pre-norm transformer block (attention + MLP, both residual). The internal width W
defaults to the LLM hidden size D; a smaller W adds D -> W projections of the text embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import PrompterConfig

__all__ = ["MultiLevelVisualPrompter", "PrompterInputs"]


class Attention(nn.Module):
    """Multi-head attention from queries ``x`` to ``context`` with a key padding mask."""

    def __init__(self, width: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.o_proj = nn.Linear(width, width)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, key_mask: torch.Tensor
    ) -> torch.Tensor:
        """x (B, Nq, W), context (B, Nk, W), key_mask (B, Nk) bool (True = attend) -> (B, Nq, W)."""
        B, Nq, W = x.shape
        Nk = context.shape[1]
        h = self.num_heads
        q = self.q_proj(x).view(B, Nq, h, W // h).transpose(1, 2)  # (B, h, Nq, W/h)
        k = self.k_proj(context).view(B, Nk, h, W // h).transpose(1, 2)  # (B, h, Nk, W/h)
        v = self.v_proj(context).view(B, Nk, h, W // h).transpose(1, 2)
        mask = key_mask[:, None, None, :]  # (B, 1, 1, Nk)
        p = self.dropout if self.training else 0.0
        # (B, h, Nq, W/h)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.o_proj(out.transpose(1, 2).reshape(B, Nq, W))


class MLP(nn.Module):
    def __init__(self, width: int, ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = max(1, int(width * ratio))
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(F.gelu(self.fc1(x))))


class SelfAttentionBlock(nn.Module):
    """Pre-norm block over [A; Q]; returns the A part (eq. 1-2)."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, num_heads, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = MLP(width, mlp_ratio, dropout)

    def forward(
        self, a: torch.Tensor, query: torch.Tensor, query_mask: torch.Tensor
    ) -> torch.Tensor:
        """a (B, N_a, W), query (B, Q, W), query_mask (B, Q) -> (B, N_a, W)."""
        n_a = a.shape[1]
        x = torch.cat([a, query], dim=1)  # (B, N_a + Q, W)
        keep = torch.ones(a.shape[:2], dtype=torch.bool, device=a.device)
        mask = torch.cat([keep, query_mask], dim=1)  # (B, N_a + Q)
        h = self.norm1(x)
        x = x + self.attn(h, h, mask)
        x = x + self.mlp(self.norm2(x))
        return x[:, :n_a]


class CrossAttentionBlock(nn.Module):
    """Pre-norm block: A attends to a context (eq. 3 and 4)."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(width)
        self.norm_kv = nn.LayerNorm(width)
        self.attn = Attention(width, num_heads, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = MLP(width, mlp_ratio, dropout)

    def forward(
        self, a: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor
    ) -> torch.Tensor:
        """a (B, N_a, W), context (B, N, W), context_mask (B, N) -> (B, N_a, W).

        Rows whose context is entirely masked (or empty) are returned unchanged.
        """
        if context.shape[1] == 0:
            return a
        has_context = context_mask.any(dim=1)  # (B,)
        safe_mask = context_mask.clone()
        safe_mask[:, 0] |= ~has_context  # avoid an all-masked softmax (NaN); its update is dropped
        update = self.attn(self.norm_q(a), self.norm_kv(context), safe_mask)
        x = a + update
        x = x + self.mlp(self.norm2(x))
        return torch.where(has_context[:, None, None], x, a)


@dataclass(frozen=True)
class PrompterInputs:
    """The prompter's inputs for a batch; masks are bool with True = a real token."""

    query_embeds: torch.Tensor  # (B, Q, D) LLM token embeddings of the user query
    query_mask: torch.Tensor  # (B, Q)
    semantic_embeds: torch.Tensor  # (B, S, D) LLM token embeddings of the retrieved texts
    semantic_mask: torch.Tensor  # (B, S)
    levels: tuple[torch.Tensor, ...]  # L x (B, N_l, D_l) vision features per level
    level_masks: tuple[torch.Tensor, ...]  # L x (B, N_l)


class MultiLevelVisualPrompter(nn.Module):
    """Aggregation tokens conditioned on query, semantics and L vision levels -> (B, L*N_a, D)."""

    def __init__(self, config: PrompterConfig, llm_hidden_size: int, level_dims: list[int]) -> None:
        super().__init__()
        width = config.width or llm_hidden_size
        heads = config.heads_for(width)
        ratio, drop = config.mlp_ratio, config.dropout
        self.num_tokens = config.num_tokens
        self.num_levels = len(level_dims)
        self.tokens = nn.Parameter(torch.randn(config.num_tokens, width) * 0.02)  # A: (N_a, W)
        needs_in = width != llm_hidden_size
        self.query_in = nn.Linear(llm_hidden_size, width) if needs_in else nn.Identity()
        self.semantic_in = nn.Linear(llm_hidden_size, width) if needs_in else nn.Identity()
        self.level_in = nn.ModuleList(nn.Linear(d, width) for d in level_dims)
        self.query_block = SelfAttentionBlock(width, heads, ratio, drop)
        self.semantic_block = CrossAttentionBlock(width, heads, ratio, drop)
        self.level_blocks = nn.ModuleList(
            CrossAttentionBlock(width, heads, ratio, drop) for _ in level_dims
        )
        self.out_norm = nn.LayerNorm(width)
        self.out_proj = nn.Linear(width, llm_hidden_size)

    @property
    def num_output_tokens(self) -> int:
        """L * N_a."""
        return self.num_levels * self.num_tokens

    def forward(self, inputs: PrompterInputs) -> torch.Tensor:
        """Semantic-augmented tokens (B, L * N_a, D), level-major (level 0's N_a tokens first)."""
        if len(inputs.levels) != self.num_levels:
            raise ValueError(f"prompter expects {self.num_levels} levels, got {len(inputs.levels)}")
        dtype = self.tokens.dtype
        batch = inputs.query_embeds.shape[0]
        a = self.tokens[None].expand(batch, -1, -1)  # (B, N_a, W)
        query = self.query_in(inputs.query_embeds.to(dtype))  # (B, Q, W)
        a = self.query_block(a, query, inputs.query_mask)  # (1) user intent
        semantic = self.semantic_in(inputs.semantic_embeds.to(dtype))  # (B, S, W)
        a = self.semantic_block(a, semantic, inputs.semantic_mask)  # (2) retrieved semantics
        per_level = [
            block(a, proj(feats.to(dtype)), mask)  # (3) level-l visual context, (B, N_a, W)
            for block, proj, feats, mask in zip(
                self.level_blocks, self.level_in, inputs.levels, inputs.level_masks
            )
        ]
        tokens = torch.cat(per_level, dim=1)  # (B, L * N_a, W)
        return self.out_proj(self.out_norm(tokens))  # (B, L * N_a, D)
