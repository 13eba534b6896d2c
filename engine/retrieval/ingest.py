"""From descriptions to stored vectors: de-duplicate, embed in chunks, build and save the index.

Used by :class:`~engine.retrieval.knowledge_base.KnowledgeBase` inside its all-or-nothing
directory writes. Descriptions stream through in chunks of :data:`CHUNK`: each chunk's new texts
are appended to ``texts.jsonl`` and embedded, so memory holds the vectors, not the corpus twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import CorpusError, InputError
from engine.retrieval._deps import import_faiss
from engine.retrieval.corpus import Description
from engine.retrieval.embedder import ClipEmbedder
from engine.retrieval.index import build_index, choose_spec, tune_search
from engine.retrieval.manifest import INDEX_FILE, Manifest, utc_now
from engine.retrieval.texts import dedup_key, write_descriptions

__all__ = [
    "CHUNK",
    "batched",
    "drop_seen",
    "embed_unique",
    "save_index",
    "stored_vectors",
    "unit_rows",
    "write_index_and_manifest",
]

log = logging.getLogger(__name__)

CHUNK = 8192  # descriptions embedded per streaming step


def embed_unique(
    descriptions: Iterable[Description],
    embedder: ClipEmbedder,
    texts_path: Path,
    seen: set[bytes],
    batch_size: int,
    progress: bool,
    total: int | None,
    append: bool = False,
) -> tuple[np.ndarray, int]:
    """Append unseen descriptions to ``texts_path``; their (n, dim) embeddings, duplicate count."""
    from tqdm import tqdm

    chunks, dropped = [np.zeros((0, embedder.dim), dtype=np.float32)], 0
    with (
        texts_path.open("ab" if append else "wb") as handle,
        tqdm(total=total, unit=" texts", desc="embedding", disable=not progress) as bar,
    ):
        for batch in batched(descriptions, CHUNK):
            fresh = drop_seen(batch, seen)
            dropped += len(batch) - len(fresh)
            write_descriptions(handle, fresh)
            chunks.append(embedder.embed_texts([d.text for d in fresh], batch_size=batch_size))
            bar.update(len(batch))
    vectors = np.concatenate(chunks, axis=0)
    if dropped:
        log.info(
            "dropped %d duplicate descriptions (same text after collapsing whitespace)", dropped
        )
    return vectors, dropped


def drop_seen(batch: list[Description], seen: set[bytes]) -> list[Description]:
    """The descriptions of ``batch`` whose :func:`dedup_key` is not in ``seen`` (which grows)."""
    fresh = []
    for description in batch:
        if not isinstance(description, Description):
            raise CorpusError(
                f"expected Description objects, got {type(description).__name__}: "
                f"{description!r:.80}"
            )
        key = dedup_key(description.text)
        if key not in seen:
            seen.add(key)
            fresh.append(description)
    return fresh


def write_index_and_manifest(
    tmp: Path,
    vectors: np.ndarray,
    model_name: str,
    embedder_spec: dict,
    requested: str,
    dropped: int,
    target_recall: float,
    seed: int,
) -> Manifest:
    """Build, tune and save the index of ``vectors`` in ``tmp``, then the manifest; returns it."""
    if len(vectors) == 0:
        raise CorpusError("the corpus is empty: no descriptions to index")
    spec = choose_spec(requested, len(vectors))
    index = build_index(vectors, spec, seed=seed)
    spec, recall = tune_search(index, spec, vectors, target_recall=target_recall, seed=seed)
    save_index(index, tmp)
    now = utc_now()
    manifest = Manifest(
        embedding_model=model_name,
        dim=int(vectors.shape[1]),
        count=len(vectors),
        index=spec,
        requested_index=requested,
        files={},
        built_at=now,
        updated_at=now,
        embedder=embedder_spec,
        tuned_recall_at_5=round(recall, 4),
        duplicates_dropped=dropped,
    ).with_files(tmp)
    manifest.write(tmp)
    log.info(
        "knowledge base: %d descriptions, %s, tuned recall@5 %.3f",
        len(vectors),
        spec.describe(),
        recall,
    )
    return manifest


def save_index(index: Any, directory: Path) -> None:
    """``faiss.write_index`` to ``directory/index.faiss``."""
    import_faiss().write_index(index, str(directory / INDEX_FILE))


def stored_vectors(index: Any) -> np.ndarray:
    """(ntotal, dim) float32 vectors back out of an index (exact for flat and IVF-flat)."""
    faiss = import_faiss()
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.make_direct_map()
    return index.reconstruct_n(0, index.ntotal)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` as contiguous float32 unit rows; no copy when they already are (2 GiB at 1M)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)  # (N, 1)
    if not np.all(np.isfinite(norms)) or np.any(norms == 0):
        raise InputError("embeddings must be finite and non-zero to be L2-normalised")
    if (
        vectors.dtype == np.float32
        and vectors.flags.c_contiguous
        and np.allclose(norms, 1.0, atol=1e-4)
    ):
        return vectors
    return np.ascontiguousarray(vectors / norms, dtype=np.float32)


def batched(items: Iterable[Description], size: int) -> Iterator[list[Description]]:
    """Consecutive lists of up to ``size`` items."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch
