"""Retrieval benchmark: exact Flat vs the ANN index GeoLens picks, plus a real caption-corpus build.

Part 1, synthetic: N clustered unit vectors (512-d, N/100 topics, the same generator as the
tests; queries are fresh samples, never database rows). For each N and index kind it measures
build time (k-means training + adding, then nprobe tuning), recall@5 against exact search,
single-query latency p50/p95, a batch of 64 queries, the index file size and the process RSS
growth; then the whole knowledge-base write for the auto index (texts.jsonl + index + manifest
with checksums, ``KnowledgeBase.from_vectors``), its load time and Evidence-returning query
latency. Ratios are against Flat measured in the same run.

Part 2, real: the four caption corpora in ../shared/data/captions (81,460 captions) built into a
knowledge base with a tiny random open_clip text tower (timing only; the model is meaningless).

    python benchmarks/bench_retrieval.py                        # 100k and 1M (about 10 minutes)
    python benchmarks/bench_retrieval.py --sizes 100000 --kinds flat ivf-flat --skip-captions
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from engine.retrieval import ClipEmbedder, Description, KnowledgeBase, Retriever, read_corpus  # noqa: E402
from engine.retrieval.index import (  # noqa: E402
    IndexSpec,
    build_index,
    choose_spec,
    exact_top_k,
    search_index,
    tune_search,
)
from tests.engine.retrieval_helpers import ClusteredEmbeddings, recall_at_k, tiny_clip_config  # noqa: E402

DIM = 512
K = 5


@dataclass
class Row:
    n: int
    spec: IndexSpec
    build_s: float
    tune_s: float
    recall5: float
    p50_ms: float
    p95_ms: float
    batch64_ms: float
    file_mib: float
    rss_mib: float


def rss_mib() -> float:
    """Resident set size of this process in MiB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def single_latencies_ms(index: object, queries: np.ndarray, n: int) -> np.ndarray:
    times = []
    for query in queries[:n]:
        start = time.perf_counter()
        search_index(index, query[None, :], K)
        times.append(time.perf_counter() - start)
    return np.array(times) * 1000


def batch64_ms(index: object, queries: np.ndarray, repeats: int = 3) -> float:
    batch = np.ascontiguousarray(queries[:64])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        search_index(index, batch, K)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000


def measure(
    kind: str, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, scratch: Path
) -> Row:
    import faiss

    gc.collect()
    rss_before = rss_mib()
    spec = choose_spec(kind, len(vectors))
    start = time.perf_counter()
    index = build_index(vectors, spec)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    spec, _ = tune_search(index, spec, vectors)
    tune_s = time.perf_counter() - start
    rss_growth = rss_mib() - rss_before
    recall = recall_at_k(search_index(index, queries, K)[1], truth)
    n_single = 30 if spec.kind == "flat" and len(vectors) > 200_000 else 200
    lat = single_latencies_ms(index, queries, n_single)
    path = scratch / f"{kind}.faiss"
    faiss.write_index(index, str(path))
    file_mib = path.stat().st_size / 2**20
    path.unlink()
    lat50, lat95 = float(np.percentile(lat, 50)), float(np.percentile(lat, 95))
    batch = batch64_ms(index, queries)
    row = Row(
        len(vectors), spec, build_s, tune_s, recall, lat50, lat95, batch, file_mib, rss_growth
    )
    log(
        f"  {spec.describe()}: build {build_s:.1f}s, tune {tune_s:.1f}s, recall@5 {recall:.3f}, "
        f"p50 {lat50:.2f} ms (load average {os.getloadavg()[0]:.1f})"
    )
    del index
    gc.collect()
    return row


def log(message: str) -> None:
    print(message, flush=True)


def print_markdown(header: list[str], rows: list[list[str]]) -> None:
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def print_table(rows: list[Row]) -> None:
    flat = {r.n: r for r in rows if r.spec.kind == "flat"}
    table = []
    for r in rows:
        base = flat.get(r.n)
        ratios = ["-", "-", "-"]
        if base is not None:
            ratios = [
                f"{base.p50_ms / r.p50_ms:.0f}x",
                f"{r.build_s / base.build_s:.1f}x",
                f"{r.file_mib / base.file_mib:.2f}x",
            ]
        numbers = [r.build_s, r.tune_s, r.recall5, r.p50_ms, r.p95_ms, r.batch64_ms]
        formats = [".1f", ".1f", ".3f", ".2f", ".2f", ".1f"]
        cells = [format(value, fmt) for value, fmt in zip(numbers, formats, strict=True)]
        table.append(
            [
                f"{r.n:,}",
                r.spec.describe(),
                *cells,
                f"{r.file_mib:.0f}",
                f"{r.rss_mib:.0f}",
                *ratios,
            ]
        )
    header = ["N", "index", "build s", "tune s", "recall@5", "p50 ms", "p95 ms", "batch64 ms"]
    header += ["file MiB", "RSS +MiB", "p50 speed-up vs Flat", "build vs Flat", "size vs Flat"]
    print_markdown(header, table)


