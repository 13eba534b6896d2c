"""faiss index kinds: exact agreement with numpy, ANN recall on clustered embeddings, parameters."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import ConfigError, InputError
from engine.retrieval.index import (
    FLAT_MAX_VECTORS,
    IndexSpec,
    build_index,
    choose_spec,
    exact_top_k,
    search_index,
    suggest_nlist,
    tune_search,
)
from tests.engine.retrieval_helpers import ClusteredEmbeddings, recall_at_k
from tests.engine.retrieval_helpers import exact_top_k as numpy_top_k


@pytest.fixture(scope="module")
def clustered() -> tuple[np.ndarray, np.ndarray]:
    """30k database + 300 fresh query vectors, 256-d, 300 topics (noise as in the benchmark)."""
    data = ClusteredEmbeddings(dim=256, n_clusters=300, noise=2.0, seed=3)
    return data.sample(30_000, stream=1), data.sample(300, stream=2)


@pytest.fixture(scope="module")
def ivf_flat(clustered: tuple[np.ndarray, np.ndarray]) -> tuple[object, IndexSpec]:
    vectors, _ = clustered
    spec = choose_spec("ivf-flat", len(vectors))
    return build_index(vectors, spec), spec


def test_flat_top_k_equals_numpy_brute_force() -> None:
    data = ClusteredEmbeddings(dim=48, n_clusters=50, noise=2.0, seed=1)
    vectors, queries = data.sample(3000, stream=1), data.sample(40, stream=2)
    index = build_index(vectors, choose_spec("flat", len(vectors)))
    scores, ids = search_index(index, queries, 10)
    np.testing.assert_array_equal(ids, numpy_top_k(vectors, queries, 10))
    np.testing.assert_allclose(
        scores, np.take_along_axis(queries @ vectors.T, ids, axis=1), atol=1e-5
    )
    np.testing.assert_array_equal(exact_top_k(vectors, queries, 10, block_rows=700), ids)


def test_auto_picks_flat_below_threshold_and_ivf_above() -> None:
    assert choose_spec("auto", FLAT_MAX_VECTORS - 1).kind == "flat"
    spec = choose_spec("auto", 1_000_000)
    assert (spec.kind, spec.nlist) == ("ivf-flat", 4096)
    assert suggest_nlist(100_000) == 1024
    assert suggest_nlist(2000) == 2000 // 39  # enough training points per list
    with pytest.raises(ConfigError, match="unknown index kind 'annoy'; use one of: auto, flat"):
        choose_spec("annoy", 10)
    with pytest.raises(ConfigError, match="nprobe <= nlist"):
        IndexSpec("ivf-flat", nlist=16, nprobe=32)


@pytest.mark.parametrize("kind", ["ivf-flat", "ivf-sq8"])
def test_ivf_recall_at_5_reaches_095_on_fresh_queries(
    clustered: tuple[np.ndarray, np.ndarray], ivf_flat: tuple[object, IndexSpec], kind: str
) -> None:
    vectors, queries = clustered
    spec = choose_spec(kind, len(vectors))
    index = ivf_flat[0] if kind == "ivf-flat" else build_index(vectors, spec)
    tuned, tuning_recall = tune_search(index, spec, vectors, target_recall=0.98)
    assert (
        tuning_recall >= 0.95 and tuned.nprobe < tuned.nlist
    )  # it is approximate, not a full scan
    _, found = search_index(index, queries, 5)
    recall = recall_at_k(found, numpy_top_k(vectors, queries, 5))
    assert recall >= 0.95, f"{tuned.describe()}: recall@5 {recall:.3f}"


def test_untuned_small_nprobe_is_measurably_worse(
    clustered: tuple[np.ndarray, np.ndarray], ivf_flat: tuple[object, IndexSpec]
) -> None:
    """The recall test above is not vacuous: one probed list misses neighbours on this data."""
    vectors, queries = clustered
    index, spec = ivf_flat
    _, found = search_index(index, queries, 5, spec=spec, nprobe=1)
    assert recall_at_k(found, numpy_top_k(vectors, queries, 5)) < 0.9


def test_hnsw_recall(clustered: tuple[np.ndarray, np.ndarray]) -> None:
    vectors, queries = clustered
    vectors = vectors[:8_000]
    spec = choose_spec("hnsw", len(vectors))
    index = build_index(vectors, spec)
    tuned, _ = tune_search(index, spec, vectors)
    _, found = search_index(index, queries, 5)
    assert recall_at_k(found, numpy_top_k(vectors, queries, 5)) >= 0.95, tuned.describe()


def test_search_input_errors() -> None:
    vectors = ClusteredEmbeddings(dim=16, n_clusters=4, seed=0).sample(100, stream=1)
    index = build_index(vectors, choose_spec("flat", 100))
    with pytest.raises(InputError, match="dimension 8, the index holds 16-d"):
        search_index(index, np.ones((1, 8), np.float32), 5)
    with pytest.raises(InputError, match="k must be >= 1"):
        search_index(index, vectors[:1], 0)
    with pytest.raises(InputError, match="non-empty"):
        build_index(np.zeros((0, 16), np.float32), choose_spec("flat", 0))


def test_single_query_runs_single_threaded_and_restores_the_setting() -> None:
    import faiss

    data = ClusteredEmbeddings(dim=32, n_clusters=10, noise=2.0, seed=1)
    vectors, queries = data.sample(5000, stream=1), data.sample(8, stream=2)
    index = build_index(vectors, choose_spec("flat", len(vectors)))
    before = faiss.omp_get_max_threads()
    singles = [search_index(index, query[None, :], 5)[1][0] for query in queries]
    assert faiss.omp_get_max_threads() == before
    np.testing.assert_array_equal(np.stack(singles), search_index(index, queries, 5)[1])
