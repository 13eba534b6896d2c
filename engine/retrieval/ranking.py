"""Rank images by their CLIP similarity to a text: the tile pre-filter of a whole-scene search.

ImageRAG-style: before a scan sends its tiles to the VLM, the retriever's CLIP embeds every tile
once (image tower, batched) and the query once (text tower), and only the tiles most similar to
the query are asked about (``app.scan``). :func:`rank_images_for_text` returns the cosine
similarities; :func:`query_text` puts the query into :data:`TILE_QUERY_TEMPLATE`.

The template: the knowledge base embeds its descriptions as they are, with no prompt template
(``engine.retrieval.ingest``), and the query is embedded the same way by default
(:data:`TILE_QUERY_TEMPLATE` is ``"{query}"``). Measured on the demo scene with the demo CLIP
(docs/BENCHMARKS.md, "Whole-scene scan"): the CLIP-style sentence ``"a satellite image of a
{query}"`` ranked the tiles holding storage tanks *last* (none of them in the top half), the bare
phrase kept them all in the top half. Pass another template where a CLIP was trained with other
wording, and check it on a labelled scene first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.errors import InputError
from engine.retrieval.embedder import ClipEmbedder

__all__ = ["TILE_QUERY_TEMPLATE", "query_text", "rank_images_for_text"]

TILE_QUERY_TEMPLATE = "{query}"  # as the knowledge base embeds its texts: no template


def query_text(query: str, template: str = TILE_QUERY_TEMPLATE) -> str:
    """``template`` with ``{query}`` replaced by the stripped query."""
    if not isinstance(query, str) or not query.strip():
        raise InputError(f"the query must be a non-blank phrase, got {query!r}")
    if "{query}" not in template:
        raise InputError(
            f"the query template must contain '{{query}}', got {template!r}; "
            "e.g. '{query}' or 'an aerial image with {query}s'"
        )
    return template.replace("{query}", query.strip())


def rank_images_for_text(
    embedder: ClipEmbedder,
    images: Sequence[np.ndarray],
    text: str,
    *,
    template: str = TILE_QUERY_TEMPLATE,
    batch_size: int = 32,
) -> np.ndarray:
    """(N,) float32 cosine similarities in [-1, 1] between each RGB uint8 (H, W, 3) image and
    ``template`` filled with ``text`` (one text embedding, images in batches of ``batch_size``).
    Higher means more similar; sort descending for the best first."""
    sentence = query_text(text, template)
    if len(images) == 0:
        return np.zeros((0,), np.float32)
    text_vec = embedder.embed_texts([sentence])[0]  # (dim,)
    image_vecs = embedder.embed_images(images, batch_size=batch_size)  # (N, dim)
    return (image_vecs @ text_vec).astype(np.float32)
