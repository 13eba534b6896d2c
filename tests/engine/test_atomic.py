"""All-or-nothing writes (engine.atomic): a destination is replaced only by complete content,
and a failure midway leaves it as it was with no temporary file behind."""

from __future__ import annotations

import pytest

from engine.atomic import atomic_directory, atomic_file, write_text_atomic


def test_a_file_is_replaced_only_when_the_write_completes(tmp_path):
    path = tmp_path / "sub" / "out.jsonl"
    assert write_text_atomic(path, "old\n") == path and path.read_text() == "old\n"
    with pytest.raises(RuntimeError), atomic_file(path) as handle:
        handle.write("half")
        raise RuntimeError("interrupted")
    assert path.read_text() == "old\n"
    assert [p.name for p in path.parent.iterdir()] == ["out.jsonl"]  # no temporary left
    with atomic_file(path, "wb") as handle:
        handle.write(b"new\n")
    assert path.read_bytes() == b"new\n"


def test_a_directory_appears_complete_or_not_at_all(tmp_path):
    final = tmp_path / "run" / "final"
    with pytest.raises(KeyboardInterrupt), atomic_directory(final) as tmp:
        (tmp / "a.txt").write_text("1")
        raise KeyboardInterrupt
    assert not final.exists() and list(final.parent.iterdir()) == []
    with atomic_directory(final) as tmp:
        assert tmp.parent == final.parent and not final.exists()
        (tmp / "nested").mkdir()
        (tmp / "nested" / "b.txt").write_text("2")
    assert (final / "nested" / "b.txt").read_text() == "2"


def test_an_existing_directory_is_swapped_out_at_the_end(tmp_path):
    final = tmp_path / "kb"
    with atomic_directory(final) as tmp:
        (tmp / "old.txt").write_text("old")
    with atomic_directory(final) as tmp:
        (tmp / "new.txt").write_text("new")
        assert (final / "old.txt").is_file()  # the old one stays until the block succeeds
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["kb"]  # old copy and temporary removed