def bench_kb_write(vectors: np.ndarray, queries: np.ndarray, scratch: Path) -> None:
    """The full knowledge-base path for the auto index: write, verify-on-load, Evidence queries."""
    texts = [f"synthetic description {i}" for i in range(len(vectors))]
    descriptions = [Description(text, "synthetic") for text in texts]
    out = scratch / "kb"
    start = time.perf_counter()
    kb = KnowledgeBase.from_vectors(descriptions, vectors, "synthetic-512d", out, overwrite=True)
    build_s = time.perf_counter() - start
    kb.close()
    del kb, descriptions, texts  # free the in-memory index before loading it back
    gc.collect()
    start = time.perf_counter()
    kb = KnowledgeBase.load(out, "synthetic-512d")
    load_s = time.perf_counter() - start
    times = []
    for query in queries[:200]:
        t0 = time.perf_counter()
        kb.search(query, K)
        times.append(time.perf_counter() - t0)
    p50, p95 = np.percentile(times, 50) * 1000, np.percentile(times, 95) * 1000
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 2**20:.0f}" for p in sorted(out.iterdir()))
    log(
        f"\nKnowledgeBase.from_vectors({len(vectors):,} x {DIM}, index auto) -> "
        f"{kb.manifest.index.describe()}"
    )
    log(f"  build + tune + write + checksums: {build_s:.1f} s; load + sha256 check: {load_s:.1f} s")
    log(f"  kb.search (returns Evidence) p50 {p50:.2f} ms, p95 {p95:.2f} ms; files MiB: {sizes}")
    kb.close()


def bench_synthetic(sizes: list[int], kinds: list[str], n_queries: int, scratch: Path) -> None:
    rows = []
    for n in sizes:
        data = ClusteredEmbeddings(dim=DIM, n_clusters=max(100, n // 100), noise=2.0, seed=0)
        start = time.perf_counter()
        vectors, queries = data.sample(n, stream=1), data.sample(n_queries, stream=2)
        log(f"\nN={n:,}: {vectors.nbytes / 2**30:.2f} GiB in {time.perf_counter() - start:.1f}s")
        start = time.perf_counter()
        truth = exact_top_k(vectors, queries, K)
        log(f"  exact top-{K} truth for {n_queries} queries: {time.perf_counter() - start:.1f}s")
        for kind in kinds:
            if kind == "hnsw" and n > 200_000:
                print("  hnsw skipped above 200k (build takes far longer than IVF on 2 cores)")
                continue
            rows.append(measure(kind, vectors, queries, truth, scratch))
        if n == max(sizes):
            bench_kb_write(vectors, queries, scratch)
        del vectors
        gc.collect()
    print_table(rows)


def bench_captions(scratch: Path) -> None:
    captions = REPO_ROOT.parent / "shared" / "data" / "captions"
    if not captions.is_dir():
        print(f"\ncaption corpus not found at {captions}; skipped")
        return
    start = time.perf_counter()
    descriptions = read_corpus([captions / name for name in ("rsicd", "rsitmd", "ucm", "sydney")])
    read_s = time.perf_counter() - start
    embedder = ClipEmbedder.from_config(tiny_clip_config(), seed=0)
    results = {}
    for kind in ("flat", "ivf-flat"):
        start = time.perf_counter()
        kb = KnowledgeBase.build(
            descriptions,
            embedder,
            scratch / f"captions-{kind}",
            index=kind,
            batch_size=512,
            overwrite=True,
            progress=False,
        )
        build_s = time.perf_counter() - start
        retriever = Retriever(kb, embedder)
        times = []
        for text in (
            "a river",
            "many planes are parked",
            "dense residential area",
            "a baseball field",
        ) * 10:
            t0 = time.perf_counter()
            retriever.retrieve_for_text(text, K)
            times.append(time.perf_counter() - t0)
        p50 = float(np.median(times)) * 1000
        results[kind] = (
            build_s,
            kb.manifest.index.describe(),
            len(kb),
            kb.manifest.duplicates_dropped,
            p50,
        )
        kb.close()
    log(f"\nReal captions: read {len(descriptions):,} captions in {read_s:.1f}s")
    flat_build_s = results["flat"][0]
    rows = [
        [
            spec,
            f"{build_s:.1f}",
            f"{count:,}",
            f"{dropped:,}",
            f"{p50:.2f}",
            f"{build_s / flat_build_s:.2f}x",
        ]
        for build_s, spec, count, dropped, p50 in results.values()
    ]
    header = ["index", "build s (embed + index + write)", "unique texts", "duplicates dropped"]
    print_markdown(header + ["text query p50 ms (embed + search)", "build vs Flat"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--kinds", nargs="+", default=["flat", "ivf-flat", "ivf-sq8", "hnsw"])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--skip-captions", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import faiss
    import torch

    log(
        f"machine: {os.cpu_count()} CPUs, faiss {faiss.__version__} "
        f"({faiss.omp_get_max_threads()} OpenMP threads), torch {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f} (machine shared with other engineers)"
    )
    with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as scratch:
        bench_synthetic(args.sizes, args.kinds, args.queries, Path(scratch))
        if not args.skip_captions:
            bench_captions(Path(scratch))


if __name__ == "__main__":
    main()
