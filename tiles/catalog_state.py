"""What a catalog remembers across restarts: ``<workspace>/catalog.json``.

One entry per open raster: its catalog id, the path it was opened from (absolute), whether it
was opened as trusted, and the cached tiled copy it reads, if any. The file is rewritten
atomically on every change (:func:`tiles.atomic.write_text_atomic`: temp file, fsync, rename,
fsync of the folder), so a crash leaves either the old or the new state. A file that cannot be
parsed is moved aside (``catalog.corrupt-<time>.json``) and reported, never silently dropped.

Format (version 1)::

    {"version": 1, "rasters": [{"id": "3f9a...", "path": "/data/scene.tif",
                                "trusted": false, "read_path": null}, ...]}
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from tiles.atomic import write_text_atomic

__all__ = ["STATE_VERSION", "CatalogEntry", "RestoreProblem", "read_state", "write_state"]

log = logging.getLogger(__name__)

STATE_VERSION = 1
RASTER_ID = re.compile(r"^[0-9a-f]{12}$")  # catalog ids: secrets.token_hex(6)


@dataclass(frozen=True)
class CatalogEntry:
    """One remembered raster."""

    raster_id: str
    path: Path  # absolute, as opened (symlinks not resolved: the policy re-checks them)
    trusted: bool = False
    read_path: Path | None = None  # the cached tiled copy, when one was built

    def __post_init__(self) -> None:
        if not RASTER_ID.match(self.raster_id):
            raise ValueError(f"catalog ids are 12 lowercase hex digits, got {self.raster_id!r}")

    def to_json(self) -> dict:
        return {"id": self.raster_id, "path": str(self.path), "trusted": self.trusted,
                "read_path": None if self.read_path is None else str(self.read_path)}

    @classmethod
    def from_json(cls, item: object) -> CatalogEntry:
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise ValueError(f"expected {{'id': ..., 'path': ...}}, got {item!r:.200}")
        read_path = item.get("read_path")
        return cls(raster_id=str(item.get("id")), path=Path(item["path"]),
                   trusted=item.get("trusted") is True,
                   read_path=Path(read_path) if isinstance(read_path, str) else None)


@dataclass(frozen=True)
class RestoreProblem:
    """A remembered raster that could not be reopened (or a state file that could not be
    read: ``raster_id`` and ``path`` None)."""

    raster_id: str | None
    path: Path | None
    reason: str

    def __str__(self) -> str:
        """One line for the analyst: "scene.tif could not be reopened: <reason>"."""
        return self.reason if self.path is None else (
            f"{self.path.name} could not be reopened: {self.reason}")


def read_state(state_path: Path) -> tuple[list[CatalogEntry], list[RestoreProblem]]:
    """(entries, problems) from ``state_path``; a missing file is an empty state. Bad entries
    are skipped and reported; an unparseable file is moved aside and reported."""
    try:
        text = state_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        return [], [RestoreProblem(None, None, f"cannot read {str(state_path)!r}: {exc}")]
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("rasters"), list):
            raise ValueError("expected {'version': 1, 'rasters': [...]}")
    except ValueError as exc:
        aside = state_path.with_name(
            f"{state_path.stem}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}{state_path.suffix}")
        os.replace(state_path, aside)
        message = (f"the catalog state {str(state_path)!r} could not be read ({exc}); it was "
                   f"moved to {str(aside)!r} and no raster was reopened from it")
        log.warning("%s", message)
        return [], [RestoreProblem(None, None, message)]
    entries, problems = [], []
    for item in data["rasters"]:
        try:
            entries.append(CatalogEntry.from_json(item))
        except ValueError as exc:
            problems.append(RestoreProblem(None, None, f"skipped a catalog entry: {exc}"))
    return entries, problems


def write_state(state_path: Path, entries: list[CatalogEntry]) -> None:
    """Atomically replace ``state_path`` with ``entries`` (OSError on failure)."""
    payload = {"version": STATE_VERSION, "rasters": [e.to_json() for e in entries]}
    write_text_atomic(state_path, json.dumps(payload, indent=1))
