"""The image-layout probe: ridge R² by hand, and layout found where the projector puts it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import Engine, EngineConfig, GenerationConfig, PrompterConfig
from lab.demo.layout_probe import (
    layout_r2,
    ridge_accuracy,
    ridge_r2,
    roof_colour_accuracy,
    roof_colour_labels,
)
from lab.demo.synthetic_eval import fresh_test_samples
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


def test_ridge_accuracy_reads_a_linear_class_and_not_noise():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, size=600)
    x = np.eye(4)[labels] * 2.0 + rng.normal(scale=0.3, size=(600, 4))  # class in the features
    assert ridge_accuracy(x, labels, n_fit=400, n_classes=4) > 0.95
    noise = rng.normal(size=(600, 4))
    assert ridge_accuracy(noise, labels, n_fit=400, n_classes=4) < 0.45  # chance is 0.25


def test_roof_colour_labels_match_the_rendered_roofs():
    """Oracle: the image itself. A patch (almost) all roof has the mean colour of its label's
    roof colour, nearer to it than to any other roof colour (texture and shading aside)."""
    from lab.synthetic.scene import ROOF_COLOURS
    from lab.demo.synthetic_eval import fresh_scenes

    by_view, names = roof_colour_labels(5, 3, crop_px=128, patch_px=16, min_cover=0.9)
    assert names == tuple(ROOF_COLOURS)
    palette = np.array([ROOF_COLOURS[n] for n in names], dtype=float)  # (C, 3)
    images = {}
    from lab.synthetic.tasks import view_id
    from lab.synthetic.views import crop_views

    for scene in fresh_scenes(5, 3, 128):
        images.update({view_id(v): v.image for v in crop_views(scene, 128)})
    checked = agree = 0
    for vid, labels in by_view.items():
        assert labels.shape == (8, 8)
        for r, c in zip(*np.nonzero(labels >= 0)):
            mean = (
                images[vid][16 * r : 16 * r + 16, 16 * c : 16 * c + 16, :3].reshape(-1, 3).mean(0)
            )
            nearest = int(np.linalg.norm(palette - mean, axis=1).argmin())
            checked += 1
            agree += nearest == labels[r, c]
    assert checked >= 10  # the urban scene has roofs that fill whole patches
    assert agree / checked >= 0.9
    loose, _ = roof_colour_labels(5, 3, crop_px=128, patch_px=16, min_cover=0.5)
    assert sum((v >= 0).sum() for v in loose.values()) > checked  # half-covered patches count


def test_roof_colour_accuracy_per_layer_against_the_majority_answer():
    rng = np.random.default_rng(2)
    labels = np.where(rng.random((20, 16)) < 0.3, rng.integers(0, 3, (20, 16)), -1)  # (N, P)
    readable = np.eye(3)[np.maximum(labels, 0)] * (labels >= 0)[..., None] * 3.0
    states = {
        "input": readable + rng.normal(scale=0.2, size=(20, 16, 3)),  # colour is linear here
        "0": rng.normal(size=(20, 16, 3)),  # and lost here
    }
    rows = roof_colour_accuracy(states, labels, n_classes=3)
    assert [r["layer"] for r in rows] == ["input", "0"]
    assert rows[0]["n_fit"] == (labels[:14] >= 0).sum()
    assert rows[0]["n_test"] == (labels[14:] >= 0).sum()
    assert rows[0]["colour_acc"] > 0.95
    assert rows[1]["colour_acc"] < 0.6
    assert 0.2 < rows[0]["majority"] < 0.6
