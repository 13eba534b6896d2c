"""KnowledgeBase on disk: round trip, exact search, model checks, dedup, add, atomicity, damage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.errors import CorpusError, InputError, KnowledgeBaseError, ManifestMismatchError
from engine.retrieval import ClipEmbedder, Description, KnowledgeBase, Retriever, read_manifest
from engine.types import Evidence
from tests.engine.retrieval_helpers import ClusteredEmbeddings, exact_top_k, tiny_clip_config

CAPTIONS = [
    "many planes are parked next to a long building in an airport .",
    "a river flows through green farmland .",
    "dense residential area with red roofs .",
    "a bridge crosses the river near the harbour .",
    "some storage tanks beside a factory .",
    "a baseball field next to a parking lot .",
    "several boats are moored in the harbour .",
    "a highway interchange surrounded by trees .",
]


def _descriptions(texts: list[str], source: str = "notes.txt") -> list[Description]:
    return [Description(text, source, "scene", {"line": i + 1}) for i, text in enumerate(texts)]


@pytest.fixture(scope="module")
def embedder() -> ClipEmbedder:
    return ClipEmbedder.from_config(tiny_clip_config(), seed=0)


@pytest.fixture()
def kb(embedder: ClipEmbedder, tmp_path: Path) -> KnowledgeBase:
    with KnowledgeBase.build(_descriptions(CAPTIONS), embedder, tmp_path / "kb") as built:
        yield built


class _FailingTokenizer:
    """A real tokenizer that raises KeyboardInterrupt on call ``fail_at`` (a Ctrl-C mid-build)."""

    def __init__(self, fail_at: int, watch: Path) -> None:
        import open_clip

        self._inner = open_clip.SimpleTokenizer(context_length=32)
        self.calls, self.fail_at, self.watch = 0, fail_at, watch
        self.seen_at_failure: list[str] = []

    def __call__(self, texts: list[str]):
        self.calls += 1
        if self.calls == self.fail_at:
            self.seen_at_failure = sorted(p.name for p in self.watch.rglob("*"))
            raise KeyboardInterrupt
        return self._inner(texts)


def _interrupting(
    embedder: ClipEmbedder, watch: Path, fail_at: int = 3
) -> tuple[ClipEmbedder, _FailingTokenizer]:
    tokenizer = _FailingTokenizer(fail_at, watch)
    wrapped = ClipEmbedder.from_model(
        embedder.model, tokenizer, embedder.preprocess, name=embedder.name
    )
    return wrapped, tokenizer


def test_build_writes_texts_index_and_manifest(kb: KnowledgeBase, embedder: ClipEmbedder) -> None:
    assert sorted(p.name for p in kb.directory.iterdir()) == [
        "index.faiss",
        "manifest.json",
        "texts.jsonl",
    ]
    manifest = read_manifest(kb.directory)
    assert (manifest.embedding_model, manifest.dim, manifest.count) == (
        embedder.name,
        32,
        len(CAPTIONS),
    )
    assert (manifest.index.kind, manifest.normalization, manifest.metric) == (
        "flat",
        "l2",
        "inner_product",
    )
    assert len(manifest.checksum) == 64 and manifest.built_at.endswith("+00:00")
    record = json.loads((kb.directory / "manifest.json").read_text())
    assert record["checksum"] == manifest.checksum and record["embedder"]["kind"] == "config"
    first = json.loads((kb.directory / "texts.jsonl").read_text().splitlines()[0])
    assert first == {
        "text": CAPTIONS[0],
        "source": "notes.txt",
        "level": "scene",
        "metadata": {"line": 1},
    }


def test_load_round_trip_returns_the_same_evidence(
    kb: KnowledgeBase, embedder: ClipEmbedder
) -> None:
    queries = embedder.embed_texts(["boats in a harbour", "an airport"])
    before = kb.search(queries, 3)
    with KnowledgeBase.load(kb.directory, embedder) as loaded:
        assert len(loaded) == len(CAPTIONS) and loaded.description(2).text == CAPTIONS[2]
        assert loaded.search(queries, 3) == before
    top = before[0][0]
    assert isinstance(top, Evidence) and top.source == "notes.txt" and top.level == "scene"
    assert top.metadata["kb_row"] == CAPTIONS.index(top.text) and -1.0 <= top.score <= 1.0


def test_flat_search_matches_numpy_brute_force(tmp_path: Path) -> None:
    data = ClusteredEmbeddings(dim=24, n_clusters=20, noise=2.0, seed=5)
    vectors, queries = data.sample(2000, stream=1), data.sample(25, stream=2)
    texts = [f"description number {i}" for i in range(len(vectors))]
    with KnowledgeBase.from_vectors(
        _descriptions(texts), vectors, "synthetic-24d", tmp_path / "kb"
    ) as kb:
        results = kb.search(queries, 7)
    expected = exact_top_k(vectors, queries, 7)
    assert [[e.metadata["kb_row"] for e in row] for row in results] == expected.tolist()
    scores = np.array([[e.score for e in row] for row in results])
    np.testing.assert_allclose(
        scores, np.take_along_axis(queries @ vectors.T, expected, axis=1), atol=1e-5
    )


def test_retriever_text_image_and_batch(kb: KnowledgeBase, embedder: ClipEmbedder) -> None:
    retriever = Retriever(kb, embedder)
    own = retriever.retrieve_for_text(CAPTIONS[4], k=3)
    assert own[0].text == CAPTIONS[4] and own[0].score == pytest.approx(1.0, abs=1e-5)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
    batch = retriever.retrieve_for_images(images, k=4)
    assert [len(row) for row in batch] == [4, 4, 4]
    single = retriever.retrieve_for_image(images[1], k=4)
    assert [e.text for e in single] == [e.text for e in batch[1]]
    np.testing.assert_allclose([e.score for e in single], [e.score for e in batch[1]], atol=1e-5)
    assert [e.score for e in single] == sorted((e.score for e in single), reverse=True)
    assert len(retriever.retrieve_for_text("anything", k=50)) == len(
        CAPTIONS
    )  # k > count: all of them
    with pytest.raises(InputError, match="k .* must be an integer >= 1"):
        retriever.retrieve_for_text("a river", k=0)
    with pytest.raises(InputError, match="RGB uint8"):
        retriever.retrieve_for_image(np.zeros((8, 8), np.uint8), k=1)


def test_search_rejects_wrong_dimension(kb: KnowledgeBase) -> None:
    with pytest.raises(InputError, match=r"must be \(Q, 32\), got shape \(2, 16\)"):
        kb.search(np.ones((2, 16), np.float32), 3)


def test_other_model_is_refused_with_both_names(kb: KnowledgeBase, embedder: ClipEmbedder) -> None:
    other = ClipEmbedder.from_config(tiny_clip_config(), seed=1)
    with pytest.raises(ManifestMismatchError) as info:
        KnowledgeBase.load(kb.directory, other)
    message = str(info.value)
    assert embedder.name in message and other.name in message and "--overwrite" in message
    with pytest.raises(ManifestMismatchError):
        Retriever(kb, other)
    with pytest.raises(ManifestMismatchError):
        kb.add(_descriptions(["a new text"]), other)


def test_duplicates_are_dropped_first_occurrence_wins(
    embedder: ClipEmbedder, tmp_path: Path
) -> None:
    descriptions = _descriptions(CAPTIONS[:3], "a.txt") + _descriptions(
        ["  many planes are parked next to a long\tbuilding in an airport . "], "b.txt"
    )
    with KnowledgeBase.build(descriptions, embedder, tmp_path / "kb") as kb:
        assert len(kb) == 3 and kb.manifest.duplicates_dropped == 1
        assert kb.description(0).source == "a.txt"


def test_incremental_add_dedups_and_persists(kb: KnowledgeBase, embedder: ClipEmbedder) -> None:
    added = kb.add(
        _descriptions(
            [
                CAPTIONS[0],
                "a solar farm with rows of panels .",
                "a solar farm  with rows of panels .",
            ],
            "new.txt",
        ),
        embedder,
    )
    assert added == 1 and len(kb) == len(CAPTIONS) + 1 and kb.manifest.duplicates_dropped == 2
    hit = Retriever(kb, embedder).retrieve_for_text("a solar farm with rows of panels .", k=1)[0]
    assert (hit.source, hit.metadata["kb_row"]) == ("new.txt", len(CAPTIONS))
    assert kb.add(_descriptions([CAPTIONS[1]]), embedder) == 0
    with KnowledgeBase.load(kb.directory, embedder) as reloaded:
        assert (
            len(reloaded) == len(CAPTIONS) + 1
            and reloaded.manifest.updated_at >= reloaded.manifest.built_at
        )
        assert reloaded.description(len(CAPTIONS)).text == "a solar farm with rows of panels ."
    assert not [p for p in kb.directory.parent.iterdir() if p.name.startswith(".")]  # no leftovers


def test_add_retrains_ivf_when_the_size_calls_for_more_lists(tmp_path: Path) -> None:
    data = ClusteredEmbeddings(dim=16, n_clusters=40, noise=1.0, seed=2)
    first = data.sample(2000, stream=1)
    embedder = ClipEmbedder.from_config(tiny_clip_config(embed_dim=16), seed=0)
    texts = [f"old description {i}" for i in range(2000)]
    with KnowledgeBase.from_vectors(
        _descriptions(texts), first, embedder.name, tmp_path / "kb", index="ivf-flat"
    ) as kb:
        assert (kb.manifest.index.kind, kb.manifest.index.nlist) == ("ivf-flat", 2000 // 39)
        kb.add(_descriptions([f"new description {i}" for i in range(2000)]), embedder)
        assert (kb.manifest.index.kind, kb.manifest.index.nlist, len(kb)) == (
            "ivf-flat",
            4000 // 39,
            4000,
        )
        own = Retriever(kb, embedder).retrieve_for_text("new description 7", k=1)[0]
        assert own.text == "new description 7"
        queries = first[:20]
        assert [r[0].metadata["kb_row"] for r in kb.search(queries, 1)] == list(
            range(20)
        )  # old vectors kept


def test_auto_index_switches_to_ivf_above_threshold(tmp_path: Path) -> None:
    data = ClusteredEmbeddings(dim=32, n_clusters=500, noise=2.0, seed=4)
    vectors, queries = data.sample(52_000, stream=1), data.sample(100, stream=2)
    texts = [f"t{i}" for i in range(len(vectors))]
    with KnowledgeBase.from_vectors(
        _descriptions(texts), vectors, "synthetic-32d", tmp_path / "kb"
    ) as kb:
        assert kb.manifest.index.kind == "ivf-flat" and kb.manifest.tuned_recall_at_5 >= 0.98
        found = np.array([[e.metadata["kb_row"] for e in row] for row in kb.search(queries, 5)])
    truth = exact_top_k(vectors, queries, 5)
    assert np.mean([len(set(f) & set(t)) / 5 for f, t in zip(found, truth, strict=True)]) >= 0.95


def test_interrupted_build_leaves_nothing(embedder: ClipEmbedder, tmp_path: Path) -> None:
    broken, tokenizer = _interrupting(embedder, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        KnowledgeBase.build(_descriptions(CAPTIONS * 1), broken, tmp_path / "kb", batch_size=2)
    assert "texts.jsonl" in tokenizer.seen_at_failure  # it was interrupted midway through writing
    assert list(tmp_path.iterdir()) == []


def test_interrupted_rebuild_and_add_keep_the_old_kb(
    kb: KnowledgeBase, embedder: ClipEmbedder
) -> None:
    before = read_manifest(kb.directory)
    broken, _ = _interrupting(embedder, kb.directory.parent)
    with pytest.raises(KeyboardInterrupt):
        KnowledgeBase.build(
            _descriptions(CAPTIONS[::-1]), broken, kb.directory, overwrite=True, batch_size=2
        )
    broken, _ = _interrupting(embedder, kb.directory.parent, fail_at=2)
    with pytest.raises(KeyboardInterrupt):
        kb.add(_descriptions(["a brand new text", "another one"]), broken, batch_size=1)
    assert read_manifest(kb.directory) == before
    assert [p.name for p in kb.directory.parent.iterdir()] == ["kb"]
    with KnowledgeBase.load(kb.directory, embedder) as reloaded:
        assert len(reloaded) == len(CAPTIONS)


def test_build_refuses_existing_or_foreign_directories(
    embedder: ClipEmbedder, kb: KnowledgeBase, tmp_path: Path
) -> None:
    with pytest.raises(KnowledgeBaseError, match="already exists; pass overwrite=True"):
        KnowledgeBase.build(_descriptions(CAPTIONS), embedder, kb.directory)
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(KnowledgeBaseError, match="not something GeoLens wrote"):
        KnowledgeBase.build(_descriptions(CAPTIONS), embedder, foreign, overwrite=True)
    assert (foreign / "holiday.jpg").exists()
    with KnowledgeBase.build(
        _descriptions(CAPTIONS[:2]), embedder, kb.directory, overwrite=True
    ) as rebuilt:
        assert len(rebuilt) == 2


def test_empty_corpus_is_an_error_and_leaves_nothing(
    embedder: ClipEmbedder, tmp_path: Path
) -> None:
    with pytest.raises(CorpusError, match="empty"):
        KnowledgeBase.build([], embedder, tmp_path / "kb")
    assert list(tmp_path.iterdir()) == []


def test_damaged_knowledge_bases_give_clear_errors(
    kb: KnowledgeBase, embedder: ClipEmbedder
) -> None:
    directory = kb.directory
    texts = directory / "texts.jsonl"
    original = texts.read_bytes()
    texts.write_bytes(original.replace(b"river", b"rivex", 1))  # same size, different bytes
    with pytest.raises(KnowledgeBaseError, match="texts.jsonl fails its sha256 checksum"):
        KnowledgeBase.load(directory, embedder)
    KnowledgeBase.load(directory, embedder, verify_checksum=False).close()  # sizes still match
    texts.write_bytes(original[:-10])
    with pytest.raises(KnowledgeBaseError, match="bytes, the manifest says .*truncated"):
        KnowledgeBase.load(directory, embedder, verify_checksum=False)
    texts.write_bytes(original)
    (directory / "index.faiss").unlink()
    with pytest.raises(KnowledgeBaseError, match="index.faiss is missing"):
        KnowledgeBase.load(directory, embedder)
    record = json.loads((directory / "manifest.json").read_text())
    record["format_version"] = 99
    (directory / "manifest.json").write_text(json.dumps(record))
    with pytest.raises(KnowledgeBaseError, match="format_version 99"):
        KnowledgeBase.load(directory, embedder)
    (directory / "manifest.json").unlink()
    with pytest.raises(KnowledgeBaseError, match="no manifest.json.*rebuild it"):
        KnowledgeBase.load(directory, embedder)
    with pytest.raises(KnowledgeBaseError, match="not a directory"):
        KnowledgeBase.load(directory / "nope", embedder)


def test_edited_manifest_is_detected(kb: KnowledgeBase, embedder: ClipEmbedder) -> None:
    path = kb.directory / "manifest.json"
    record = json.loads(path.read_text())
    record["count"] = record["count"] + 1
    path.write_text(json.dumps(record))
    with pytest.raises(KnowledgeBaseError, match="inconsistent: manifest says 9 x 32"):
        KnowledgeBase.load(kb.directory, embedder)
    record["count"] -= 1
    record["files"]["index.faiss"]["sha256"] = "0" * 64
    path.write_text(json.dumps(record))
    with pytest.raises(KnowledgeBaseError, match="manifest checksum does not match"):
        KnowledgeBase.load(kb.directory, embedder)


def test_load_by_model_name_for_precomputed_vectors(tmp_path: Path) -> None:
    vectors = ClusteredEmbeddings(dim=8, n_clusters=3, seed=0).sample(50, stream=1)
    KnowledgeBase.from_vectors(
        _descriptions([f"t{i}" for i in range(50)]), vectors, "my-vectors", tmp_path / "kb"
    ).close()
    with KnowledgeBase.load(tmp_path / "kb", "my-vectors") as kb:
        assert kb.search(vectors[3], 1)[0][0].text == "t3"
    with pytest.raises(ManifestMismatchError, match="'my-vectors'.*'other'"):
        KnowledgeBase.load(tmp_path / "kb", "other")
