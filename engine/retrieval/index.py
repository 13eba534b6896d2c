"""faiss indexes over L2-normalised embeddings: which kind, its parameters, build, tune, search.

Inner product on unit vectors is cosine similarity. :data:`INDEX_KINDS` is the registry:

``flat``      exact ``IndexFlatIP``; 4·dim bytes a vector, search time linear in N
              (~180 ms a query at 1M x 512 on 2 cores).
``ivf-flat``  ``IndexIVFFlat``: spherical k-means into ``nlist`` lists, a query scans the
              ``nprobe`` lists nearest to it; exact distances inside them, same memory as flat.
``ivf-sq8``   ``IndexIVFScalarQuantizer`` with 8-bit codes: a quarter of the memory; the
              quantisation caps recall@5 at about 0.99.
``hnsw``      ``IndexHNSWFlat`` (M=32): fast queries, but a 1M build takes far longer on 2 cores.
``auto``      ``flat`` below :data:`FLAT_MAX_VECTORS`, else ``ivf-flat``.

IVF parameters: ``nlist`` = the power of two nearest 4·sqrt(N) (4096 at 1M; at most N/39),
spherical k-means (10 iterations) on max(20·nlist, 50k) sampled vectors (20 a list gave the
same recall as 40 at 1M, in half the time); ``nprobe`` is then tuned on the data itself:
the smallest power of two whose recall@5 against exact search, for 256 database vectors used
as leave-one-out queries, reaches the target (0.98 by default, margin over the 0.95 contract),
and at least :data:`MIN_NPROBE`. Queries that sit off the text distribution (CLIP image
embeddings have a modality gap to text embeddings) can need more: ``search(..., nprobe=)``
overrides it per call. A single query runs on one OpenMP thread: on this shared 2-core machine,
under load, a 2-thread team made a 100k Flat query 3-5x slower (72 ms vs 14-24 ms: the team
waits for a descheduled thread) and gave IVF a longer tail, with no gain when idle.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from engine.errors import ConfigError, InputError
from engine.retrieval._deps import import_faiss

__all__ = [
    "FLAT_MAX_VECTORS",
    "INDEX_KINDS",
    "IndexSpec",
    "build_index",
    "choose_spec",
    "exact_top_k",
    "search_index",
    "suggest_nlist",
    "tune_search",
]

log = logging.getLogger(__name__)

FLAT_MAX_VECTORS = 50_000  # "auto" uses exact search below this many vectors
MIN_NPROBE = 8
PLATEAU_GAIN = 0.002  # a doubling of nprobe that gains less recall than this ends tuning
TRAIN_POINTS_PER_LIST = 20  # measured at 1M: same recall as 40, half the k-means time
TRAIN_MIN_POINTS = 50_000  # small indexes train on more points per list; it is cheap there
KMEANS_ITERATIONS = 10
HNSW_M = 32
INDEX_KINDS = ("auto", "flat", "ivf-flat", "ivf-sq8", "hnsw")


@dataclass(frozen=True)
class IndexSpec:
    """A concrete index kind and its parameters (``nprobe`` / ``ef_search`` are search-time)."""

    kind: str
    nlist: int = 0
    nprobe: int = 0
    hnsw_m: int = 0
    ef_search: int = 0

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS or self.kind == "auto":
            raise ConfigError(f"index kind must be one of {INDEX_KINDS[1:]}, got {self.kind!r}")
        if self.kind.startswith("ivf") and not (self.nlist >= 1 and 1 <= self.nprobe <= self.nlist):
            raise ConfigError(f"IVF needs nlist >= 1 and 1 <= nprobe <= nlist, got {self}")
        if self.kind == "hnsw" and not (self.hnsw_m >= 4 and self.ef_search >= 1):
            raise ConfigError(f"HNSW needs hnsw_m >= 4 and ef_search >= 1, got {self}")

    @property
    def is_ivf(self) -> bool:
        return self.kind.startswith("ivf")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, record: dict) -> IndexSpec:
        return cls(**record)

    def describe(self) -> str:
        """Short human form, e.g. ``ivf-flat(nlist=4096, nprobe=64)``."""
        if self.is_ivf:
            return f"{self.kind}(nlist={self.nlist}, nprobe={self.nprobe})"
        if self.kind == "hnsw":
            return f"hnsw(M={self.hnsw_m}, efSearch={self.ef_search})"
        return "flat(exact)"


def suggest_nlist(n_vectors: int) -> int:
    """Power of two nearest 4*sqrt(N), capped so each list gets >= 39 training points."""
    nlist = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(n_vectors))))
    return int(max(1, min(nlist, n_vectors // 39, 65_536)))


def choose_spec(kind: str, n_vectors: int) -> IndexSpec:
    """The spec for ``kind`` (:data:`INDEX_KINDS`) at ``n_vectors``; nprobe is set by tuning."""
    if kind not in INDEX_KINDS:
        raise ConfigError(f"unknown index kind {kind!r}; use one of: {', '.join(INDEX_KINDS)}")
    if kind == "auto":
        kind = "flat" if n_vectors < FLAT_MAX_VECTORS else "ivf-flat"
    if kind.startswith("ivf"):
        nlist = suggest_nlist(n_vectors)
        return IndexSpec(kind, nlist=nlist, nprobe=min(nlist, MIN_NPROBE))
    if kind == "hnsw":
        return IndexSpec(kind, hnsw_m=HNSW_M, ef_search=64)
    return IndexSpec(kind)


def build_index(vectors: np.ndarray, spec: IndexSpec, *, seed: int = 0) -> Any:
    """A faiss index of ``spec`` holding ``vectors`` (N, dim) float32 unit rows, ids 0..N-1."""
    faiss = import_faiss()
    vectors = _as_matrix(vectors)
    dim = vectors.shape[1]
    if spec.kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif spec.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    else:
        index = _untrained_ivf(faiss, spec, dim)
        train_ivf(index, vectors, seed=seed)
    apply_search_params(index, spec)
    index.add(vectors)
    return index


def _untrained_ivf(faiss: Any, spec: IndexSpec, dim: int) -> Any:
    quantizer = faiss.IndexFlatIP(dim)
    if spec.kind == "ivf-sq8":
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, spec.nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
    else:
        index = faiss.IndexIVFFlat(quantizer, dim, spec.nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = KMEANS_ITERATIONS
    index.cp.spherical = True  # centroids re-normalised: k-means for cosine
    index.cp.min_points_per_centroid = TRAIN_POINTS_PER_LIST  # 20 a list is enough (no warning)
    return index


def train_ivf(index: Any, vectors: np.ndarray, *, seed: int = 0) -> None:
    """Train the coarse quantizer (and SQ codec) on max(20·nlist, 50k) rows of ``vectors``."""
    n_train = min(len(vectors), max(TRAIN_POINTS_PER_LIST * index.nlist, TRAIN_MIN_POINTS))
    rows = np.sort(np.random.default_rng(seed).choice(len(vectors), n_train, replace=False))
    index.cp.seed = seed
    index.train(np.ascontiguousarray(vectors[rows]))


def apply_search_params(index: Any, spec: IndexSpec) -> None:
    """Set nprobe / efSearch on ``index`` from ``spec``."""
    if spec.is_ivf:
        index.nprobe = spec.nprobe
    elif spec.kind == "hnsw":
        index.hnsw.efSearch = spec.ef_search


def search_index(
    index: Any,
    queries: np.ndarray,
    k: int,
    *,
    spec: IndexSpec | None = None,
    nprobe: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(Q, k) float32 scores and (Q, k) int64 ids, best first; id -1 where fewer than k found.

    ``nprobe`` overrides the IVF probe count for this call (ignored for flat / HNSW specs).
    A single query runs on one OpenMP thread (see the module docstring).
    """
    queries = _as_matrix(queries)
    if queries.shape[1] != index.d:
        raise InputError(
            f"query vectors have dimension {queries.shape[1]}, the index holds {index.d}-d vectors"
        )
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    params = None
    if nprobe is not None and spec is not None and spec.is_ivf:
        if nprobe < 1:
            raise InputError(f"nprobe must be >= 1, got {nprobe}")
        params = import_faiss().SearchParametersIVF(nprobe=int(nprobe))
    with _omp_threads(1 if len(queries) == 1 else None):
        return index.search(queries, k, params=params)


