"""A tiny CLIP for the demo's semantic retriever, trained contrastively on synthetic crops.

The retriever (paper III-A1) needs an image tower and a text tower that share one embedding
space. Real deployments use RemoteCLIP / GeoRSCLIP checkpoints; the demo trains its own small
open_clip ``CLIP`` (ViT image tower, transformer text tower with open_clip's bundled BPE) on the
training crops of the synthetic dataset paired with their scene captions, with the symmetric
InfoNCE loss of CLIP. The token-embedding table starts at zero, so rows of tokens the captions
never use stay exactly zero (they get zero gradients) and the shipped file compresses well.
The result is saved with :meth:`engine.retrieval.ClipEmbedder.save`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.data.instructions import read_jsonl

__all__ = ["CLIP_CONFIG", "ClipTrainConfig", "caption_pairs", "train_clip"]

logger = logging.getLogger(__name__)

CLIP_CONFIG = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 64, "layers": 3, "width": 128, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 48, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 3},
}


@dataclass(frozen=True)
class ClipTrainConfig:
    steps: int = 800
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.05
    seed: int = 0


def caption_pairs(train_jsonl: Path) -> list[tuple[str, str]]:
    """(image path, scene caption) of every training crop (``caption_scene`` samples)."""
    return [
        (s.image_path, s.answer)
        for s in read_jsonl(train_jsonl)
        if s.question_type == "caption_scene" and s.image_path is not None
    ]


def _all_pixels(embedder, paths: list[str]):
    """Every image through the embedder's own preprocess, once: (N, 3, S, S) float16."""
    import torch
    from PIL import Image

    return torch.stack([embedder.preprocess(Image.open(p).convert("RGB")).half() for p in paths])


def train_clip(pairs: list[tuple[str, str]], config: ClipTrainConfig = ClipTrainConfig()):
    """Train a :data:`CLIP_CONFIG` CLIP on ``pairs``; returns the :class:`ClipEmbedder`."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from engine.retrieval import ClipEmbedder

    if len(pairs) < config.batch_size:
        raise ValueError(f"{len(pairs)} caption pairs are fewer than one batch")
    embedder = ClipEmbedder.from_config(CLIP_CONFIG, seed=config.seed, name="geolens-demo-clip")
    model = embedder.model
    with torch.no_grad():
        model.token_embedding.weight.zero_()  # unused vocabulary rows stay zero
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    rng = np.random.default_rng(config.seed)
    pixels = _all_pixels(embedder, [p for p, _ in pairs])  # (N, 3, 64, 64)
    tokens = embedder.tokenizer([c for _, c in pairs])  # (N, ctx)
    for step in tqdm(range(config.steps), desc="train demo CLIP"):
        lr = config.lr * min(1.0, (step + 1) / config.warmup_steps)
        lr *= 0.5 * (1 + math.cos(math.pi * step / config.steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        index = rng.choice(len(pairs), config.batch_size, replace=False)
        chosen = [pairs[i] for i in index]
        images = pixels[torch.from_numpy(index)].float()  # (B, 3, 64, 64)
        texts = tokens[torch.from_numpy(index)]  # (B, ctx)
        image_emb = F.normalize(model.encode_image(images), dim=-1)  # (B, E)
        text_emb = F.normalize(model.encode_text(texts), dim=-1)  # (B, E)
        logits = model.logit_scale.exp() * image_emb @ text_emb.T  # (B, B)
        # identical captions in a batch are positives too (soft targets over equal texts)
        same = torch.tensor([[a == b for _, b in chosen] for _, a in chosen], dtype=torch.float32)
        targets = same / same.sum(dim=1, keepdim=True)
        loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 100 == 0:
            logger.info("clip step %d loss %.4f", step, loss.item())
    model.eval()
    return embedder
