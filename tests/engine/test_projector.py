"""The paper backbone's projector: MLP plus learned row/column embeddings of the patch grid."""

from __future__ import annotations

import pytest
import torch

from engine.errors import ConfigError
from engine.model.backbones.paper import MLPProjector


def _projector(grid: int = 4, vision_dim: int = 6, llm_dim: int = 8) -> MLPProjector:
    torch.manual_seed(0)
    return MLPProjector(vision_dim, llm_dim, grid)


def test_untrained_grid_embedding_is_a_no_op():
    proj = _projector()
    x = torch.randn(2, 16, 6)
    plain = proj.fc2(torch.nn.functional.gelu(proj.fc1(x)))
    torch.testing.assert_close(proj(x), plain)


def test_row_and_column_terms_land_on_the_row_major_patch():
    proj = _projector(grid=4)
    with torch.no_grad():
        proj.row_embed.copy_(torch.arange(4.0)[:, None].expand(4, 8) * 10)
        proj.col_embed.copy_(torch.arange(4.0)[:, None].expand(4, 8))
    x = torch.zeros(1, 16, 6)
    plain = proj.fc2(torch.nn.functional.gelu(proj.fc1(x)))
    extra = (proj(x) - plain)[0, :, 0]  # (16,)
    # token index = row * 4 + col carries 10 * row + col
    expected = torch.tensor([10.0 * (i // 4) + i % 4 for i in range(16)])
    torch.testing.assert_close(extra, expected)


def test_a_smaller_grid_resamples_the_tables_linearly():
    proj = _projector(grid=4)
    with torch.no_grad():
        proj.row_embed.copy_(torch.linspace(0, 3, 4)[:, None].expand(4, 8))
        proj.col_embed.zero_()
    table = proj.grid_embedding(2)  # (4, D): rows resampled 4 -> 2
    assert table.shape == (4, 8)
    # linear resampling (align_corners=False) of 0, 1, 2, 3 at 2 samples: 0.5 and 2.5
    torch.testing.assert_close(table[:, 0], torch.tensor([0.5, 0.5, 2.5, 2.5]))
    assert proj(torch.randn(1, 4, 6)).shape == (1, 4, 8)


def test_gradients_reach_the_zero_initialised_tables():
    proj = _projector()
    proj(torch.randn(2, 16, 6)).pow(2).sum().backward()
    assert proj.row_embed.grad.abs().sum() > 0
    assert proj.col_embed.grad.abs().sum() > 0


def test_a_non_square_token_count_is_refused():
    with pytest.raises(ConfigError, match="square grid"):
        _projector()(torch.randn(1, 15, 6))
