"""Retrieved descriptions for training images, computed once before the first step.

Every distinct training image is embedded by the CLIP image tower and searched in the knowledge
base (paper III-A1), exactly as :class:`engine.retrieval.Retriever` does at inference. With
``exclude_same_source`` the descriptions written from the image's own scene are skipped (source
``synthetic:<seed>`` for a sample ``synthetic:<seed>:...``; see
:func:`engine.training.data.source_of`): at test time the model never sees its own caption.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from engine.data.instructions import Sample
from engine.training.data import before_retrieval_key, retrieval_key, source_of

__all__ = ["load_embedder", "retrieve_for_samples"]

logger = logging.getLogger(__name__)

EXTRA_CANDIDATES = 16  # searched beyond top_k so that excluded descriptions can be skipped


def load_embedder(section, device: str = "cpu"):
    """The CLIP embedder a :class:`~engine.training.config.RetrievalSection` names."""
    from engine.retrieval import ClipEmbedder

    if section.embedder_dir is not None:
        return ClipEmbedder.load(section.embedder_dir, device)
    checkpoint = str(section.clip_checkpoint) if section.clip_checkpoint else None
    return ClipEmbedder.from_pretrained(section.clip_arch, checkpoint, device)


def retrieve_for_samples(
    samples: Sequence[Sample], section, batch_size: int = 64
) -> dict[str, tuple[str, ...]]:
    """Top-k description texts per distinct image of ``samples`` (key: image path or id)."""
    from engine.retrieval import KnowledgeBase

    embedder = load_embedder(section)
    kb = KnowledgeBase.load(section.kb_dir, embedder)
    firsts: dict[str, Sample] = {}
    loaders = {}
    for sample in samples:
        key = retrieval_key(sample)
        if key not in firsts:
            firsts[key], loaders[key] = sample, sample.load_image
        if sample.task.is_change:  # the before image of a pair is searched too
            key = before_retrieval_key(sample)
            if key not in firsts:
                firsts[key], loaders[key] = sample, sample.load_before_image
    keys = list(firsts)
    out: dict[str, tuple[str, ...]] = {}
    depth = section.top_k + (EXTRA_CANDIDATES if section.exclude_same_source else 0)
    for start in range(0, len(keys), batch_size):
        chunk = keys[start : start + batch_size]
        vectors = embedder.embed_images([loaders[k]() for k in chunk])
        for key, found in zip(chunk, kb.search(vectors, min(depth, len(kb)))):
            own = source_of(firsts[key])
            kept = [e.text for e in found if not (section.exclude_same_source and e.source == own)]
            out[key] = tuple(kept[: section.top_k])
    kb.close()
    logger.info("retrieved descriptions for %d training images", len(out))
    return out
