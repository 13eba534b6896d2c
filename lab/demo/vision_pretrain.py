"""Stage 0 of the demo: pretraining the SigLIP vision tower on synthetic crops.

The paper starts from a *pretrained* SigLIP2 tower. The demo has no such checkpoint offline, and
a VLM whose vision tower starts random spends thousands of steps "blind" (answering from the
language prior) before it learns to look. So the demo first pretrains its tower on the training
scenes with two objectives at once:

* contrastive (how SigLIP/CLIP towers are made): the pooled feature, projected to the demo
  CLIP's embedding space, is matched against the frozen CLIP text embedding of the crop's scene
  caption with the symmetric InfoNCE loss (identical captions count as positives);
* dense (how segmentation backbones are made): a linear head on every patch token predicts which
  object kinds and colours cover that patch (:data:`PATCH_LABELS`, soft targets = covered
  fraction of the patch, binary cross-entropy), from the generator's object-id map. This gives
  the patch tokens the local, position-bound semantics grounding needs;
* positional: two linear heads on every patch token classify the patch's row and column.
  Without it, contrastive and dense objectives need no position, and the tower's last layer
  washes out its position embeddings (measured on the demo tower: a linear probe recovered the
  patch row/column with R^2 = 0.84/0.76 at the input and -0.04/-0.07 at the last layer), so the
  LLM cannot tell *where* anything is and grounding collapses to an average box.

Only the tower and two throw-away heads train; the result replaces ``vision/`` in the base that
the VLM training starts from.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from engine.atomic import atomic_directory

__all__ = [
    "PATCH_LABELS",
    "PretrainExample",
    "VisionPretrainConfig",
    "patch_targets",
    "pretrain_examples",
    "pretrain_vision",
]

PATCH_LABELS = (
    *[
        f"kind:{k}"
        for k in ("building", "water", "road", "field", "forest", "vehicle", "storage_tank")
    ],
    *[f"building:{c}" for c in ("red", "orange", "white", "grey", "blue")],
    *[f"storage_tank:{c}" for c in ("white", "grey")],
    *[f"field:{c}" for c in ("yellow", "green", "brown")],
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VisionPretrainConfig:
    steps: int = 600
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 50
    weight_decay: float = 0.05
    dense_weight: float = 10.0
    position_weight: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class PretrainExample:
    image: np.ndarray  # (H, W, 3) uint8 crop
    caption: str  # its scene caption
    targets: np.ndarray  # (N_patches, len(PATCH_LABELS)) float32 covered fractions


def _labels_of(obj) -> list[int]:
    names = [f"kind:{obj.kind}"]
    if obj.colour is not None:
        names.append(f"{obj.kind}:{obj.colour}")
    return [PATCH_LABELS.index(n) for n in names if n in PATCH_LABELS]


def patch_targets(view, patch_px: int) -> np.ndarray:
    """(N_patches, len(PATCH_LABELS)) share of each patch covered by each label, row-major."""
    ids = view.ids  # (S, S) object id per pixel, 0 = ground
    side = view.size_px // patch_px
    table = np.zeros((len(view.scene.objects) + 1, len(PATCH_LABELS)), dtype=np.float32)
    for obj in view.scene.objects:
        table[obj.id, _labels_of(obj)] = 1.0
    per_pixel = table[ids]  # (S, S, K)
    blocks = per_pixel.reshape(side, patch_px, side, patch_px, -1)
    return blocks.mean(axis=(1, 3)).reshape(side * side, -1)


def pretrain_examples(data_manifest: dict, captions: dict[str, str], patch_px: int):
    """Examples of every training crop: scenes regenerated from the dataset's seeds (pure numpy,
    ~0.03 s a scene), crops and captions as in the dataset (``captions`` by sample-id prefix)."""
    from lab.synthetic.layouts import generate_scene
    from lab.synthetic.scene import SCENE_CLASSES
    from lab.synthetic.dataset import SEED_STRIDE
    from lab.synthetic.views import crop_views

    crop_px, scene_px = data_manifest["crop_px"], data_manifest["scene_px"]
    examples = []
    for seed in data_manifest["seeds"]["train"]:
        scene = generate_scene(
            seed, scene_px, SCENE_CLASSES[(seed % SEED_STRIDE) % 3], data_manifest["pixel_size_m"]
        )
        for view in crop_views(scene, crop_px):
            key = f"synthetic:{seed}:{view.row_off}_{view.col_off}"
            if key in captions:
                examples.append(
                    PretrainExample(view.image, captions[key], patch_targets(view, patch_px))
                )
    return examples


def pretrain_vision(
    base_dir: Path,
    out_dir: Path,
    examples: list[PretrainExample],
    embedder,
    config: VisionPretrainConfig = VisionPretrainConfig(),
) -> Path:
    """Copy ``base_dir`` (``llm/`` + ``vision/``) to ``out_dir`` with a pretrained ``vision/``.

    ``embedder``: the demo CLIP, whose text tower gives the frozen caption targets.
    """
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm
    from transformers import AutoImageProcessor, SiglipVisionModel

    torch.manual_seed(config.seed)
    vision = SiglipVisionModel.from_pretrained(str(base_dir / "vision"), dtype=torch.float32)
    processor = AutoImageProcessor.from_pretrained(str(base_dir / "vision"))
    captions = [e.caption for e in examples]
    text_targets = torch.from_numpy(embedder.embed_texts(captions))  # (N, E) unit rows
    dense = torch.from_numpy(np.stack([e.targets for e in examples]))  # (N, P, K)
    width = vision.config.hidden_size
    pool_head = torch.nn.Linear(width, text_targets.shape[1])
    patch_head = torch.nn.Linear(width, len(PATCH_LABELS))
    side = vision.config.image_size // vision.config.patch_size
    row_head, col_head = torch.nn.Linear(width, side), torch.nn.Linear(width, side)
    rows = torch.arange(side).repeat_interleave(side)  # (P,) row-major patch order
    cols = torch.arange(side).repeat(side)  # (P,)
    scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    heads = (pool_head, patch_head, row_head, col_head)
    params = [*vision.parameters(), *(p for h in heads for p in h.parameters()), scale]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    rng = np.random.default_rng(config.seed)
    vision.train()
    for step in tqdm(range(config.steps), desc="pretrain demo vision tower", mininterval=10):
        lr = config.lr * min(1.0, (step + 1) / config.warmup_steps)
        lr *= 0.5 * (1 + math.cos(math.pi * step / config.steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        index = rng.choice(len(examples), min(config.batch_size, len(examples)), replace=False)
        images = [examples[i].image for i in index]
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        out = vision(pixel_values=pixels)
        image_emb = F.normalize(pool_head(out.pooler_output), dim=-1)  # (B, E)
        text_emb = text_targets[torch.from_numpy(index)]  # (B, E)
        logits = scale.exp().clamp(max=100) * image_emb @ text_emb.T  # (B, B)
        same = torch.tensor(
            [[captions[i] == captions[j] for j in index] for i in index], dtype=torch.float32
        )
        soft = same / same.sum(dim=1, keepdim=True)
        contrastive = (F.cross_entropy(logits, soft) + F.cross_entropy(logits.T, soft)) / 2
        patch_logits = patch_head(out.last_hidden_state)  # (B, P, K)
        dense_loss = F.binary_cross_entropy_with_logits(
            patch_logits, dense[torch.from_numpy(index)]
        )
        tokens = out.last_hidden_state  # (B, P, D)
        position_loss = (
            F.cross_entropy(row_head(tokens).flatten(0, 1), rows.repeat(len(index)))
            + F.cross_entropy(col_head(tokens).flatten(0, 1), cols.repeat(len(index)))
        ) / 2
        loss = (
            contrastive + config.dense_weight * dense_loss + config.position_weight * position_loss
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            logger.info(
                "vision pretrain step %d contrastive %.4f dense %.4f position %.4f",
                step,
                contrastive.item(),
                dense_loss.item(),
                position_loss.item(),
            )
    with atomic_directory(out_dir) as tmp:
        shutil.copytree(base_dir, tmp, dirs_exist_ok=True)
        vision.eval().save_pretrained(tmp / "vision")
        record = {
            **asdict(config),
            "examples": len(examples),
            "final_contrastive": contrastive.item(),
            "final_dense": dense_loss.item(),
            "final_position": position_loss.item(),
            "patch_labels": list(PATCH_LABELS),
        }
        (tmp / "vision" / "geolens_pretrain.json").write_text(
            json.dumps(record, indent=2), encoding="utf-8"
        )
    return out_dir
