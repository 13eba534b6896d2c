"""The semantic knowledge base (paper III-A1): descriptions + their CLIP text embeddings in faiss.

:meth:`KnowledgeBase.build` streams descriptions, drops duplicates (same text after collapsing
whitespace; the first occurrence wins), embeds them with the embedder's text tower, builds the
index :func:`~engine.retrieval.index.choose_spec` picks for the size, tunes its search depth,
and writes ``texts.jsonl`` + ``index.faiss`` + ``manifest.json`` all-or-nothing (see ``_fs``).
:meth:`KnowledgeBase.load` verifies the manifest, the embedding model, sizes and checksums.
:meth:`KnowledgeBase.search` maps unit query vectors to :class:`~engine.types.Evidence`.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import CorpusError, InputError, KnowledgeBaseError, ManifestMismatchError
from engine.retrieval._deps import import_faiss
from engine.retrieval._fs import atomic_directory
from engine.retrieval.corpus import Description
from engine.retrieval.embedder import ClipEmbedder
from engine.retrieval.index import IndexSpec, build_index, choose_spec, search_index, tune_search
from engine.retrieval.ingest import (
    drop_seen,
    embed_unique,
    save_index,
    stored_vectors,
    unit_rows,
    write_index_and_manifest,
)
from engine.retrieval.manifest import (
    INDEX_FILE,
    MANIFEST_FILE,
    TEXTS_FILE,
    Manifest,
    read_manifest,
    utc_now,
)
from engine.retrieval.texts import TextStore, dedup_key, write_descriptions
from engine.types import Evidence

__all__ = ["KnowledgeBase"]

log = logging.getLogger(__name__)

PROGRESS_MIN = 5000  # show a progress bar from this many descriptions on (progress=None)


class KnowledgeBase:
    """An opened knowledge base directory; build with :meth:`build`, open with :meth:`load`."""

    def __init__(self, directory: Path, manifest: Manifest, index: Any, texts: TextStore) -> None:
        self.directory = Path(directory)
        self.manifest = manifest
        self._index = index
        self._texts = texts

    def __len__(self) -> int:
        return self.manifest.count

    def __repr__(self) -> str:
        spec = self.manifest.index.describe()
        return f"KnowledgeBase({self.directory}, {len(self)} descriptions, {spec})"

    @property
    def model_name(self) -> str:
        return self.manifest.embedding_model

    @property
    def dim(self) -> int:
        return self.manifest.dim

    def description(self, row: int) -> Description:
        """The description stored at faiss id ``row``."""
        return self._texts[row]

    def close(self) -> None:
        self._texts.close()

    def __enter__(self) -> KnowledgeBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------- building

    @classmethod
    def build(
        cls,
        descriptions: Iterable[Description],
        embedder: ClipEmbedder,
        out_dir: Path,
        *,
        index: str = "auto",
        batch_size: int = 256,
        progress: bool | None = None,
        overwrite: bool = False,
        target_recall: float = 0.98,
        seed: int = 0,
    ) -> KnowledgeBase:
        """Embed ``descriptions`` with ``embedder``'s text tower into a new KB at ``out_dir``.

        ``index``: one of ``engine.retrieval.index.INDEX_KINDS``. Raises :class:`CorpusError`
        for an empty corpus; nothing is left at ``out_dir`` when anything fails midway.
        """
        total = len(descriptions) if isinstance(descriptions, Sequence) else None
        show = progress if progress is not None else (total or 0) >= PROGRESS_MIN
        with atomic_directory(Path(out_dir), replace=overwrite, marker=MANIFEST_FILE) as tmp:
            vectors, dropped = embed_unique(
                descriptions, embedder, tmp / TEXTS_FILE, set(), batch_size, show, total
            )
            manifest = write_index_and_manifest(
                tmp, vectors, embedder.name, embedder.spec, index, dropped, target_recall, seed
            )
        return cls.load_verified(Path(out_dir), manifest)

    @classmethod
    def from_vectors(
        cls,
        descriptions: Sequence[Description],
        vectors: np.ndarray,
        model_name: str,
        out_dir: Path,
        *,
        index: str = "auto",
        overwrite: bool = False,
        target_recall: float = 0.98,
        seed: int = 0,
        embedder_spec: dict | None = None,
    ) -> KnowledgeBase:
        """A KB from precomputed embeddings: row ``vectors[i]`` embeds ``descriptions[i]``."""
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or len(vectors) != len(descriptions):
            raise InputError(
                f"need one vector per description: {len(descriptions)} descriptions, "
                f"vectors {vectors.shape}"
            )
        keep, seen = [], set()
        for row, description in enumerate(descriptions):
            key = dedup_key(description.text)
            if key not in seen:
                seen.add(key)
                keep.append(row)
        if not keep:
            raise CorpusError("the corpus is empty: no descriptions given")
        spec = embedder_spec or {"kind": "model", "name": model_name}
        with atomic_directory(Path(out_dir), replace=overwrite, marker=MANIFEST_FILE) as tmp:
            with (tmp / TEXTS_FILE).open("wb") as handle:
                write_descriptions(handle, (descriptions[row] for row in keep))
            dropped = len(descriptions) - len(keep)
            kept_vectors = vectors[keep] if dropped else vectors
            manifest = write_index_and_manifest(
                tmp, unit_rows(kept_vectors), model_name, spec, index, dropped, target_recall, seed
            )
        return cls.load_verified(Path(out_dir), manifest)

    # -------------------------------------------------------------------------------- loading

    @classmethod
    def load(
        cls, kb_dir: Path, embedder: ClipEmbedder | str, *, verify_checksum: bool = True
    ) -> KnowledgeBase:
        """Open ``kb_dir`` for ``embedder`` (or an embedding-model name, for KBs built with
        :meth:`from_vectors`); refuses another embedding model or damaged files."""
        kb_dir = Path(kb_dir)
        manifest = read_manifest(kb_dir)
        check_model(manifest, embedder, kb_dir)
        _check_files(kb_dir, manifest, verify_checksum)
        return cls.load_verified(kb_dir, manifest)

    @classmethod
    def load_verified(cls, kb_dir: Path, manifest: Manifest) -> KnowledgeBase:
        """Open ``kb_dir`` whose manifest was already checked (used right after writing it)."""
        faiss = import_faiss()
        try:
            index = faiss.read_index(str(kb_dir / INDEX_FILE))
        except RuntimeError as exc:
            raise KnowledgeBaseError(
                f"{kb_dir / INDEX_FILE} is not a readable faiss index ({exc}); "
                "rebuild the knowledge base"
            ) from exc
        texts = TextStore(kb_dir / TEXTS_FILE)
        if (
            index.ntotal != manifest.count
            or len(texts) != manifest.count
            or index.d != manifest.dim
        ):
            texts.close()
            raise KnowledgeBaseError(
                f"{kb_dir} is inconsistent: manifest says {manifest.count} x {manifest.dim}, "
                f"index holds {index.ntotal} x {index.d}, texts.jsonl {len(texts)} rows; "
                "rebuild the knowledge base"
            )
        return cls(kb_dir, manifest, index, texts)

    # ------------------------------------------------------------------------------ searching

    def search(
        self, query_vecs: np.ndarray, k: int, *, nprobe: int | None = None
    ) -> list[list[Evidence]]:
        """Top-``k`` descriptions per query row of ``query_vecs`` (Q, dim), best first.

        Queries are L2-normalised here, so ``Evidence.score`` is the cosine similarity.
        """
        queries = np.asarray(query_vecs, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise InputError(
                f"query vectors must be (Q, {self.dim}), got shape {np.shape(query_vecs)}"
            )
        if len(queries) == 0:
            return []
        scores, ids = search_index(
            self._index, unit_rows(queries), k, spec=self.manifest.index, nprobe=nprobe
        )
        return [
            self._evidence_row(row_scores, row_ids)
            for row_scores, row_ids in zip(scores, ids, strict=True)
        ]

    def _evidence_row(self, scores: np.ndarray, ids: np.ndarray) -> list[Evidence]:
        evidence = []
        for score, row in zip(scores.tolist(), ids.tolist(), strict=True):
            if row < 0:  # fewer than k found
                continue
            description = self._texts[row]
            evidence.append(
                Evidence(
                    text=description.text,
                    score=float(score),
                    source=description.source,
                    level=description.level,
                    metadata={**description.metadata, "kb_row": row},
                )
            )
        return evidence

    # ------------------------------------------------------------------------------- updating

    def add(
        self,
        descriptions: Iterable[Description],
        embedder: ClipEmbedder,
        *,
        batch_size: int = 256,
        progress: bool | None = None,
    ) -> int:
        """Embed and add the new, non-duplicate ``descriptions``; returns how many were added.

        The IVF coarse quantizer is retrained (index rebuilt from the stored vectors) when the new
        size calls for another index kind or nlist; otherwise vectors are appended. The directory
        is rewritten all-or-nothing.
        """
        check_model(self.manifest, embedder, self.directory)
        batch = list(descriptions)
        fresh = drop_seen(batch, self._texts.dedup_keys())
        dropped = len(batch) - len(fresh)
        if not fresh:
            log.info(
                "nothing to add: all %d descriptions are already in %s", len(batch), self.directory
            )
            return 0
        show = progress if progress is not None else len(fresh) >= PROGRESS_MIN
        with atomic_directory(self.directory, replace=True, marker=MANIFEST_FILE) as tmp:
            shutil.copyfile(self.directory / TEXTS_FILE, tmp / TEXTS_FILE)
            vectors, _ = embed_unique(
                fresh, embedder, tmp / TEXTS_FILE, set(), batch_size, show, len(fresh), append=True
            )
            index, spec, recall = self._grown_index(vectors)
            manifest = replace(
                self.manifest,
                count=self.manifest.count + len(vectors),
                index=spec,
                tuned_recall_at_5=recall,
                duplicates_dropped=self.manifest.duplicates_dropped + dropped,
                updated_at=utc_now(),
            )
            save_index(index, tmp)
            manifest = manifest.with_files(tmp)
            manifest.write(tmp)
        self._texts.close()
        self.manifest, self._index = manifest, index
        self._texts = TextStore(self.directory / TEXTS_FILE)
        return len(vectors)

    def _grown_index(self, new_vectors: np.ndarray) -> tuple[Any, IndexSpec, float]:
        """The index with ``new_vectors`` appended (a copy), rebuilt if the size calls for it."""
        faiss = import_faiss()
        current = self.manifest.index
        wanted = choose_spec(self.manifest.requested_index, self.manifest.count + len(new_vectors))
        if wanted.kind == current.kind and wanted.nlist == current.nlist:
            index = faiss.clone_index(self._index)
            index.add(new_vectors)
            return index, current, self.manifest.tuned_recall_at_5
        log.info(
            "rebuilding %s as %s for %d vectors",
            current.describe(),
            wanted.kind,
            self.manifest.count + len(new_vectors),
        )
        vectors = np.concatenate([stored_vectors(self._index), new_vectors], axis=0)
        index = build_index(vectors, wanted)
        spec, recall = tune_search(index, wanted, vectors)
        return index, spec, recall


def check_model(manifest: Manifest, embedder: ClipEmbedder | str, kb_dir: Path) -> None:
    """:class:`ManifestMismatchError` unless ``embedder`` (or that model name) built the KB."""
    name, dim = (
        (embedder, manifest.dim) if isinstance(embedder, str) else (embedder.name, embedder.dim)
    )
    if name == manifest.embedding_model and dim == manifest.dim:
        return
    raise ManifestMismatchError(
        f"knowledge base {kb_dir} was built with embedding model {manifest.embedding_model!r} "
        f"({manifest.dim}-d), but the embedder given is {name!r} ({dim}-d); "
        "query it with the model that built it (manifest 'embedder': "
        f"{_describe_spec(manifest.embedder)}), or rebuild it for this model: "
        f"python -m engine.retrieval build --corpus ... --out {kb_dir} --overwrite"
    )


def _describe_spec(spec: dict) -> str:
    if spec.get("kind") == "open_clip":
        return f"--model {spec['arch']} --checkpoint {spec['checkpoint'] or 'none'}"
    if spec.get("kind") == "saved":
        return f"--embedder {spec['path']}"
    if spec.get("kind") == "config":
        return f"--model-config <json> --checkpoint {spec['checkpoint'] or 'none'}"
    return "an in-memory model"


def _check_files(kb_dir: Path, manifest: Manifest, verify_checksum: bool) -> None:
    for name, expected in manifest.files.items():
        path = kb_dir / name
        if not path.is_file():
            raise KnowledgeBaseError(
                f"{path} is missing; the knowledge base is incomplete, rebuild it"
            )
        size = path.stat().st_size
        if size != expected["bytes"]:
            raise KnowledgeBaseError(
                f"{path} has {size} bytes, the manifest says {expected['bytes']}: "
                "truncated or replaced; rebuild it"
            )
    if not verify_checksum:
        return
    fresh = manifest.with_files(kb_dir)
    for name, expected in manifest.files.items():
        if fresh.files[name]["sha256"] != expected["sha256"]:
            raise KnowledgeBaseError(
                f"{kb_dir / name} fails its sha256 checksum: the file is corrupt or was "
                "modified; rebuild it"
            )