@contextlib.contextmanager
def _omp_threads(n_threads: int | None) -> Iterator[None]:
    """OpenMP team size for this thread's faiss calls in the block (None: leave as is).

    The setting is an OpenMP per-thread ICV, so other Python threads searching at the same
    time keep theirs; the previous value is restored afterwards.
    """
    if n_threads is None:
        yield
        return
    faiss = import_faiss()
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n_threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def exact_top_k(
    vectors: np.ndarray, queries: np.ndarray, k: int, block_rows: int = 65_536
) -> np.ndarray:
    """(Q, k) int64 ids of the exact inner-product top-k, by blocked numpy matmul (no index)."""
    k = min(k, len(vectors))
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_ids = np.full((len(queries), 0), -1, dtype=np.int64)
    for start in range(0, len(vectors), block_rows):
        scores = queries @ vectors[start : start + block_rows].T  # (Q, B)
        top = (
            np.argpartition(-scores, k - 1, axis=1)[:, :k]
            if scores.shape[1] > k
            else np.indices(scores.shape)[1]
        )
        merged_scores = np.concatenate(
            [best_scores, np.take_along_axis(scores, top, axis=1)], axis=1
        )  # (Q, <=2k)
        merged_ids = np.concatenate([best_ids, top + start], axis=1)
        keep = np.argsort(-merged_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(merged_scores, keep, axis=1)
        best_ids = np.take_along_axis(merged_ids, keep, axis=1)
    return best_ids


def tune_search(
    index: Any,
    spec: IndexSpec,
    vectors: np.ndarray,
    *,
    target_recall: float = 0.98,
    k: int = 5,
    seed: int = 0,
) -> tuple[IndexSpec, float]:
    """The cheapest nprobe / efSearch reaching ``target_recall`` at ``k``, and the recall measured.

    Leave-one-out queries: 256 random database rows, each row's own id removed from both the
    exact and the approximate result. If recall stops improving before the target (the SQ8
    quantisation ceiling), the setting where it levelled off is kept instead of scanning all lists.
    """
    if spec.kind == "flat":
        return spec, 1.0
    rows = np.random.default_rng([seed, 7]).choice(
        len(vectors), min(256, len(vectors)), replace=False
    )
    queries = np.ascontiguousarray(vectors[rows])
    truth = _without_self(exact_top_k(vectors, queries, k + 1), rows, k)
    best: tuple[IndexSpec, float] | None = None
    for value in _candidates(spec):
        candidate = _with_search_value(spec, value)
        apply_search_params(index, candidate)
        recall = recall_at_k(_without_self(search_index(index, queries, k + 1)[1], rows, k), truth)
        if best is not None and recall < target_recall and recall - best[1] < PLATEAU_GAIN:
            log.warning(
                "recall@%d levels off at %.3f below the %.2f target (%s)",
                k,
                best[1],
                target_recall,
                spec.kind,
            )
            break
        best = (candidate, recall)
        if recall >= target_recall:
            break
    assert best is not None
    apply_search_params(index, best[0])
    log.info(
        "tuned %s: recall@%d %.3f on %d leave-one-out queries",
        best[0].describe(),
        k,
        best[1],
        len(rows),
    )
    return best


def _without_self(ids: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) ids: each query row's own id dropped from its (Q, k+1) result."""
    return np.stack([row_ids[row_ids != row][:k] for row_ids, row in zip(ids, rows, strict=True)])


def _candidates(spec: IndexSpec) -> list[int]:
    if spec.is_ivf:
        powers = [2**i for i in range(int(math.log2(spec.nlist)) + 1)]
        return [p for p in powers if p >= min(MIN_NPROBE, spec.nlist)] + (
            [spec.nlist] if spec.nlist not in powers else []
        )
    return [16, 32, 64, 128, 256, 512]


def _with_search_value(spec: IndexSpec, value: int) -> IndexSpec:
    if spec.is_ivf:
        return IndexSpec(spec.kind, nlist=spec.nlist, nprobe=value)
    return IndexSpec(spec.kind, hnsw_m=spec.hnsw_m, ef_search=value)


def recall_at_k(found_ids: np.ndarray, true_ids: np.ndarray) -> float:
    """Mean fraction of each row's true ids found, both (Q, k)."""
    hits = sum(len(np.intersect1d(f, t)) for f, t in zip(found_ids, true_ids, strict=True))
    return hits / true_ids.size


def _as_matrix(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise InputError(
            f"expected a non-empty (N, dim) array of embeddings, got shape {vectors.shape}"
        )
    if not np.issubdtype(vectors.dtype, np.floating):
        raise InputError(f"embeddings must be floating point, got dtype {vectors.dtype}")
    return np.ascontiguousarray(vectors, dtype=np.float32)
