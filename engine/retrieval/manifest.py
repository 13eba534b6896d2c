"""``manifest.json``: what a knowledge base holds and how it was built, checked on every load.

Layout of a knowledge-base directory::

    manifest.json   this record (embedding model, dim, count, index spec, file checksums, dates)
    texts.jsonl     one description per line; line i is faiss id i
    index.faiss     the faiss index (faiss.write_index)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from engine.errors import KnowledgeBaseError
from engine.retrieval._fs import sha256_file, write_json
from engine.retrieval.index import IndexSpec

__all__ = [
    "FORMAT_VERSION",
    "INDEX_FILE",
    "MANIFEST_FILE",
    "TEXTS_FILE",
    "Manifest",
    "read_manifest",
    "utc_now",
]

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
TEXTS_FILE = "texts.jsonl"
INDEX_FILE = "index.faiss"
DATA_FILES = (TEXTS_FILE, INDEX_FILE)


def utc_now() -> str:
    """ISO 8601 UTC timestamp, seconds precision."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class Manifest:
    """Everything needed to trust and use a knowledge base directory."""

    embedding_model: str  # ClipEmbedder.name that produced the vectors
    dim: int
    count: int
    index: IndexSpec
    requested_index: str  # what the builder asked for ("auto", "ivf-flat", ...), kept for add()
    files: dict  # {file name: {"sha256": hex, "bytes": int}}
    built_at: str
    updated_at: str
    embedder: dict = field(default_factory=dict)  # ClipEmbedder.spec: lets the CLI rebuild it
    tuned_recall_at_5: float = 1.0
    duplicates_dropped: int = 0
    normalization: str = "l2"
    metric: str = "inner_product"
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.dim < 1 or self.count < 1:
            raise KnowledgeBaseError(
                f"manifest needs dim >= 1 and count >= 1, got dim={self.dim} count={self.count}"
            )
        if self.normalization != "l2" or self.metric != "inner_product":
            raise KnowledgeBaseError(
                "unsupported manifest normalisation/metric "
                f"{self.normalization}/{self.metric}; expected l2/inner_product"
            )

    @property
    def checksum(self) -> str:
        """sha256 over the per-file digests (texts and index together)."""
        lines = "".join(f"{name}:{self.files[name]['sha256']}\n" for name in sorted(self.files))
        return hashlib.sha256(lines.encode()).hexdigest()

    def to_json(self) -> dict:
        record = asdict(self)
        record["index"] = self.index.to_json()
        record["checksum"] = self.checksum
        return record

    @classmethod
    def from_json(cls, record: dict) -> Manifest:
        record = dict(record)
        stored_checksum = record.pop("checksum", None)
        record["index"] = IndexSpec.from_json(record["index"])
        manifest = cls(**record)
        if stored_checksum != manifest.checksum:
            raise KnowledgeBaseError(
                "manifest checksum does not match its file digests: manifest.json was edited"
            )
        return manifest

    def with_files(self, directory: Path) -> Manifest:
        """A copy with ``files`` digested from the data files in ``directory``."""
        files = {
            name: {
                "sha256": sha256_file(directory / name),
                "bytes": (directory / name).stat().st_size,
            }
            for name in DATA_FILES
        }
        return replace(self, files=files)

    def write(self, directory: Path) -> None:
        write_json(directory / MANIFEST_FILE, self.to_json())


def read_manifest(kb_dir: Path) -> Manifest:
    """The manifest of ``kb_dir``; :class:`KnowledgeBaseError` says what is wrong and what to do."""
    kb_dir = Path(kb_dir)
    path = kb_dir / MANIFEST_FILE
    rebuild = (
        "rebuild it with `python -m engine.retrieval build --corpus ... --out DIR --overwrite`"
    )
    if not kb_dir.is_dir():
        raise KnowledgeBaseError(
            f"no knowledge base at {kb_dir} (not a directory); build one with "
            "`python -m engine.retrieval build`"
        )
    if not path.is_file():
        raise KnowledgeBaseError(
            f"{kb_dir} has no {MANIFEST_FILE}, so it is not a complete knowledge base; {rebuild}"
        )
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KnowledgeBaseError(f"{path} is unreadable or not JSON ({exc}); {rebuild}") from exc
    if not isinstance(record, dict) or record.get("format_version") != FORMAT_VERSION:
        seen = record.get("format_version") if isinstance(record, dict) else type(record).__name__
        raise KnowledgeBaseError(
            f"{path} has format_version {seen!r}, this GeoLens reads {FORMAT_VERSION}; {rebuild}"
        )
    try:
        return Manifest.from_json(record)
    except (KeyError, TypeError, ValueError) as exc:
        raise KnowledgeBaseError(
            f"{path} is malformed ({type(exc).__name__}: {exc}); {rebuild}"
        ) from exc
    except KnowledgeBaseError as exc:
        raise KnowledgeBaseError(f"{path}: {exc}; {rebuild}") from exc
