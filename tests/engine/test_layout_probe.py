"""The image-layout probe: ridge R² by hand, and layout found where the projector puts it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import Engine, EngineConfig, GenerationConfig, PrompterConfig
from engine.demo.layout_probe import layout_r2, ridge_r2
from engine.demo.synthetic_eval import fresh_test_samples
from tests.engine.tiny import cached_tiny_model_dir, one_torch_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_ridge_r2_is_one_for_a_linear_target_and_near_zero_for_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5))
    y = np.c_[x @ np.array([1.0, -2.0, 0.5, 0.0, 3.0]) + 4.0, rng.normal(size=400)]
    r2 = ridge_r2(x, y, n_fit=300, lam=1e-6)
    assert r2[0] == pytest.approx(1.0, abs=1e-6)
    assert r2[1] < 0.1  # noise: nothing to predict on held-out rows


def test_probe_finds_the_layout_the_projector_tables_carry():
    engine = Engine.from_config(
        EngineConfig(
            backbone="paper",
            model_path=cached_tiny_model_dir("paper"),
            device="cpu",
            prompter=PrompterConfig(num_tokens=2, width=32),
            generation=GenerationConfig(max_new_tokens=2),
        )
    )
    projector = engine.vlm.backbone.projector
    with torch.no_grad():  # strong, distinct row and column tables: layout is linear in the input
        projector.row_embed.normal_(std=3.0)
        projector.col_embed.normal_(std=3.0)
    samples = fresh_test_samples(5, 4, types=("ground",))[:10]
    rows = layout_r2(engine, samples)
    assert [r["layer"] for r in rows] == ["input"] + [
        str(i) for i in range(len(engine.vlm.backbone.decoder.layers))
    ]
    assert rows[0]["row_r2"] > 0.9 and rows[0]["col_r2"] > 0.9
    assert all(np.isfinite([r["row_r2"], r["col_r2"]]).all() for r in rows)
