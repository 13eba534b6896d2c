"""Semantic experts (paper III-B): low-rank experts beside the decoder FFN, routed by token role.

In a decoder layer with experts, L low-rank experts E_k (D -> r -> D, no biases, 2 D r weights
each) run in parallel with the FFN:

* routing mask: expert k sees the image tokens, the text tokens and the level-k semantic tokens;
  the semantic tokens of the other levels are masked out (zero input, zero contribution);
* merge: level-k semantic tokens take expert k with weight 1; every other token takes softmax
  weights from a linear gate D -> L over all experts;
* output = FFN(x) + merged.

The up-projections start at zero, so an untrained expert set adds exact zeros: the layer's output
is bit-identical to the FFN's. :class:`ExpertMLP` wraps a decoder layer's original MLP module
explicitly (``layer.mlp = ExpertMLP(layer.mlp, ...)``); nothing in the library is patched. Token
roles come from the VLM's shared :class:`engine.model.roles.TokenRoles`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import ExpertConfig
from engine.errors import ConfigError
from engine.model.roles import SEMANTIC, TokenRoles

__all__ = ["ExpertMLP", "SemanticExperts", "attach_experts"]

_ACTIVATIONS = {"gelu": F.gelu, "silu": F.silu, "identity": lambda h: h}


class SemanticExperts(nn.Module):
    """The L experts and the gate of one decoder layer."""

    def __init__(
        self, hidden_size: int, num_levels: int, rank: int, activation: str = "gelu"
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ConfigError(
                f"unknown expert activation {activation!r}; use one of {list(_ACTIVATIONS)}"
            )
        self.num_levels = num_levels
        self.activation = activation
        # Expert k: h = x @ down_weight[k].T (D -> r), y = act(h) @ up_weight[k] (r -> D).
        # Both stored (L, r, D) so all experts run as one matmul each; no biases -> 2 D r weights.
        self.down_weight = nn.Parameter(torch.empty(num_levels, rank, hidden_size))
        # Zero up-projections: an untrained expert set adds exact zeros.
        self.up_weight = nn.Parameter(torch.zeros(num_levels, rank, hidden_size))
        self.gate = nn.Linear(hidden_size, num_levels, bias=False)
        for k in range(num_levels):  # each expert as an nn.Linear(D, r) would be initialised
            nn.init.kaiming_uniform_(self.down_weight.data[k], a=math.sqrt(5))

    def routing_mask(self, roles: torch.Tensor) -> torch.Tensor:
        """(B, T) roles -> (B, T, L) bool: True where expert k sees the token."""
        levels = torch.arange(self.num_levels, device=roles.device)
        is_semantic = roles >= SEMANTIC  # (B, T)
        own_level = roles[..., None] == (SEMANTIC + levels)  # (B, T, L)
        return ~is_semantic[..., None] | own_level

    def merge_weights(self, x: torch.Tensor, roles: torch.Tensor) -> torch.Tensor:
        """(B, T, L) merge weights: one-hot for semantic tokens, softmax(gate(x)) for the rest."""
        gate = torch.softmax(self.gate(x).float(), dim=-1)  # (B, T, L)
        levels = torch.arange(self.num_levels, device=roles.device)
        own_level = (roles[..., None] == (SEMANTIC + levels)).float()  # (B, T, L)
        is_semantic = (roles >= SEMANTIC)[..., None]
        return torch.where(is_semantic, own_level, gate).to(x.dtype)

    def expert_outputs(self, x: torch.Tensor, roles: torch.Tensor) -> torch.Tensor:
        """Each expert's masked output, (B, T, D) -> (B, T, L, D); for inspection and tests."""
        x = x.to(self.down_weight.dtype)
        mask = self.routing_mask(roles).to(x.dtype)[..., None]  # (B, T, L, 1)
        x_k = x[:, :, None, :] * mask  # (B, T, L, D): masked input per expert
        h = torch.einsum("btld,lrd->btlr", x_k, self.down_weight)  # (B, T, L, r)
        y = torch.einsum("btlr,lrd->btld", _ACTIVATIONS[self.activation](h), self.up_weight)
        return y * mask  # zero contribution where masked

    def forward(self, x: torch.Tensor, roles: torch.Tensor | None) -> torch.Tensor:
        """Merged expert output (B, T, D) for hidden states ``x`` (B, T, D).

        ``roles`` (B, T), or None when every token is text (decode steps: all experts see every
        token, weights from the gate). Same result as ``sum_k w_k * expert_outputs[..., k, :]``
        in two matmuls: the projections have no biases and act(0) = 0, so masking a token's
        input equals masking its low-rank activations, done together with the merge weights.
        """
        x_in = x.to(self.down_weight.dtype)
        B, T, _ = x_in.shape
        L, r, D = self.down_weight.shape
        if roles is None:
            weights = torch.softmax(self.gate(x_in).float(), dim=-1).to(x_in.dtype)  # (B, T, L)
        else:
            weights = self.merge_weights(x_in, roles) * self.routing_mask(roles).to(x_in.dtype)
        h = F.linear(x_in, self.down_weight.view(L * r, D)).view(B, T, L, r)  # all experts at once
        h = _ACTIVATIONS[self.activation](h) * weights[..., None]  # (B, T, L, r)
        return (h.view(B, T, L * r) @ self.up_weight.view(L * r, D)).to(x.dtype)  # (B, T, D)


class ExpertMLP(nn.Module):
    """A decoder layer's MLP with semantic experts beside it: ``mlp(x) + experts(x, roles)``."""

    def __init__(self, mlp: nn.Module, experts: SemanticExperts, roles: TokenRoles) -> None:
        super().__init__()
        self.mlp = mlp  # the original module, unchanged (LoRA targets its linears)
        self.experts = experts
        self._roles = roles  # shared with the VLM; a plain attribute, not a submodule

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        out = self.mlp(hidden_states)  # (B, T, D)
        roles = self._roles.current(hidden_states)  # (B, T)
        return out + self.experts(hidden_states, roles).to(out.dtype)


def attach_experts(
    layers: nn.ModuleList,
    config: ExpertConfig,
    hidden_size: int,
    num_levels: int,
    roles: TokenRoles,
    dtype: torch.dtype,
) -> nn.ModuleDict:
    """Wrap the MLP of the configured decoder ``layers`` with experts; returns them by layer index.

    New expert weights are created in ``dtype`` on the device of each layer's MLP.
    """
    experts = nn.ModuleDict()
    for index in config.layer_indices(len(layers)):
        layer = layers[index]
        if isinstance(layer.mlp, ExpertMLP):
            raise ConfigError(f"decoder layer {index} already has semantic experts")
        device = next(layer.mlp.parameters()).device
        module = SemanticExperts(hidden_size, num_levels, config.rank, config.activation)
        module.to(device=device, dtype=dtype)
        layer.mlp = ExpertMLP(layer.mlp, module, roles)
        experts[str(index)] = module
    return experts
