"""Answer-token losses of the training loop: next-token cross-entropy on the answer tokens only,
reduced per token (the usual recipe) or per sample (``optim.loss``)."""

from __future__ import annotations

import torch

from engine.model.inputs import IGNORE_INDEX

__all__ = ["answer_token_losses", "reduce_answer_losses"]


def answer_token_losses(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position next-token losses and the answer mask, both (B, T-1).

    logits (B, T, V); labels (B, T) with ``IGNORE_INDEX`` outside the answers.
    """
    targets = labels[:, 1:]  # token t is predicted at position t - 1
    mask = targets != IGNORE_INDEX  # (B, T-1)
    shifted = logits[:, :-1].float()  # (B, T-1, V)
    losses = torch.nn.functional.cross_entropy(
        shifted.transpose(1, 2), targets.clamp(min=0), reduction="none"
    )  # (B, T-1)
    return losses, mask


def reduce_answer_losses(losses: torch.Tensor, mask: torch.Tensor, per: str) -> torch.Tensor:
    """``per="token"``: mean over all answer tokens of the batch; ``per="sample"``: mean over
    samples of each sample's mean (samples without answer tokens are left out)."""
    if per == "token":
        return (losses * mask).sum() / mask.sum().clamp(min=1)
    per_sample = (losses * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)  # (B,)
    return per_sample[mask.any(dim=1)].mean()
