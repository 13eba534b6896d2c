"""The catalog of opened rasters: :class:`Catalog`.

The app keeps one catalog per process. It owns the open datasets (a pooled, thread-safe
:class:`tiles.source.RasterSource` per raster, :meth:`Catalog.source`, which reads take as
``source=``; the :class:`Raster` values it hands out hold no open file) and hands out opaque
ids (random, never a path, so a URL like ``/tiles/{raster_id}/{z}/{x}/{y}.png`` can never name
a file).

* **Policy**: every open goes through the catalog's :class:`tiles.opening.OpenPolicy`;
  ``trusted=True`` marks the operator's own rasters (command line), which may use any driver.
* **Big rasters**: large striped or overview-less rasters are replaced by a cached tiled copy in
  ``workspace_dir`` (:mod:`tiles.cog`), built on a background thread: :meth:`Catalog.start_open`
  returns an :class:`tiles.jobs.OpenJob` with progress and cancel at once, other opens go on
  meanwhile, and two opens of the same file share one build. At most
  ``MAX_CONCURRENT_BUILDS`` copies are written at a time; the rest wait (cancellable).
  The :class:`Raster` reports the analyst's original path; reads go to the copy.
* **Restarts**: with ``state_path`` the catalog remembers what is open
  (:mod:`tiles.catalog_state`); :meth:`Catalog.restore` reopens it with the same ids, so map
  tabs left open keep working. Restoring is explicit (call it once, before serving); entries
  not yet restored are kept in the state file meanwhile.
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
import secrets
import threading
from pathlib import Path
from typing import Self

from tiles.catalog_state import CatalogEntry, RestoreProblem, read_state, write_state
from tiles.cog import COG_DIRNAME, DEFAULT_COG_THRESHOLD_PX, build_cog, cog_cache_path, needs_cog
from tiles.errors import OpenCancelledError, RasterOpenError, TilesError, UnknownRasterError
from tiles.jobs import OpenJob
from tiles.opening import DEFAULT_POLICY, OpenPolicy, is_virtual_path
from tiles.raster import Raster, open_raster
from tiles.source import RasterSource
from tiles.types import PathLikeStr

__all__ = ["MAX_CONCURRENT_BUILDS", "Catalog"]

log = logging.getLogger(__name__)

MAX_CONCURRENT_BUILDS = 2
_SLOT_POLL_S = 0.1  # how often a waiting build checks for a cancel

FileKey = tuple[str, int, int]  # (resolved path, size, mtime_ns); network: (location, 0, 0)


def _is_local(raster: Raster) -> bool:
    return not is_virtual_path(str(raster.path))


def _file_key(raster: Raster) -> FileKey:
    if not _is_local(raster):  # a network location (only with allow_network)
        return (str(raster.path), 0, 0)
    resolved = raster.path.resolve()
    stat = resolved.stat()
    return (str(resolved), stat.st_size, stat.st_mtime_ns)


def _not_open(raster_id: str, known: list[str]) -> UnknownRasterError:
    return UnknownRasterError(
        f"no open raster with id {raster_id!r}; open ids: {known or 'none'}. "
        "Open the raster again."
    )


class Catalog:
    """Opened rasters keyed by opaque ids; a context manager that closes them all on exit.

    ``policy``: what may be opened (:class:`tiles.opening.OpenPolicy`). ``state_path``: where
    to remember the open rasters (e.g. ``<workspace>/catalog.json``; None: nothing is kept).
    ``cog_threshold_px``: rasters larger than this on a side get a tiled copy unless they are
    tiled with overviews already.
    """

    def __init__(
        self,
        workspace_dir: PathLikeStr,
        *,
        policy: OpenPolicy = DEFAULT_POLICY,
        state_path: PathLikeStr | None = None,
        cog_threshold_px: int = DEFAULT_COG_THRESHOLD_PX,
    ) -> None:
        if cog_threshold_px < 1:
            raise ValueError(f"cog_threshold_px must be >= 1, got {cog_threshold_px}")
        self.workspace_dir = Path(workspace_dir)
        self.policy = policy
        self.cog_threshold_px = cog_threshold_px
        self.state_path = None if state_path is None else Path(state_path)
        # Reads of the cached copies: plain GeoTIFFs we wrote, in our own folder.
        self._cache_policy = policy.with_data_dir(self.workspace_dir / COG_DIRNAME)
        self._lock = threading.Lock()  # guards the dicts below
        self._rasters: dict[str, Raster] = {}
        self._sources: dict[str, RasterSource] = {}  # one pool per raster id
        self._ids_by_key: dict[FileKey, str] = {}
        self._jobs: dict[FileKey, OpenJob] = {}
        self._threads: set[threading.Thread] = set()
        self._build_slots = threading.BoundedSemaphore(MAX_CONCURRENT_BUILDS)
        self._state_lock = threading.Lock()  # serialises state file writes
        self._state_version = self._written_version = 0
        entries, self._state_problems = (
            read_state(self.state_path) if self.state_path else ([], []))
        self._remembered: dict[str, CatalogEntry] = {e.raster_id: e for e in entries}

    # -- opening ---------------------------------------------------------------------------
    def start_open(self, path: PathLikeStr, *, trusted: bool = False) -> OpenJob:
        """Start opening ``path``; the job is done at once unless a tiled copy must be built.

        Raises at once (RasterAccessError, RasterFormatError, RasterOpenError, ...) when the
        file is refused or unreadable; errors of the background build come from
        ``job.result()``. An open of a file that is open already returns its id; an open of a
        file whose copy is being built returns that build's job (so a cancel stops it for
        every opener).
        """
        return self._start(path, trusted=trusted, raster_id=None)

    def open(self, path: PathLikeStr, *, trusted: bool = False) -> str:
        """Open ``path`` (or return the id it already has) and return its catalog id; blocks
        while a tiled copy is built (``start_open`` does not)."""
        return self.start_open(path, trusted=trusted).result()

    def _start(self, path: PathLikeStr, *, trusted: bool, raster_id: str | None) -> OpenJob:
        raster = open_raster(path, policy=self.policy, trusted=trusted)  # checks path + pixels
        key = _file_key(raster)
        build = needs_cog(raster, self.cog_threshold_px) and _is_local(raster)
        with self._lock:
            if key in self._ids_by_key:
                return OpenJob.finished(raster.path, self._ids_by_key[key], trusted=trusted)
            if key in self._jobs:
                return self._jobs[key]
            if not build:
                raster_id = self._register_locked(key, raster, trusted, raster_id)
                job = OpenJob.finished(raster.path, raster_id, trusted=trusted)
            else:
                job = OpenJob(raster.path, trusted=trusted)
                self._jobs[key] = job
                thread = threading.Thread(
                    target=self._build, args=(job, key, raster, raster_id), daemon=True,
                    name=f"geolens-copy-{raster.path.name}",
                )
                self._threads.add(thread)
                thread.start()
        if not build:
            log.info("opened %s as %s (%dx%d, %s)", raster.path, job.raster_id, raster.width,
                     raster.height, raster.crs_label or "pixel space")
            self._save_state()
        return job

    def _build(self, job: OpenJob, key: FileKey, raster: Raster, raster_id: str | None) -> None:
        """Background thread: wait for a build slot, write the copy, register the raster."""
        try:
            self._acquire_slot(job)
            try:
                read_path = build_cog(
                    raster.path.resolve(), cog_cache_path(self.workspace_dir, raster.path),
                    raster, progress=job.report, cancelled=job.cancel_requested,
                )
            finally:
                self._build_slots.release()
            copy = open_raster(read_path, policy=self._cache_policy)
            copy = dataclasses.replace(copy, path=raster.path, read_path=read_path)
            with self._lock:
                raster_id = self._register_locked(key, copy, job.trusted, raster_id)
            self._save_state()
            log.info("opened %s as %s via its tiled copy %s", raster.path, raster_id, read_path)
            job.finish(raster_id=raster_id)
        except TilesError as exc:
            log.info("opening %s ended: %s", raster.path, exc)
            job.finish(error=exc)
        except Exception as exc:  # a bug, not the file: keep the job from hanging
            log.exception("opening %s failed unexpectedly", raster.path)
            job.finish(error=RasterOpenError(
                f"opening {str(raster.path)!r} failed unexpectedly ({type(exc).__name__}: "
                f"{exc}); see the server log."))
        finally:
            with self._lock:
                self._jobs.pop(key, None)
                self._threads.discard(threading.current_thread())

    def _acquire_slot(self, job: OpenJob) -> None:
        job.report(0.0, "waiting for another raster's copy to finish")
        while not self._build_slots.acquire(timeout=_SLOT_POLL_S):
            if job.cancel_requested.is_set():
                raise OpenCancelledError(f"opening {str(job.path)!r} was cancelled; nothing "
                                         "was kept.")
        job.report(0.0, "copying to a tiled GeoTIFF")

    def _register_locked(self, key: FileKey, raster: Raster, trusted: bool,
                         raster_id: str | None) -> str:
        """Add ``raster`` under ``raster_id`` (a new random id when None); caller holds _lock."""
        if raster_id is None or raster_id in self._rasters:
            raster_id = secrets.token_hex(6)
        self._sources[raster_id] = RasterSource(raster.file_to_read, rotated=raster.is_rotated,
                                                policy=raster.policy, trusted=raster.trusted)
        self._rasters[raster_id] = dataclasses.replace(raster, raster_id=raster_id)
        self._ids_by_key[key] = raster_id
        path = raster.path.absolute() if _is_local(raster) else raster.path
        self._remembered[raster_id] = CatalogEntry(raster_id, path, trusted, raster.read_path)
        self._state_version += 1
        return raster_id

    # -- restarts ----------------------------------------------------------------------------
    def restore(self) -> builtins.list[RestoreProblem]:
        """Reopen the rasters remembered in ``state_path`` under their old ids (blocking while
        a missing tiled copy is rebuilt). Returns what could not be reopened (each also logged
        as a warning); those entries are forgotten. Call once, before serving tiles."""
        problems, self._state_problems = builtins.list(self._state_problems), []
        with self._lock:
            pending = [e for e in self._remembered.values() if e.raster_id not in self._rasters]
        for entry in pending:
            try:
                got = self._start(entry.path, trusted=entry.trusted,
                                  raster_id=entry.raster_id).result()
                if got != entry.raster_id:
                    raise RasterOpenError(f"it is open already as {got}")
            except TilesError as exc:
                log.warning("could not reopen %s (id %s) from the workspace: %s", entry.path,
                            entry.raster_id, exc)
                problems.append(RestoreProblem(entry.raster_id, entry.path, str(exc)))
                with self._lock:
                    self._remembered.pop(entry.raster_id, None)
                    self._state_version += 1
        if problems or pending:
            self._save_state()
        return problems

    def _save_state(self) -> None:
        if self.state_path is None:
            return
        with self._state_lock:
            with self._lock:
                version, entries = self._state_version, builtins.list(self._remembered.values())
            if version <= self._written_version:
                return  # a newer snapshot was written already
            try:
                write_state(self.state_path, entries)
            except OSError as exc:
                log.warning("cannot save the catalog state %s: %s", self.state_path, exc)
                return
            self._written_version = version

    # -- lookups and closing -------------------------------------------------------------------
    def get(self, raster_id: str) -> Raster:
        """The open raster with this id; UnknownRasterError lists the open ids."""
        with self._lock:
            raster = self._rasters.get(raster_id)
            known = builtins.list(self._rasters)
        if raster is None:
            raise _not_open(raster_id, known)
        return raster

    def source(self, raster_id: str) -> RasterSource:
        """The pooled datasets of the open raster with this id, for reads (``read_crop``,
        ``render_tile``, ... take it as ``source=``); UnknownRasterError lists the open ids."""
        with self._lock:
            source = self._sources.get(raster_id)
            known = builtins.list(self._rasters)
        if source is None:
            raise _not_open(raster_id, known)
        return source

    def list(self) -> builtins.list[Raster]:
        """Open rasters in opening order."""
        with self._lock:
            return builtins.list(self._rasters.values())

    def jobs(self) -> builtins.list[OpenJob]:
        """Opens still building their tiled copy."""
        with self._lock:
            return builtins.list(self._jobs.values())

    def close(self, raster_id: str) -> None:
        """Close one raster, release its datasets and forget it (also in the state file)."""
        with self._lock:
            raster = self._rasters.pop(raster_id, None)
            source = self._sources.pop(raster_id, None)
            if raster is None:
                known = builtins.list(self._rasters)
            else:
                self._ids_by_key = {k: v for k, v in self._ids_by_key.items() if v != raster_id}
                self._remembered.pop(raster_id, None)
                self._state_version += 1
        if raster is None:
            raise UnknownRasterError(
                f"cannot close raster id {raster_id!r}: not open; open ids: {known or 'none'}"
            )
        if source is not None:
            source.close()
        self._save_state()

    def close_all(self, *, timeout_s: float = 10.0) -> None:
        """Cancel running builds (waiting up to ``timeout_s`` for them) and close every raster.
        The state file keeps them: a restarted catalog can :meth:`restore` them."""
        with self._lock:
            jobs, threads = builtins.list(self._jobs.values()), builtins.list(self._threads)
        for job in jobs:
            job.cancel()
        for thread in threads:
            thread.join(timeout_s)
        with self._lock:
            sources = builtins.list(self._sources.values())
            self._rasters, self._sources, self._ids_by_key = {}, {}, {}
        for source in sources:
            source.close()

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
