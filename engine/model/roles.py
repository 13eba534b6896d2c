"""Token roles: which tokens of a sequence are image, text, or semantic tokens of level k.

The semantic experts (paper III-B) route tokens by role, but Hugging Face decoder layers call
``self.mlp(hidden_states)`` with nothing else. So the VLM owns one :class:`TokenRoles` object,
shared by reference with every :class:`engine.model.experts.ExpertMLP` wrapper, and sets it at
the start of each forward call (prefill: the whole prompt; each decode step: the new tokens, which
are always text, recorded as "all text" so the experts skip the routing mask). The roles stay set
after the call so that activation checkpointing, which re-runs the layers during backward, sees
the same roles. One forward at a time per VLM: the
engine serialises requests with a lock.

Role codes (int64): ``TEXT = 0``, ``IMAGE = 1``, semantic level k (0-based) = ``SEMANTIC + k``.
Padding is text (it is masked out of attention anyway).
"""

from __future__ import annotations

import torch

from engine.errors import EngineError

__all__ = ["IMAGE", "SEMANTIC", "TEXT", "TokenRoles", "semantic_role"]

TEXT = 0
IMAGE = 1
SEMANTIC = 2


def semantic_role(level: int) -> int:
    """Role code of the semantic tokens of 0-based ``level``."""
    return SEMANTIC + level


class TokenRoles:
    """Roles of the tokens in the VLM's current forward call: (B, T) int64, or "all text"."""

    def __init__(self) -> None:
        self._roles: torch.Tensor | None = None
        self._shape: tuple[int, int] | None = None

    def set(self, roles: torch.Tensor) -> None:
        """Set the roles for the next forward call; ``roles`` is (B, T) int64."""
        if roles.ndim != 2 or roles.dtype != torch.long:
            raise EngineError(
                f"token roles must be (B, T) int64, got {tuple(roles.shape)} {roles.dtype}"
            )
        self._roles, self._shape = roles, tuple(roles.shape)

    def set_text(self, batch: int, length: int) -> None:
        """All ``length`` new tokens of each of ``batch`` rows are text (decode steps)."""
        self._roles, self._shape = None, (batch, length)

    def current(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        """Roles (B, T) matching ``hidden_states`` (B, T, D), or None when all tokens are text.

        Raises if no roles were set or they were set for another shape.
        """
        if self._shape is None:
            raise EngineError(
                "semantic experts ran without token roles; call the model through "
                "engine.model.vlm.SemanticVLM, which sets them for every forward call"
            )
        if self._shape != tuple(hidden_states.shape[:2]):
            raise EngineError(
                f"token roles {self._shape} do not match hidden states "
                f"{tuple(hidden_states.shape[:2])}; roles must be set for every forward call"
            )
        return self._roles
