"""Raster ids survive a restart (issue 18, item 4): the catalog remembers what is open."""

from __future__ import annotations

import json

import pytest

import tiles
from tiles.catalog_state import CatalogEntry, read_state, write_state


def _catalog(tmp_path, **kwargs) -> tiles.Catalog:
    return tiles.Catalog(tmp_path / "ws" / "cache", state_path=tmp_path / "ws" / "catalog.json",
                         cog_threshold_px=1024, **kwargs)


def test_restore_reopens_with_the_same_ids(tmp_path, rasters):
    with _catalog(tmp_path) as cat:
        small = cat.open(rasters["utm_rgb"])
        big = cat.open(rasters["large_striped"])  # has a tiled copy
        png = cat.open(rasters["plain_png"], trusted=True)
        copy = cat.get(big).read_path
    saved = json.loads((tmp_path / "ws" / "catalog.json").read_text())
    assert saved["version"] == 1
    assert [r["id"] for r in saved["rasters"]] == [small, big, png]
    assert [r["trusted"] for r in saved["rasters"]] == [False, False, True]
    assert saved["rasters"][1]["read_path"] == str(copy)
    with _catalog(tmp_path) as cat:
        assert len(cat) == 0  # restoring is explicit
        assert cat.restore() == []
        assert [r.raster_id for r in cat.list()] == [small, big, png]
        assert cat.get(big).read_path == copy and cat.get(png).trusted
        assert cat.open(rasters["utm_rgb"]) == small  # later opens find the restored id
        tiles.render_tile(cat.get(small), 0, 0, 0)


def test_missing_file_is_skipped_and_reported(tmp_path, rasters):
    gone = tmp_path / "gone.tif"
    gone.write_bytes(rasters["utm_rgb"].read_bytes())
    with _catalog(tmp_path) as cat:
        gone_id = cat.open(gone)
        kept = cat.open(rasters["nodata_rgb"])
    gone.unlink()
    with _catalog(tmp_path) as cat:
        problems = cat.restore()
        assert [(p.raster_id, p.path) for p in problems] == [(gone_id, gone)]
        assert "does not exist" in problems[0].reason
        assert str(problems[0]).startswith("gone.tif could not be reopened: ")
        assert [r.raster_id for r in cat.list()] == [kept]
    entries, _ = read_state(tmp_path / "ws" / "catalog.json")
    assert [e.raster_id for e in entries] == [kept]  # forgotten


def test_restore_applies_the_current_policy(tmp_path, rasters):
    with _catalog(tmp_path) as cat:
        untrusted = cat.open(rasters["utm_rgb"])
        trusted = cat.open(rasters["nodata_rgb"], trusted=True)
    data = tmp_path / "data"
    data.mkdir()
    with _catalog(tmp_path, policy=tiles.OpenPolicy(data_dirs=(data,))) as cat:
        problems = cat.restore()
        assert [p.raster_id for p in problems] == [untrusted]
        assert "--data-dir" in problems[0].reason
        assert [r.raster_id for r in cat.list()] == [trusted]


def test_close_forgets_and_close_all_remembers(tmp_path, rasters):
    with _catalog(tmp_path) as cat:
        first = cat.open(rasters["utm_rgb"])
        second = cat.open(rasters["nodata_rgb"])
        cat.close(first)
    entries, _ = read_state(tmp_path / "ws" / "catalog.json")
    assert [e.raster_id for e in entries] == [second]


def test_opens_before_restore_keep_the_remembered_entries(tmp_path, rasters):
    with _catalog(tmp_path) as cat:
        old = cat.open(rasters["utm_rgb"])
    with _catalog(tmp_path) as cat:
        new = cat.open(rasters["nodata_rgb"])
        entries, _ = read_state(tmp_path / "ws" / "catalog.json")
        assert [e.raster_id for e in entries] == [old, new]
        assert cat.restore() == [] and old in cat and new in cat


def test_corrupt_state_is_moved_aside_and_reported(tmp_path, rasters):
    state = tmp_path / "ws" / "catalog.json"
    state.parent.mkdir(parents=True)
    state.write_text("{not json")
    with _catalog(tmp_path) as cat:
        problems = cat.restore()
        assert len(problems) == 1 and "moved to" in problems[0].reason
        assert problems[0].raster_id is None and str(problems[0]) == problems[0].reason
        cat.open(rasters["utm_rgb"])
    aside = list(state.parent.glob("catalog.corrupt-*.json"))
    assert len(aside) == 1 and aside[0].read_text() == "{not json"
    assert len(read_state(state)[0]) == 1


def test_bad_entries_are_skipped(tmp_path):
    state = tmp_path / "catalog.json"
    state.write_text(json.dumps({"version": 1, "rasters": [
        {"id": "../../etc", "path": "/x.tif"}, {"id": "0123456789ab", "path": "/y.tif"}]}))
    entries, problems = read_state(state)
    assert [e.raster_id for e in entries] == ["0123456789ab"] and len(problems) == 1


def test_state_writes_are_atomic(tmp_path):
    state = tmp_path / "catalog.json"
    entries = [CatalogEntry("0123456789ab", tmp_path / "a.tif", trusted=True)]
    write_state(state, entries)
    assert read_state(state) == (entries, [])
    assert [p.name for p in tmp_path.iterdir()] == ["catalog.json"]  # no temp file left
    with pytest.raises(ValueError, match="12 lowercase hex"):
        CatalogEntry("ABC", tmp_path / "a.tif")


def test_ids_of_restored_rasters_are_not_reused(tmp_path, rasters):
    with _catalog(tmp_path) as cat:
        first = cat.open(rasters["utm_rgb"])
    with _catalog(tmp_path) as cat:
        cat.restore()
        other = cat.open(rasters["nodata_rgb"])
        assert other != first and {first, other} == {r.raster_id for r in cat.list()}
