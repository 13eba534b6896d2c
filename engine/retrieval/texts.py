"""``texts.jsonl``: the knowledge base's descriptions, one JSON record a line, row i = faiss id i.

Reading is random access through a memory map and an array of line offsets, so a knowledge base
of millions of descriptions costs 16 bytes a row in RAM, not a Python object per text.
"""

from __future__ import annotations

import hashlib
import json
import mmap
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from engine.errors import CorpusError, KnowledgeBaseError
from engine.retrieval.corpus import Description, normalise_text

__all__ = ["TextStore", "dedup_key", "write_descriptions"]


def dedup_key(text: str) -> bytes:
    """16-byte digest of the whitespace-normalised text: equal keys = duplicate descriptions."""
    return hashlib.blake2b(normalise_text(text).encode("utf-8"), digest_size=16).digest()


def write_descriptions(handle: BinaryIO, descriptions: Iterable[Description]) -> int:
    """Append one JSON line per description to ``handle``; returns how many were written."""
    count = 0
    for description in descriptions:
        try:
            line = json.dumps(description.to_json(), ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise CorpusError(
                f"metadata of the description {description.text[:60]!r} from {description.source} "
                f"is not JSON-serialisable ({exc}); use strings, numbers, lists and dicts only"
            ) from exc
        handle.write(line.encode("utf-8") + b"\n")
        count += 1
    return count


class TextStore:
    """Read-only rows of a ``texts.jsonl`` file; close it (or use ``with``) when done."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self._handle = self.path.open("rb")
        except OSError as exc:
            raise KnowledgeBaseError(f"cannot open {self.path}: {exc.strerror or exc}") from exc
        if self.path.stat().st_size == 0:
            self._map = None
            self._starts = self._ends = np.zeros(0, dtype=np.int64)
            return
        self._map = mmap.mmap(self._handle.fileno(), 0, access=mmap.ACCESS_READ)
        self._ends = _newline_offsets(self._map)
        self._starts = np.concatenate(([0], self._ends[:-1] + 1)).astype(np.int64)

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, row: int) -> Description:
        if not 0 <= row < len(self):
            raise IndexError(f"row {row} outside 0..{len(self) - 1}")
        raw = self._map[int(self._starts[row]) : int(self._ends[row])]
        try:
            return Description.from_json(json.loads(raw), default_source="")
        except (json.JSONDecodeError, UnicodeDecodeError, CorpusError) as exc:
            raise KnowledgeBaseError(
                f"{self.path} row {row} is corrupt ({exc}); rebuild the knowledge base"
            ) from exc

    def __iter__(self) -> Iterator[Description]:
        return (self[row] for row in range(len(self)))

    def dedup_keys(self) -> set[bytes]:
        """The :func:`dedup_key` of every stored text (for de-duplicating later additions)."""
        return {dedup_key(description.text) for description in self}

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        self._handle.close()

    def __enter__(self) -> TextStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _newline_offsets(buffer: mmap.mmap) -> np.ndarray:
    """(rows,) int64 byte offsets of each ``\\n``; the file must end with one."""
    view = np.frombuffer(buffer, dtype=np.uint8)
    ends = np.flatnonzero(view == 0x0A).astype(np.int64)
    ends_with_newline = bool(view[-1] == 0x0A)
    del view  # release the buffer export so the map can be closed
    if not ends_with_newline:
        raise KnowledgeBaseError(
            "texts.jsonl does not end with a newline: it was truncated; rebuild the knowledge base"
        )
    return ends
