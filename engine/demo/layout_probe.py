"""How much of the image layout survives inside the LLM: linear probes on the image tokens.

For each grounding prompt the engine runs, the hidden states of the image tokens are captured
at the LLM's input and after every decoder layer; a ridge regression (fitted on 70 % of the
images, scored on the rest) predicts each token's patch row and column from them. R² near 1
means the layer still knows where its image tokens lie; a falling column R² with a steady row
R² is the signature of 1D RoPE over raster-ordered tokens (``image_positions="sequence"``:
attention's distance bias mixes each row's neighbours). Used for docs/BENCHMARKS.md::

    python -m engine.demo.layout_probe --model assets/demo/model --adapter assets/demo/adapter \\
        --clip assets/demo/clip --kb assets/demo/kb --scenes 40
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import numpy as np

__all__ = ["layout_r2", "ridge_r2"]

logger = logging.getLogger(__name__)


def ridge_r2(x: np.ndarray, y: np.ndarray, n_fit: int, lam: float = 1.0) -> np.ndarray:
    """R² per target column of a ridge fit on the first ``n_fit`` rows, scored on the rest.
    ``x`` (N, F), ``y`` (N, K) -> (K,)."""
    x = np.c_[x, np.ones(len(x))]  # (N, F + 1) with a bias column
    eye = np.eye(x.shape[1])
    eye[-1, -1] = 0.0  # the bias is not penalised
    w = np.linalg.solve(x[:n_fit].T @ x[:n_fit] + lam * eye, x[:n_fit].T @ y[:n_fit])  # (F+1, K)
    pred, true = x[n_fit:] @ w, y[n_fit:]
    return 1.0 - ((pred - true) ** 2).sum(0) / ((true - true.mean(0)) ** 2).sum(0)


def layout_r2(engine, samples, fit_share: float = 0.7) -> list[dict]:
    """Row and column R² of the image tokens at the LLM input (``layer`` "input") and after each
    decoder layer (``layer`` 0, 1, ...), over the prompts of ``samples`` (one image each)."""
    import torch

    from engine.evaluation.runner import predict
    from engine.model.roles import IMAGE

    vlm = engine.vlm
    layers = list(vlm.backbone.decoder.layers)
    captured: dict[str, torch.Tensor] = {}
    roles: list[torch.Tensor] = []
    per_layer: dict[str, list[np.ndarray]] = {}

    def keep(name: str, hidden: torch.Tensor) -> None:
        if hidden.shape[1] > 1:  # prefill only, not the one-token decode steps
            captured[name] = hidden.detach()

    hooks = [
        layers[0].register_forward_pre_hook(
            lambda m, args, kwargs: keep("input", args[0] if args else kwargs["hidden_states"]),
            with_kwargs=True,
        )
    ]
    for i, layer in enumerate(layers):
        hooks.append(
            layer.register_forward_hook(
                lambda m, a, out, i=i: keep(str(i), out[0] if isinstance(out, tuple) else out)
            )
        )
    original_set = vlm.roles.set

    def set_roles(value: torch.Tensor) -> None:
        if value.shape[1] > 1:
            roles.append(value.detach().clone())
        original_set(value)

    vlm.roles.set = set_roles
    try:
        for sample in samples:
            captured.clear()
            roles.clear()
            predict(engine, [sample], batch_size=1)
            image = roles[0][0] == IMAGE  # (T,)
            for name, hidden in captured.items():
                per_layer.setdefault(name, []).append(hidden[0, image].float().numpy())
    finally:
        vlm.roles.set = original_set
        for hook in hooks:
            hook.remove()
    out = []
    for name, tokens in per_layer.items():
        stacked = np.stack(tokens)  # (N_images, P, D)
        n_images, n_patches = stacked.shape[:2]
        side = math.isqrt(n_patches)
        grid = np.stack([np.arange(n_patches) // side, np.arange(n_patches) % side], 1)  # (P, 2)
        n_fit = int(n_images * fit_share) * n_patches
        r2 = ridge_r2(
            stacked.reshape(n_images * n_patches, -1), np.tile(grid, (n_images, 1)), n_fit
        )
        out.append({"layer": name, "row_r2": float(r2[0]), "col_r2": float(r2[1])})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="base directory (llm/, vision/)")
    parser.add_argument("--adapter", type=Path, required=True)
    parser.add_argument("--clip", type=Path, help="demo CLIP directory (with --kb: retrieval)")
    parser.add_argument("--kb", type=Path, help="knowledge-base directory")
    parser.add_argument("--scenes", type=int, default=40, help="fresh test scenes (default 40)")
    parser.add_argument("--seed", type=int, default=97, help="test scene seed (default 97)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from engine.demo.manifest import engine_from_dirs
    from engine.demo.synthetic_eval import fresh_test_samples

    # only the prompt's hidden states are probed: one generated token is enough
    engine = engine_from_dirs(args.model, args.adapter, args.clip, args.kb, max_new_tokens=1)
    samples = fresh_test_samples(args.seed, args.scenes, types=("ground",))
    backbone = engine.vlm.backbone
    print(
        f"{len(samples)} grounding prompts, image_positions={backbone.image_positions}, "
        f"image_attention={backbone.image_attention}"
    )
    print(f"{'layer':>6}  {'row R2':>7}  {'col R2':>7}")
    for row in layout_r2(engine, samples):
        print(f"{row['layer']:>6}  {row['row_r2']:7.2f}  {row['col_r2']:7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
