"""Pooled, thread-safe access to the open datasets of one raster.

rasterio datasets must not be used by two threads at once, and reopening a file per tile costs
more than reading the tile. A :class:`RasterSource` keeps a pool of open handles: a thread
checks one out (opening a new handle only when all are busy), uses it alone, and returns it.
So N concurrent readers get N handles and nobody waits on a lock during I/O.

Each handle also lazily wraps its dataset for map tiles: a rio-tiler ``Reader`` over the
dataset, or over a north-up ``WarpedVRT`` when the geotransform is rotated/skewed (rio-tiler's
window maths assume north-up; GDAL's warper resolves the rotation exactly).

The source also caches values computed once per raster (display statistics).

The :class:`tiles.catalog.Catalog` owns one source per raster id (``catalog.source(raster_id)``);
reads take it as ``source=`` (:func:`tiles.reading.raster_handle`). A :class:`tiles.raster.Raster`
never holds one.

Handles are opened under the raster's :class:`tiles.opening.OpenPolicy`, and every checkout runs
inside its GDAL environment (:func:`tiles.opening.gdal_env`: no network unless allowed; VRT
sources are opened lazily, at read time). A read that GDAL cannot do (a truncated or corrupt
file, or one changed on disk) surfaces as :class:`tiles.errors.RasterReadError`, not as a raw
rasterio error.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rasterio.enums import ColorInterp
from rasterio.errors import RasterioIOError, WarpOperationError
from rasterio.vrt import WarpedVRT
from rio_tiler.errors import NoOverviewWarning
from rio_tiler.io import Reader  # imported here, not lazily: concurrent first imports race

from tiles.errors import RasterOpenError, RasterReadError
from tiles.opening import (
    DEFAULT_POLICY,
    OpenPolicy,
    gdal_env,
    gdal_reason,
    is_virtual_path,
    open_dataset,
)

if TYPE_CHECKING:
    from rasterio.io import DatasetReader

__all__ = ["DatasetHandle", "RasterSource"]

T = TypeVar("T")


@dataclass
class DatasetHandle:
    """One open dataset, used by one thread at a time, plus its lazily built tile reader."""

    dataset: DatasetReader
    rotated: bool
    _tile_reader: Reader | None = None
    _exit_stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def tile_reader(self) -> Reader:
        """A rio-tiler Reader on this handle (north-up WarpedVRT for rotated transforms)."""
        if self._tile_reader is None:
            target = self.dataset
            if self.rotated:
                # North-up grid chosen by GDAL; pixels outside the rotated footprint get
                # nodata, or an added alpha band when the raster has neither.
                has_alpha = ColorInterp.alpha in self.dataset.colorinterp
                add_alpha = self.dataset.nodata is None and not has_alpha
                target = self._exit_stack.enter_context(
                    WarpedVRT(self.dataset, add_alpha=add_alpha)
                )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NoOverviewWarning)
                self._tile_reader = Reader(None, dataset=target)
        return self._tile_reader

    def close(self) -> None:
        self._exit_stack.close()
        self.dataset.close()


class RasterSource:
    """Pool of open handles on ``read_path`` shared by threads; owns them until :meth:`close`.

    ``policy``/``trusted``: how handles are opened and read (see :mod:`tiles.opening`)."""

    def __init__(self, read_path: Path, *, rotated: bool, policy: OpenPolicy = DEFAULT_POLICY,
                 trusted: bool = False) -> None:
        self.read_path = Path(read_path)
        self.rotated = rotated
        self.policy = policy
        self.trusted = trusted
        self._lock = threading.Lock()
        self._idle: list[DatasetHandle] = []
        self._busy = 0
        self._closed = False
        self._cache: dict[str, Any] = {}
        self._cache_lock = threading.Lock()

    def _open_handle(self) -> DatasetHandle:
        if not is_virtual_path(str(self.read_path)) and not self.read_path.exists():
            raise RasterOpenError(
                f"raster file {str(self.read_path)!r} disappeared after it was opened; "
                "open it again from its new location."
            )
        dataset = open_dataset(self.read_path, policy=self.policy, trusted=self.trusted)
        return DatasetHandle(dataset, rotated=self.rotated)

    @contextlib.contextmanager
    def handle(self, purpose: str = "pixels") -> Iterator[DatasetHandle]:
        """Check out a handle for the current thread; returned to the pool on exit. Reads done
        with it run in the policy's GDAL environment; GDAL read failures become RasterReadError
        naming ``purpose`` (e.g. "tile 12/2200/1343")."""
        with self._lock:
            if self._closed:
                raise RasterOpenError(
                    f"raster {str(self.read_path)!r} was closed; open it again in the catalog."
                )
            handle = self._idle.pop() if self._idle else None
            self._busy += 1
        try:
            with gdal_env(self.policy, trusted=self.trusted):
                if handle is None:
                    handle = self._open_handle()
                try:
                    yield handle
                except (RasterioIOError, WarpOperationError) as exc:
                    raise RasterReadError(
                        f"the file {str(self.read_path)!r} cannot be read at {purpose}: it may "
                        f"be truncated or corrupt, or it changed after it was opened (GDAL says: "
                        f"{gdal_reason(exc)}). Re-download or re-export it, then open it again."
                    ) from exc
        finally:
            with self._lock:
                self._busy -= 1
                if handle is not None and not self._closed:
                    self._idle.append(handle)
                    handle = None
            if handle is not None:
                handle.close()

    def cached(self, key: str, compute: Callable[[], T]) -> T:
        """``compute()`` once per source and key (later calls return the stored value)."""
        with self._cache_lock:
            if key not in self._cache:
                self._cache[key] = compute()
            return self._cache[key]

    @property
    def open_handles(self) -> int:
        """Number of handles currently open (idle + checked out)."""
        with self._lock:
            return len(self._idle) + self._busy

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close idle handles now; handles in use close when their thread returns them."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for handle in idle:
            handle.close()
