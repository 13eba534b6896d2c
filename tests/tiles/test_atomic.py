"""atomic_path / write_text_atomic: the destination is complete or untouched, no temp is left."""

from __future__ import annotations

import os

import pytest

from tiles.atomic import atomic_path, write_text_atomic


def test_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "state.json"
    assert write_text_atomic(target, "one") == target
    write_text_atomic(target, "two")
    assert target.read_text(encoding="utf-8") == "two"
    assert os.listdir(target.parent) == ["state.json"]


def test_failure_midway_keeps_the_old_file(tmp_path):
    target = tmp_path / "scene.tif"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".tif" and tmp.name.startswith(".")
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["scene.tif"]


def test_nothing_written_is_an_error_and_leaves_nothing(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "x.geojson"):
        pass  # the writer never created the file
    assert os.listdir(tmp_path) == []
