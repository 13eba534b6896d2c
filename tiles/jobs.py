"""A raster being opened: :class:`OpenJob` (progress, cancel, wait, result).

:meth:`tiles.catalog.Catalog.start_open` returns one. Small rasters are ready at once (a job
that is already ``done``); rasters that need a tiled copy (:mod:`tiles.cog`) build it on a
background thread while the job reports ``progress`` (0..1) and a ``message``; other opens do
not wait for it. Thread-safe: the building thread reports, any thread reads or cancels.
"""

from __future__ import annotations

import threading
from pathlib import Path

from tiles.errors import OpenCancelledError, TilesError

__all__ = ["OpenJob"]


class OpenJob:
    """The open of ``path``; ``result()`` gives its catalog id or raises its TilesError."""

    def __init__(self, path: Path, *, trusted: bool = False) -> None:
        self.path = Path(path)
        self.trusted = trusted
        self._lock = threading.Lock()
        self._done = threading.Event()
        self.cancel_requested = threading.Event()  # set by cancel(); the builder checks it
        self._progress = 0.0
        self._message = "waiting to start"
        self._raster_id: str | None = None
        self._error: TilesError | None = None

    @classmethod
    def finished(cls, path: Path, raster_id: str, *, trusted: bool = False) -> OpenJob:
        """A job that is already done (a small raster, or one that was open already)."""
        job = cls(path, trusted=trusted)
        job.finish(raster_id=raster_id)
        return job

    @property
    def progress(self) -> float:
        """Fraction done, 0..1 (1.0 once done, whatever the outcome)."""
        with self._lock:
            return self._progress

    @property
    def message(self) -> str:
        """What the job is doing, e.g. "copying to a tiled GeoTIFF (window 3 of 40)"."""
        with self._lock:
            return self._message

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def cancelled(self) -> bool:
        """True when the job ended because it was cancelled (no raster was opened)."""
        with self._lock:
            return isinstance(self._error, OpenCancelledError)

    @property
    def raster_id(self) -> str | None:
        """The catalog id once the job succeeded, else None."""
        with self._lock:
            return self._raster_id

    def cancel(self) -> None:
        """Ask the build to stop (at its next window); no effect once the job is done."""
        if not self.done:
            self.cancel_requested.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until done or ``timeout`` seconds passed; True when done."""
        return self._done.wait(timeout)

    def result(self, timeout: float | None = None) -> str:
        """The catalog id; re-raises the job's TilesError (OpenCancelledError when cancelled).
        TimeoutError when it is not done within ``timeout`` seconds."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"opening {str(self.path)!r} is still running ({self.message})")
        with self._lock:
            if self._error is not None:
                raise self._error
            assert self._raster_id is not None
            return self._raster_id

    # -- called by the catalog's building thread -------------------------------------------
    def report(self, fraction: float, message: str) -> None:
        """Record progress (clamped to 0..1; never goes backwards)."""
        with self._lock:
            self._progress = max(self._progress, min(max(float(fraction), 0.0), 1.0))
            self._message = message

    def finish(self, *, raster_id: str | None = None, error: TilesError | None = None) -> None:
        """Mark the job done with its id or its error (exactly one)."""
        if (raster_id is None) == (error is None):
            raise ValueError("OpenJob.finish needs exactly one of raster_id and error")
        with self._lock:
            self._raster_id, self._error = raster_id, error
            self._progress = 1.0
            if error is None:
                self._message = "open"
            elif isinstance(error, OpenCancelledError):
                self._message = "cancelled"
            else:
                self._message = f"failed: {error}"
        self._done.set()

    def __repr__(self) -> str:
        return (f"OpenJob({str(self.path)!r}, progress={self.progress:.2f}, "
                f"message={self.message!r}, done={self.done})")
