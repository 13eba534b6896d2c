"""Opening big rasters in the background (issue 18, item 4): progress, cancel, one build per
file, other opens not blocked."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import rasterio

import tiles
import tiles.catalog
from tiles.cog import build_cog, cog_cache_path


@pytest.fixture
def gate(monkeypatch):
    """Holds every catalog build at its first progress report until ``gate.set()``."""
    release, reached = threading.Event(), threading.Event()
    real = tiles.catalog.build_cog

    def held_build(source, cog_path, raster, *, progress, cancelled):
        def report(fraction, message):
            progress(fraction, message)
            reached.set()
            assert release.wait(30), "the test never released the build"

        return real(source, cog_path, raster, progress=report, cancelled=cancelled)

    monkeypatch.setattr(tiles.catalog, "build_cog", held_build)
    release.reached = reached
    yield release
    release.set()


def test_small_rasters_are_done_at_once(catalog, rasters):
    job = catalog.start_open(rasters["utm_rgb"])
    assert job.done and job.progress == 1.0 and not job.cancelled
    assert job.result() == job.raster_id and job.raster_id in catalog


def test_big_raster_builds_in_the_background_with_progress(tmp_path, rasters):
    seen: list[tuple[float, str]] = []
    with tiles.Catalog(tmp_path / "ws", cog_threshold_px=1024) as cat:
        job = cat.start_open(rasters["large_striped"])
        while not job.wait(0.005):
            seen.append((job.progress, job.message))
        raster_id = job.result()
        raster = cat.get(raster_id)
        assert raster.read_path is not None and raster.path == rasters["large_striped"]
        assert job.progress == 1.0 and job.message == "open" and cat.jobs() == []
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and all(0.0 <= f <= 1.0 for f in fractions)


def test_build_reports_every_window_then_the_overviews(tmp_path, rasters):
    raster = tiles.open_raster(rasters["large_striped"])  # 2048 px: 4 windows of 512 rows
    reports: list[tuple[float, str]] = []
    out = build_cog(rasters["large_striped"], tmp_path / "c.tif", raster,
                    progress=lambda f, m: reports.append((f, m)))
    assert [m for _, m in reports][:4] == [
        f"copying to a tiled GeoTIFF (window {i} of 4)" for i in (1, 2, 3, 4)]
    assert reports[4][1].startswith("building overviews") and reports[-1] == (1.0, "done")
    with rasterio.open(out) as cog, rasterio.open(rasters["large_striped"]) as src:
        assert np.array_equal(cog.read(), src.read())  # lossless
        assert cog.colorinterp == src.colorinterp and cog.crs == src.crs


def test_cancelled_build_leaves_nothing(tmp_path, rasters):
    raster = tiles.open_raster(rasters["large_striped"])
    cancelled = threading.Event()
    with pytest.raises(tiles.OpenCancelledError, match="cancelled"):
        build_cog(rasters["large_striped"], tmp_path / "cache" / "c.tif", raster,
                  progress=lambda f, m: cancelled.set(), cancelled=cancelled)
    assert list((tmp_path / "cache").iterdir()) == []  # no temp file, no final file


def test_cancel_from_the_catalog(tmp_path, rasters, gate):
    workspace = tmp_path / "ws"
    with tiles.Catalog(workspace, cog_threshold_px=1024) as cat:
        job = cat.start_open(rasters["large_striped"])
        assert gate.reached.wait(30) and not job.done
        job.cancel()
        gate.set()
        assert job.wait(30)
        assert job.cancelled and job.message == "cancelled" and job.raster_id is None
        with pytest.raises(tiles.OpenCancelledError):
            job.result()
        assert len(cat) == 0 and cat.jobs() == []
        # cancelling is not sticky: the file can be opened again
        assert cat.open(rasters["large_striped"]) in cat
    assert [p.name for p in (workspace / "cog-cache").iterdir()] == [
        cog_cache_path(workspace, rasters["large_striped"]).name]


def test_other_opens_do_not_wait_for_a_build(tmp_path, rasters, gate):
    with tiles.Catalog(tmp_path / "ws", cog_threshold_px=1024) as cat:
        big = cat.start_open(rasters["large_striped"])
        assert gate.reached.wait(30)
        started = time.perf_counter()
        small = cat.open(rasters["utm_rgb"])  # while the big copy is held mid-way
        assert time.perf_counter() - started < 5 and small in cat and not big.done
        again = cat.start_open(rasters["large_striped"])
        assert again is big  # the same file is built once; both openers share the job
        gate.set()
        assert big.result(timeout=60) == again.result()


def test_result_timeout_and_repr(tmp_path, rasters, gate):
    with tiles.Catalog(tmp_path / "ws", cog_threshold_px=1024) as cat:
        job = cat.start_open(rasters["large_striped"])
        assert gate.reached.wait(30)
        with pytest.raises(TimeoutError, match="still running"):
            job.result(timeout=0.01)
        assert "large_striped" in repr(job)
        gate.set()
        job.result(timeout=60)


def test_close_all_cancels_running_builds(tmp_path, rasters, gate):
    cat = tiles.Catalog(tmp_path / "ws", cog_threshold_px=1024)
    job = cat.start_open(rasters["large_striped"])
    assert gate.reached.wait(30)
    closer = threading.Thread(target=cat.close_all)
    closer.start()
    time.sleep(0.05)
    gate.set()
    closer.join(30)
    assert job.done and job.cancelled and len(cat) == 0


def test_build_failure_surfaces_in_result(tmp_path, rasters, monkeypatch):
    def broken(*args, **kwargs):
        raise tiles.RasterOpenError("cannot build a tiled copy: disk full")

    monkeypatch.setattr(tiles.catalog, "build_cog", broken)
    with tiles.Catalog(tmp_path / "ws", cog_threshold_px=1024) as cat:
        job = cat.start_open(rasters["large_striped"])
        with pytest.raises(tiles.RasterOpenError, match="disk full"):
            job.result(timeout=30)
        assert job.message.startswith("failed:") and len(cat) == 0
