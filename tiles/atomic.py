"""All-or-nothing file writes: a file appears complete at its path, or not at all.

Every file ``tiles`` writes (GeoTIFFs from :func:`tiles.write_raster`, tiled copies from
:mod:`tiles.cog`, GeoJSON, the catalog state) goes through :func:`atomic_path`: the writer fills
a hidden temporary sibling (``.<name>.<hex>.tmp<suffix>``: same folder, so the rename cannot
cross file systems; same suffix, so GDAL sees the usual extension), which is flushed to disk
(fsync), renamed over the destination (``os.replace``) and made durable with an fsync of the
folder. An exception or Ctrl-C midway removes the temporary file and leaves the destination
untouched. (A hard kill can leave a ``.<name>.*.tmp*`` behind, never a broken destination.)
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from tiles.types import PathLikeStr

__all__ = ["atomic_path", "write_text_atomic"]


@contextlib.contextmanager
def atomic_path(path: PathLikeStr) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for the caller to write (with any library);
    when the block succeeds it replaces ``path``. Creates the parent folder; raises OSError."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        _remove_quietly(tmp)  # gone after a successful rename; the leftover after a failure
    _fsync_dir(path.parent)


def write_text_atomic(path: PathLikeStr, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` with :func:`atomic_path`; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # platforms without directory file descriptors
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders; the rename is done
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:  # the folder itself is unusable; nothing was written there
        pass
