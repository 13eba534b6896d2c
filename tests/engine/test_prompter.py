"""Multi-level visual prompter (paper III-A2): shapes, masks, empty retrieval, gradients, size."""

from __future__ import annotations

import pytest
import torch

from engine.config import PrompterConfig
from engine.model.prompter import MultiLevelVisualPrompter, PrompterInputs
from tests.engine.tiny import one_torch_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D, N_A, LEVEL_DIMS = 48, 6, [16, 16, 24]


def _inputs(batch=2, q=5, s=7, n=9, seed=0, semantic_lengths=(7, 3)) -> PrompterInputs:
    g = torch.Generator().manual_seed(seed)
    semantic_mask = torch.zeros(batch, s, dtype=torch.bool)
    for i, n_real in enumerate(semantic_lengths[:batch]):
        semantic_mask[i, :n_real] = True
    return PrompterInputs(
        query_embeds=torch.randn(batch, q, D, generator=g),
        query_mask=torch.ones(batch, q, dtype=torch.bool),
        semantic_embeds=torch.randn(batch, s, D, generator=g),
        semantic_mask=semantic_mask,
        levels=tuple(torch.randn(batch, n, d, generator=g) for d in LEVEL_DIMS),
        level_masks=tuple(torch.ones(batch, n, dtype=torch.bool) for _ in LEVEL_DIMS),
    )


def _prompter(**kw) -> MultiLevelVisualPrompter:
    torch.manual_seed(0)
    return MultiLevelVisualPrompter(PrompterConfig(num_tokens=N_A, **kw), D, LEVEL_DIMS).eval()


def test_output_is_L_times_Na_tokens_in_llm_space():
    prompter = _prompter()
    out = prompter(_inputs())
    assert out.shape == (2, len(LEVEL_DIMS) * N_A, D)
    assert prompter.num_output_tokens == len(LEVEL_DIMS) * N_A
    assert torch.isfinite(out).all()


def test_padded_semantic_tokens_are_ignored():
    prompter = _prompter()
    inputs = _inputs()
    changed = inputs.semantic_embeds.clone()
    changed[1, 3:] = 100.0  # row 1 has 3 real semantic tokens; the rest is padding
    out_a = prompter(inputs)
    out_b = prompter(
        PrompterInputs(
            inputs.query_embeds,
            inputs.query_mask,
            changed,
            inputs.semantic_mask,
            inputs.levels,
            inputs.level_masks,
        )
    )
    torch.testing.assert_close(out_a, out_b)


def test_no_retrieved_text_skips_the_semantic_update():
    prompter = _prompter()
    empty = _inputs(s=0, semantic_lengths=(0, 0))
    masked = PrompterInputs(
        empty.query_embeds,
        empty.query_mask,
        torch.randn(2, 7, D),
        torch.zeros(2, 7, dtype=torch.bool),
        empty.levels,
        empty.level_masks,
    )
    out_empty, out_masked = prompter(empty), prompter(masked)
    assert torch.isfinite(out_empty).all() and torch.isfinite(out_masked).all()
    torch.testing.assert_close(out_empty, out_masked)
    # A row with semantics differs from one without.
    with_text = prompter(
        PrompterInputs(
            empty.query_embeds,
            empty.query_mask,
            torch.randn(2, 7, D),
            torch.ones(2, 7, dtype=torch.bool),
            empty.levels,
            empty.level_masks,
        )
    )
    assert not torch.allclose(with_text, out_empty)


def test_each_level_block_sees_only_its_level():
    prompter = _prompter()
    inputs = _inputs()
    levels = list(inputs.levels)
    levels[2] = levels[2] + 5.0
    out_a = prompter(inputs)
    out_b = prompter(
        PrompterInputs(
            inputs.query_embeds,
            inputs.query_mask,
            inputs.semantic_embeds,
            inputs.semantic_mask,
            tuple(levels),
            inputs.level_masks,
        )
    )
    # Level-major output: the first 2 * N_a tokens (levels 0 and 1) are unchanged.
    torch.testing.assert_close(out_a[:, : 2 * N_A], out_b[:, : 2 * N_A])
    assert not torch.allclose(out_a[:, 2 * N_A :], out_b[:, 2 * N_A :])


def test_query_changes_all_levels():
    prompter = _prompter()
    a, b = _inputs(seed=0), _inputs(seed=0)
    b = PrompterInputs(
        a.query_embeds + 1.0,
        a.query_mask,
        a.semantic_embeds,
        a.semantic_mask,
        a.levels,
        a.level_masks,
    )
    diff = (prompter(a) - prompter(b)).abs().amax(dim=-1)  # (B, L*N_a)
    assert (diff > 0).all()


def test_gradients_reach_every_parameter():
    prompter = _prompter().train()
    prompter(_inputs()).square().mean().backward()
    missing = [
        n for n, p in prompter.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert missing == []


def test_smaller_width_adds_projections_and_shrinks_the_module():
    full = _prompter()
    small = _prompter(width=16)
    assert isinstance(full.query_in, torch.nn.Identity)
    assert small.query_in.weight.shape == (16, D)
    assert small(_inputs()).shape == (2, len(LEVEL_DIMS) * N_A, D)
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(small) < count(full)


def test_documented_parameter_count():
    """PrompterConfig's docstring: ~5 * (4 + 2 * mlp_ratio) * W^2 weights in the five blocks."""
    prompter = _prompter()
    blocks = [prompter.query_block, prompter.semantic_block, *prompter.level_blocks]
    weights = sum(
        p.numel()
        for b in blocks
        for n, p in b.named_parameters()
        if n.endswith("weight") and p.ndim == 2
    )
    assert weights == 5 * (4 + 2 * 2) * D * D
