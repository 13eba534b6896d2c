"""All-or-nothing writes: a file or a directory appears complete at its path, or not at all.

Everything the engine writes that a later run reads back (adapters' training runs and
checkpoints, knowledge bases, saved embedders, instruction JSONL) goes through these helpers:
the content is written into a hidden temporary sibling (``.<name>.tmp-*``) and renamed into
place only when it is complete and flushed. An exception or Ctrl-C midway removes the temporary
file or directory, so a half-written one never sits at the destination; an existing one there is
replaced only at the very end. (A hard kill or power loss can leave a ``.<name>.tmp-*`` behind,
never a broken destination.)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["atomic_directory", "atomic_file", "write_text_atomic"]


@contextlib.contextmanager
def atomic_directory(final: str | Path) -> Iterator[Path]:
    """Yield a fresh empty directory beside ``final`` that replaces ``final`` (a directory or
    nothing) when the block succeeds; on an exception it is removed and ``final`` is untouched."""
    final = Path(final).absolute()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        _fsync_files(tmp)
        _swap_in(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Yield an open temporary file beside ``path`` (``mode`` ``"w"`` or ``"wb"``) that replaces
    ``path`` when the block succeeds; on an exception it is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` with :func:`atomic_file`; returns the path."""
    with atomic_file(path) as handle:
        handle.write(text)
    return Path(path)


def _swap_in(tmp: Path, final: Path) -> None:
    if not final.exists():
        os.replace(tmp, final)
        return
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _fsync_files(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
