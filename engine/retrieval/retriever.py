"""The semantic retriever (paper III-A1, Fig. 2): image or text in, top-k descriptions out.

The image tower embeds the crop, the knowledge base returns the descriptions whose text
embeddings have the highest cosine similarity, as :class:`~engine.types.Evidence` the app shows
and the prompter consumes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.errors import InputError
from engine.retrieval.embedder import ClipEmbedder
from engine.retrieval.knowledge_base import KnowledgeBase, check_model
from engine.types import Evidence

__all__ = ["Retriever"]


class Retriever:
    """A knowledge base paired with the embedder that built it (checked on construction)."""

    def __init__(self, kb: KnowledgeBase, embedder: ClipEmbedder) -> None:
        check_model(kb.manifest, embedder, kb.directory)
        self.kb = kb
        self.embedder = embedder

    def retrieve_for_image(self, image: np.ndarray, k: int) -> list[Evidence]:
        """Top-``k`` descriptions for one RGB uint8 (H, W, 3) image, best first."""
        return self.retrieve_for_images([image], k)[0]

    def retrieve_for_images(self, images: Sequence[np.ndarray], k: int) -> list[list[Evidence]]:
        """Top-``k`` descriptions for each image, one batched forward pass and one index search."""
        _check_k(k)
        if len(images) == 0:
            return []
        return self.kb.search(self.embedder.embed_images(images), k)

    def retrieve_for_text(self, text: str, k: int) -> list[Evidence]:
        """Top-``k`` descriptions for a text query (text-to-text, same tower as the KB)."""
        _check_k(k)
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"the text query must be a non-blank string, got {text!r}")
        return self.kb.search(self.embedder.embed_texts([text]), k)[0]


def _check_k(k: int) -> None:
    if not isinstance(k, int) or k < 1:
        raise InputError(
            f"k (how many descriptions to retrieve) must be an integer >= 1, got {k!r}"
        )
