"""Answer-token losses (engine.training.losses): plain cross-entropy, soft number targets checked
against hand-computed values, the per-token and per-sample reductions, the number-token table of
a real tokenizer."""

from __future__ import annotations

import math

import pytest
import torch

from engine.model.inputs import IGNORE_INDEX
from engine.training.losses import (
    NumberTokens,
    answer_token_losses,
    number_tokens,
    reduce_answer_losses,
)

# a 6-token vocabulary: ids 0-2 are words, ids 3-5 spell the numbers 0, 10 and 20
NUMBERS = NumberTokens(torch.tensor([3, 4, 5]), torch.tensor([0.0, 10.0, 20.0]))


def _logits(rows: list[list[float]]) -> torch.Tensor:
    """(1, T, 6) logits; position t predicts label t + 1."""
    return torch.tensor([rows])


def _log_softmax(row: list[float]) -> list[float]:
    norm = math.log(sum(math.exp(v) for v in row))
    return [v - norm for v in row]


def test_without_sigma_the_losses_are_cross_entropy_on_answer_tokens_only():
    rows = [[0.5, 1.0, -1.0, 0.0, 2.0, 0.3], [1.5, 0.0, 0.2, -0.4, 0.1, 0.0], [0.0] * 6]
    labels = torch.tensor([[IGNORE_INDEX, 1, 4]])  # answer: token 1 then the number 10
    losses, mask = answer_token_losses(_logits(rows), labels, NUMBERS, sigma=0.0)
    assert mask.tolist() == [[True, True]]
    expected = [-_log_softmax(rows[0])[1], -_log_softmax(rows[1])[4]]
    torch.testing.assert_close(losses[0], torch.tensor(expected))


def test_soft_number_target_is_the_kl_to_a_gaussian_over_number_tokens():
    row = [0.2, -0.3, 0.0, 1.0, 0.5, -1.0]
    labels = torch.tensor([[IGNORE_INDEX, 4]])  # the number 10
    sigma = 10.0
    losses, _ = answer_token_losses(_logits([row, [0.0] * 6]), labels, NUMBERS, sigma)
    # target over values 0, 10, 20 around 10: weights e^-0.5, 1, e^-0.5
    weights = [math.exp(-0.5), 1.0, math.exp(-0.5)]
    target = [w / sum(weights) for w in weights]
    log_model = _log_softmax(row)[3:]
    expected = sum(q * (math.log(q) - lp) for q, lp in zip(target, log_model, strict=True))
    assert losses[0, 0].item() == pytest.approx(expected, rel=1e-5)


def test_a_near_miss_costs_less_than_a_far_miss_only_with_soft_targets():
    labels = torch.tensor([[IGNORE_INDEX, 3]])  # the number 0
    near = _logits([[0, 0, 0, 0, 8.0, 0], [0.0] * 6])  # confidently says 10
    far = _logits([[0, 0, 0, 0, 0, 8.0], [0.0] * 6])  # confidently says 20
    hard_near = answer_token_losses(near, labels, NUMBERS, 0.0)[0].item()
    hard_far = answer_token_losses(far, labels, NUMBERS, 0.0)[0].item()
    assert hard_near == pytest.approx(hard_far)  # one-hot: every miss is equally wrong
    soft_near = answer_token_losses(near, labels, NUMBERS, 10.0)[0].item()
    soft_far = answer_token_losses(far, labels, NUMBERS, 10.0)[0].item()
    assert soft_far - soft_near > 2.0  # 6.50 vs 4.33


def test_soft_targets_leave_word_tokens_and_ignored_positions_alone():
    rows = [[0.1, 0.7, -0.2, 0.3, 0.0, 0.4], [0.9, 0.0, 0.1, 0.5, -0.5, 0.2], [0.0] * 6]
    labels = torch.tensor([[IGNORE_INDEX, 2, IGNORE_INDEX]])
    soft, mask = answer_token_losses(_logits(rows), labels, NUMBERS, 10.0)
    hard, _ = answer_token_losses(_logits(rows), labels, NUMBERS, 0.0)
    assert mask.tolist() == [[True, False]]
    assert soft[0, 0].item() == pytest.approx(hard[0, 0].item())


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


def test_number_tokens_of_the_demo_tokenizer_are_its_integer_tokens():
    from engine.demo.tokenizer import build_tokenizer, train_tokenizer_json

    texts = ["a red roof near 3 tanks", "the road at [0, 200, 1000, 410]"] * 5
    tokenizer = build_tokenizer(train_tokenizer_json(texts, vocab_size=300, max_number_token=50))
    found = number_tokens(tokenizer)
    assert found.values.tolist() == [float(v) for v in range(51)]
    for token_id, value in zip(found.ids.tolist(), found.values.tolist(), strict=True):
        assert tokenizer.decode([token_id]) == str(int(value))
    on_grid = number_tokens(tokenizer, grid=10)
    assert on_grid.values.tolist() == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
    # a target off the grid ("7") keeps the plain loss; one on it ("10") gets the soft one
    labels = torch.tensor([[IGNORE_INDEX, tokenizer.convert_tokens_to_ids("7")]])
    labels_on = torch.tensor([[IGNORE_INDEX, tokenizer.convert_tokens_to_ids("10")]])
    logits = torch.randn(1, 2, len(tokenizer), generator=torch.Generator().manual_seed(0))
    for target, changes in ((labels, False), (labels_on, True)):
        soft = answer_token_losses(logits, target, on_grid, 10.0)[0].item()
        hard = answer_token_losses(logits, target, on_grid, 0.0)[0].item()
        assert (soft != pytest.approx(hard)) is changes


def test_number_tokens_need_two_numbers():
    class Vocab:
        def get_vocab(self):
            return {"a": 0, "7": 1, "07": 2, "-3": 3}

    assert number_tokens(Vocab()) is None
    with pytest.raises(ValueError, match="two 1-D tensors"):
        NumberTokens(torch.tensor([1]), torch.tensor([7.0]))
