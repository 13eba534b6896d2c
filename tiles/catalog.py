"""The catalog of opened rasters: :class:`Catalog`.

The app keeps one catalog per process. It owns the open datasets (a pooled, thread-safe
:class:`tiles.source.RasterSource` per raster), hands out opaque ids (random, never a path, so
a URL like ``/tiles/{raster_id}/{z}/{x}/{y}.png`` can never name a file), and replaces large
striped or overview-less rasters by a cached COG in ``workspace_dir`` (see :mod:`tiles.cog`).
The :class:`Raster` it returns reports the analyst's original path; reads go to the COG.
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
import secrets
import threading
from pathlib import Path
from typing import Self

from tiles.cog import DEFAULT_COG_THRESHOLD_PX, build_cog, cog_cache_path, needs_cog
from tiles.errors import UnknownRasterError
from tiles.raster import Raster, describe_dataset, open_dataset, open_raster
from tiles.source import RasterSource
from tiles.types import PathLikeStr

__all__ = ["Catalog"]

log = logging.getLogger(__name__)


class Catalog:
    """Opened rasters keyed by opaque ids; a context manager that closes them all on exit."""

    def __init__(
        self, workspace_dir: PathLikeStr, *, cog_threshold_px: int = DEFAULT_COG_THRESHOLD_PX
    ) -> None:
        if cog_threshold_px < 1:
            raise ValueError(f"cog_threshold_px must be >= 1, got {cog_threshold_px}")
        self.workspace_dir = Path(workspace_dir)
        self.cog_threshold_px = cog_threshold_px
        self._lock = threading.Lock()  # guards the two dicts below
        self._build_lock = threading.Lock()  # one COG build at a time
        self._rasters: dict[str, Raster] = {}
        self._ids_by_key: dict[tuple[str, int, int], str] = {}

    def open(self, path: PathLikeStr) -> str:
        """Open ``path`` (or return the id it already has) and return its catalog id."""
        raster = open_raster(path)  # validates the path and the raster first
        resolved = raster.path.resolve()
        stat = resolved.stat()
        key = (str(resolved), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key in self._ids_by_key:
                return self._ids_by_key[key]
        read_path = resolved
        if needs_cog(raster, self.cog_threshold_px):
            with self._build_lock:
                read_path = build_cog(resolved, cog_cache_path(self.workspace_dir, resolved),
                                      raster)
            with open_dataset(read_path) as cog:
                raster = dataclasses.replace(describe_dataset(cog, raster.path),
                                             read_path=read_path)
        raster_id = secrets.token_hex(6)
        raster = dataclasses.replace(
            raster, raster_id=raster_id,
            source=RasterSource(read_path, rotated=raster.is_rotated),
        )
        with self._lock:
            if key in self._ids_by_key:  # another thread opened it meanwhile
                raster.source.close()
                return self._ids_by_key[key]
            self._rasters[raster_id] = raster
            self._ids_by_key[key] = raster_id
        log.info("opened %s as %s (%dx%d, %s)", raster.path, raster_id, raster.width,
                 raster.height, raster.crs_label or "pixel space")
        return raster_id

    def get(self, raster_id: str) -> Raster:
        """The open raster with this id; UnknownRasterError lists the open ids."""
        with self._lock:
            raster = self._rasters.get(raster_id)
            known = builtins.list(self._rasters)
        if raster is None:
            raise UnknownRasterError(
                f"no open raster with id {raster_id!r}; open ids: {known or 'none'}. "
                "Open the raster again (ids do not survive a restart)."
            )
        return raster

    def list(self) -> builtins.list[Raster]:
        """Open rasters in opening order."""
        with self._lock:
            return builtins.list(self._rasters.values())

    def close(self, raster_id: str) -> None:
        """Close one raster and release its datasets."""
        with self._lock:
            raster = self._rasters.pop(raster_id, None)
            if raster is None:
                known = builtins.list(self._rasters)
            else:
                self._ids_by_key = {k: v for k, v in self._ids_by_key.items() if v != raster_id}
        if raster is None:
            raise UnknownRasterError(
                f"cannot close raster id {raster_id!r}: not open; open ids: {known or 'none'}"
            )
        raster.source.close()

    def close_all(self) -> None:
        """Close every raster."""
        with self._lock:
            rasters, self._rasters, self._ids_by_key = builtins.list(self._rasters.values()), {}, {}
        for raster in rasters:
            raster.source.close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._rasters)

    def __contains__(self, raster_id: object) -> bool:
        with self._lock:
            return raster_id in self._rasters

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close_all()
