"""Shared helpers for the retrieval tests and ``benchmarks/bench_retrieval.py``.

* :class:`ClusteredEmbeddings`: synthetic unit vectors with a two-level cluster structure, the
  stand-in for millions of CLIP text embeddings (which form tight topic clusters). Database and
  query vectors come from the same clusters but with fresh noise, so queries are never copies of
  database rows. Generation is chunked into a preallocated array, so 1M x 512 float32 needs its
  2 GiB and nothing more.
* :func:`tiny_clip_config`: an open_clip model config for a CLIP with 1-layer, 32-wide towers that
  uses open_clip's bundled BPE tokenizer (no download), for tests that need real towers fast.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ClusteredEmbeddings", "exact_top_k", "recall_at_k", "tiny_clip_config"]


@dataclass(frozen=True)
class ClusteredEmbeddings:
    """A mixture of ``n_clusters`` topics grouped under ``n_groups`` themes on the unit sphere.

    ``noise`` is the norm of the per-point perturbation relative to the (unit) topic centre:
    1.0 gives a mean cosine of about 0.7 between a point and its topic centre.
    """

    dim: int = 512
    n_clusters: int = 1000
    n_groups: int = 64
    noise: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dim < 2 or self.n_clusters < 1 or self.n_groups < 1 or self.noise < 0:
            raise ValueError(f"bad ClusteredEmbeddings parameters: {self}")

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """(n_clusters, dim) float32 unit topic centres and (n_clusters,) float64 topic weights."""
        rng = np.random.default_rng(self.seed)
        groups = _unit(rng.standard_normal((self.n_groups, self.dim), dtype=np.float32))
        member_of = rng.integers(0, self.n_groups, self.n_clusters)
        spread = rng.standard_normal((self.n_clusters, self.dim), dtype=np.float32) / np.sqrt(
            self.dim
        )
        centres = _unit(groups[member_of] + 0.8 * spread)
        weights = 1.0 / np.arange(1, self.n_clusters + 1) ** 0.5  # Zipf-like topic sizes
        return centres, weights / weights.sum()

    def sample(self, n: int, stream: int, chunk: int = 65_536) -> np.ndarray:
        """``n`` unit vectors (n, dim) float32; ``stream`` picks an independent noise stream."""
        centres, weights = self.centres()
        out = np.empty((n, self.dim), dtype=np.float32)
        rng = np.random.default_rng([self.seed, stream])
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            topic = rng.choice(self.n_clusters, size=stop - start, p=weights)
            noise = rng.standard_normal((stop - start, self.dim), dtype=np.float32)
            noise *= np.float32(self.noise / np.sqrt(self.dim))
            noise += centres[topic]
            out[start:stop] = _unit(noise)
        return out


def _unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def exact_top_k(database: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) int64 ids of the exact inner-product top-k by numpy brute force, chunked."""
    ids = np.empty((len(queries), k), dtype=np.int64)
    rows = max(1, min(256, 32_000_000 // max(1, len(database))))  # keeps (rows, N) under 128 MiB
    for start in range(0, len(queries), rows):
        scores = queries[start : start + rows] @ database.T  # (rows, N)
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        ids[start : start + rows] = np.take_along_axis(part, order, axis=1)
    return ids


def recall_at_k(found_ids: np.ndarray, true_ids: np.ndarray) -> float:
    """Mean fraction of the true top-k ids present in the found top-k ids, both (Q, k)."""
    pairs = zip(found_ids, true_ids, strict=True)
    hits = [len(set(f.tolist()) & set(t.tolist())) for f, t in pairs]
    return float(np.mean(hits) / true_ids.shape[1])


def tiny_clip_config(embed_dim: int = 32, image_size: int = 32) -> dict:
    """An open_clip ``CLIP`` config with 1-layer towers; text side fits open_clip's tokenizer."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {
            "image_size": image_size,
            "layers": 1,
            "width": 32,
            "patch_size": 8,
            "head_width": 16,
        },
        "text_cfg": {
            "context_length": 32,
            "vocab_size": 49408,
            "width": 32,
            "heads": 2,
            "layers": 1,
        },
    }
