"""How much of the image layout survives inside the LLM: linear probes on the image tokens.

For each grounding prompt the engine runs, the hidden states of the image tokens are captured
at the LLM's input and after every decoder layer; a ridge regression (fitted on 70 % of the
images, scored on the rest) predicts each token's patch row and column from them. R² near 1
means the layer still knows where its image tokens lie; a falling column R² with a steady row
R² is the signature of 1D RoPE over raster-ordered tokens (attention's distance bias mixes each
row's neighbours).

The same hidden states answer a second question (:func:`roof_colour_accuracy`): can a linear
read-out tell the roof colour of the building under an image token (a patch at least half
covered by one building roof; labels from :func:`roof_colour_labels`)? Grounding "the
red-roofed building" needs the colour at the right place. Used for docs/BENCHMARKS.md::

    python -m lab.demo.layout_probe --model assets/demo/model --adapter assets/demo/adapter \\
        --clip assets/demo/clip --kb assets/demo/kb --scenes 40
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import numpy as np

__all__ = [
    "image_token_states",
    "layout_r2",
    "layout_r2_of",
    "ridge_accuracy",
    "ridge_r2",
    "roof_colour_accuracy",
    "roof_colour_labels",
]

logger = logging.getLogger(__name__)


def _ridge_heldout(x: np.ndarray, y: np.ndarray, n_fit: int, lam: float) -> np.ndarray:
    """Ridge fit of ``y`` (N, K) on ``x`` (N, F) plus a bias over the first ``n_fit`` rows;
    returns the predictions for the other rows (N - n_fit, K)."""
    x = np.c_[x, np.ones(len(x))]  # (N, F + 1) with a bias column
    eye = np.eye(x.shape[1])
    eye[-1, -1] = 0.0  # the bias is not penalised
    w = np.linalg.solve(x[:n_fit].T @ x[:n_fit] + lam * eye, x[:n_fit].T @ y[:n_fit])  # (F+1, K)
    return x[n_fit:] @ w


def ridge_r2(x: np.ndarray, y: np.ndarray, n_fit: int, lam: float = 1.0) -> np.ndarray:
    """R² per target column of a ridge fit on the first ``n_fit`` rows, scored on the rest.
    ``x`` (N, F), ``y`` (N, K) -> (K,)."""
    pred, true = _ridge_heldout(x, y, n_fit, lam), y[n_fit:]
    return 1.0 - ((pred - true) ** 2).sum(0) / ((true - true.mean(0)) ** 2).sum(0)


def ridge_accuracy(
    x: np.ndarray, labels: np.ndarray, n_fit: int, n_classes: int, lam: float = 1.0
) -> float:
    """Held-out accuracy of a ridge classifier (one-hot targets, arg-max) fitted on the first
    ``n_fit`` rows of ``x`` (N, F) with integer ``labels`` (N,) in ``[0, n_classes)``."""
    pred = _ridge_heldout(x, np.eye(n_classes)[labels], n_fit, lam).argmax(1)  # (N - n_fit,)
    return float((pred == labels[n_fit:]).mean())


def roof_colour_labels(
    seed: int, n_scenes: int, crop_px: int, patch_px: int, min_cover: float = 0.5
) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    """Per crop of the fresh test scenes (keyed by :func:`lab.synthetic.tasks.view_id`):
    the roof colour (index into the returned names) of each patch, (side, side) in raster
    order, where one building covers at least ``min_cover`` of the patch's pixels, else -1."""
    from lab.synthetic.scene import ROOF_COLOURS
    from lab.synthetic.tasks import view_id
    from lab.synthetic.views import crop_views
    from lab.demo.synthetic_eval import fresh_scenes

    names = tuple(ROOF_COLOURS)
    side = crop_px // patch_px
    out = {}
    for scene in fresh_scenes(seed, n_scenes, crop_px):
        colour_of = np.full(len(scene.objects) + 1, -1)  # object id -> colour index
        for obj in scene.objects:
            if obj.kind == "building":
                colour_of[obj.id] = names.index(obj.colour)
        for view in crop_views(scene, crop_px):
            ids = view.ids[: side * patch_px, : side * patch_px]
            patches = ids.reshape(side, patch_px, side, patch_px).swapaxes(1, 2)  # (S, S, p, p)
            patches = patches.reshape(side * side, patch_px * patch_px)  # (P, p*p)
            labels = np.full(side * side, -1)
            for k, pixels in enumerate(patches):
                counts = np.bincount(pixels, minlength=len(colour_of))
                top = int(counts.argmax())
                if colour_of[top] >= 0 and counts[top] >= min_cover * pixels.size:
                    labels[k] = colour_of[top]
            out[view_id(view)] = labels.reshape(side, side)
    return out, names


def roof_colour_accuracy(
    states: dict[str, np.ndarray], labels: np.ndarray, n_classes: int, fit_share: float = 0.7
) -> list[dict]:
    """Per layer of ``states`` (from :func:`image_token_states`, (N_images, P, D) each): the
    held-out accuracy of a linear read-out of the roof colour from the tokens with a label
    (``labels`` (N_images, P), -1: no roof), fitted on the first ``fit_share`` of the images;
    ``majority`` is the accuracy of always answering the fit set's most frequent colour."""
    n_fit_images = int(len(labels) * fit_share)
    fit, test = labels[:n_fit_images], labels[n_fit_images:]
    y = np.r_[fit[fit >= 0], test[test >= 0]]  # (M,)
    n_fit = int((fit >= 0).sum())
    majority = float((test[test >= 0] == np.bincount(fit[fit >= 0]).argmax()).mean())
    out = []
    for name, stacked in states.items():
        x = np.r_[stacked[:n_fit_images][fit >= 0], stacked[n_fit_images:][test >= 0]]  # (M, D)
        out.append(
            {
                "layer": name,
                "colour_acc": ridge_accuracy(x, y, n_fit, n_classes),
                "majority": majority,
                "n_fit": n_fit,
                "n_test": len(y) - n_fit,
            }
        )
    return out


def layout_r2(engine, samples, fit_share: float = 0.7) -> list[dict]:
    """Row and column R² of the image tokens at the LLM input (``layer`` "input") and after each
    decoder layer (``layer`` 0, 1, ...), over the prompts of ``samples`` (one image each)."""
    return layout_r2_of(image_token_states(engine, samples), fit_share)


def image_token_states(engine, samples) -> dict[str, np.ndarray]:
    """The image tokens' hidden states, (N_images, P, D) per layer: at the LLM input (``"input"``)
    and after each decoder layer (``"0"``, ``"1"``, ...), for the prompts of ``samples``."""
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
    return {name: np.stack(tokens) for name, tokens in per_layer.items()}  # (N_images, P, D)


def layout_r2_of(states: dict[str, np.ndarray], fit_share: float = 0.7) -> list[dict]:
    """:func:`layout_r2` from states already captured by :func:`image_token_states`."""
    out = []
    for name, stacked in states.items():
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
    from lab.demo.export import engine_from_dirs
    from lab.demo.synthetic_eval import fresh_test_samples

    # only the prompt's hidden states are probed: one generated token is enough
    engine = engine_from_dirs(args.model, args.adapter, args.clip, args.kb, max_new_tokens=1)
    samples = fresh_test_samples(args.seed, args.scenes, types=("ground",))
    print(f"{len(samples)} grounding prompts")
    states = image_token_states(engine, samples)
    print(f"{'layer':>6}  {'row R2':>7}  {'col R2':>7}")
    for row in layout_r2_of(states):
        print(f"{row['layer']:>6}  {row['row_r2']:7.2f}  {row['col_r2']:7.2f}")
    n_patches = next(iter(states.values())).shape[1]
    crop_px = samples[0].image_size_px[0]
    by_view, names = roof_colour_labels(
        args.seed, args.scenes, crop_px, crop_px // math.isqrt(n_patches)
    )
    views = [s.id.rsplit(":", 1)[0] for s in samples]
    first = sorted({v: i for i, v in reversed(list(enumerate(views)))}.values())  # crops once
    labels = np.stack([by_view[views[i]].ravel() for i in first])  # (N_crops, P)
    rows = roof_colour_accuracy({k: v[first] for k, v in states.items()}, labels, len(names))
    print(
        f"roof colour of the building under a token ({len(names)} colours, "
        f"{rows[0]['n_fit']} tokens fitted, {rows[0]['n_test']} held out; "
        f"majority answer {rows[0]['majority']:.2f})"
    )
    print(f"{'layer':>6}  {'accuracy':>8}")
    for row in rows:
        print(f"{row['layer']:>6}  {row['colour_acc']:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
