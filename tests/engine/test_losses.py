"""Answer-token losses (engine.training.losses): cross-entropy on answer tokens only, checked
against hand-computed values, and the per-token and per-sample reductions."""

from __future__ import annotations

import math

import pytest
import torch

from engine.model.inputs import IGNORE_INDEX
from engine.training.losses import answer_token_losses, reduce_answer_losses


def _logits(rows: list[list[float]]) -> torch.Tensor:
    """(1, T, 6) logits; position t predicts label t + 1."""
    return torch.tensor([rows])


def _log_softmax(row: list[float]) -> list[float]:
    norm = math.log(sum(math.exp(v) for v in row))
    return [v - norm for v in row]


def test_the_losses_are_cross_entropy_on_answer_tokens_only():
    rows = [[0.5, 1.0, -1.0, 0.0, 2.0, 0.3], [1.5, 0.0, 0.2, -0.4, 0.1, 0.0], [0.0] * 6]
    labels = torch.tensor([[IGNORE_INDEX, 1, 4]])  # answer: token 1 then token 4
    losses, mask = answer_token_losses(_logits(rows), labels)
    assert mask.tolist() == [[True, True]]
    expected = [-_log_softmax(rows[0])[1], -_log_softmax(rows[1])[4]]
    torch.testing.assert_close(losses[0], torch.tensor(expected))


def test_ignored_positions_are_masked_out():
    rows = [[0.1, 0.7, -0.2, 0.3, 0.0, 0.4], [0.9, 0.0, 0.1, 0.5, -0.5, 0.2], [0.0] * 6]
    labels = torch.tensor([[IGNORE_INDEX, 2, IGNORE_INDEX]])
    losses, mask = answer_token_losses(_logits(rows), labels)
    assert mask.tolist() == [[True, False]]
    assert losses[0, 0].item() == pytest.approx(-_log_softmax(rows[0])[2])
    assert reduce_answer_losses(losses, mask, "token").item() == pytest.approx(losses[0, 0].item())


def test_reductions_per_token_and_per_sample():
    losses = torch.tensor([[1.0, 3.0, 0.0], [4.0, 0.0, 0.0], [9.0, 9.0, 9.0]])
    mask = torch.tensor([[True, True, False], [True, False, False], [False, False, False]])
    assert reduce_answer_losses(losses, mask, "token").item() == pytest.approx(8.0 / 3)
    assert reduce_answer_losses(losses, mask, "sample").item() == pytest.approx((2.0 + 4.0) / 2)


def test_plain_per_sample_loss_equals_torch_cross_entropy_per_answer():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 6)
    labels = torch.tensor([[IGNORE_INDEX, 1, 2, IGNORE_INDEX, 0], [IGNORE_INDEX] * 3 + [5, 4]])
    got = reduce_answer_losses(*answer_token_losses(logits, labels), per="sample")
    first = torch.nn.functional.cross_entropy(logits[0, [0, 1, 3]], torch.tensor([1, 2, 0]))
    second = torch.nn.functional.cross_entropy(logits[1, [2, 3]], torch.tensor([5, 4]))
    assert got.item() == pytest.approx(((first + second) / 2).item(), rel=1e-6)


def test_token_mean_equals_the_models_own_loss():
    """``optim.loss: token`` uses the model's loss; the masked mean here is the same number."""
    torch.manual_seed(1)
    logits = torch.randn(2, 6, 9)
    labels = torch.tensor([[IGNORE_INDEX] * 3 + [1, 2, 3], [IGNORE_INDEX, 4, 5, 6, 7, 8]])
    got = reduce_answer_losses(*answer_token_losses(logits, labels), per="token")
    expected = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 9), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
    )
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
