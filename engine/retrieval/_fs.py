"""File-system helpers of the retrieval package: guarded all-or-nothing directory writes and
file checksums.

A knowledge base (or a saved embedder) is written with :func:`engine.atomic.atomic_directory`
(a temporary sibling renamed into place when complete); :func:`atomic_directory` here adds the
guard that an existing destination is replaced only when asked to and only when GeoLens wrote it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from engine import atomic
from engine.errors import KnowledgeBaseError

__all__ = ["atomic_directory", "sha256_file", "write_json"]


@contextlib.contextmanager
def atomic_directory(final: Path, *, replace: bool, marker: str) -> Iterator[Path]:
    """Yield a fresh temporary directory that becomes ``final`` when the block succeeds.

    ``final`` may already exist only if ``replace`` is true and it is empty or holds ``marker``
    (i.e. it is a directory this code wrote before), so a user's other folder is never deleted.
    """
    final = Path(final).absolute()
    _check_destination(final, replace=replace, marker=marker)
    with atomic.atomic_directory(final) as tmp:
        yield tmp


def _check_destination(final: Path, *, replace: bool, marker: str) -> None:
    if not final.exists():
        return
    if not final.is_dir():
        raise KnowledgeBaseError(
            f"{final} exists and is not a directory; choose another output path"
        )
    if not replace:
        raise KnowledgeBaseError(
            f"{final} already exists; pass overwrite=True (CLI: --overwrite) to replace it"
        )
    if any(final.iterdir()) and not (final / marker).exists():
        raise KnowledgeBaseError(
            f"{final} is a non-empty directory without {marker}, so it is not something "
            "GeoLens wrote; "
            "refusing to replace it, choose another output path"
        )


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` as indented UTF-8 JSON."""
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def sha256_file(path: Path, chunk_bytes: int = 8 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks (about 1.5 GB/s here)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
