"""``python -m engine.retrieval``: builds from the real caption files, queries, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.retrieval import ClipEmbedder, normalise_text, read_corpus, read_manifest
from engine.retrieval.cli import main
from tests.engine.retrieval_helpers import tiny_clip_config

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def tiny_json(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(tiny_clip_config()), encoding="utf-8")
    return path


def _tiny_model(tiny_json: Path) -> list[str]:
    return ["--model-config", str(tiny_json), "--checkpoint", "none"]


def _unique_count(paths: list[Path]) -> int:
    return len({normalise_text(d.text) for d in read_corpus(paths)})


def test_build_and_query_from_real_caption_files(
    shared_data: Path, tiny_json: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    captions = shared_data / "captions"
    corpus = [captions / "ucm", captions / "sydney" / "train_caps.txt"]
    out = tmp_path / "kb"
    assert (
        main(["build", "--corpus", *map(str, corpus), *_tiny_model(tiny_json), "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr()
    manifest = read_manifest(out)
    assert (
        manifest.count == _unique_count(corpus)
        and manifest.duplicates_dropped == 8400 + 2485 - manifest.count
    )
    assert f"built {out}: {manifest.count} descriptions" in printed.out
    assert "RANDOMLY INITIALISED" in printed.err  # the loud warning for --checkpoint none

    assert (
        main(["query", "--kb", str(out), "--text", "a river beside the houses", "-k", "3"]) == 0
    )  # model from manifest
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and lines[1].lstrip().startswith("1. +") and "[scene]" in lines[1]
    image = next((shared_data / "scenes" / "dRiverLake").iterdir())
    assert main(["query", "--kb", str(out), "--image", str(image), *_tiny_model(tiny_json)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6 and ("ucm/" in lines[1] or "sydney/" in lines[1])

    assert main(["info", "--kb", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == manifest.count


@pytest.mark.slow  # ~20-45 s on 2 shared cores: 35k unique captions through the tiny text tower
def test_build_over_all_four_caption_sets(
    shared_data: Path, tiny_json: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    corpus = [shared_data / "captions" / name for name in ("rsicd", "rsitmd", "ucm", "sydney")]
    out = tmp_path / "kb"
    assert (
        main(
            [
                "build",
                "--corpus",
                *map(str, corpus),
                *_tiny_model(tiny_json),
                "--out",
                str(out),
                "--batch-size",
                "512",
            ]
        )
        == 0
    )
    manifest = read_manifest(out)
    assert manifest.count == _unique_count(corpus)
    assert (
        manifest.count + manifest.duplicates_dropped == 49_140 + 21_435 + 8_400 + 2_485
    )  # non-blank captions
    sources = {
        json.loads(line)["source"].split("/")[0]
        for line in (out / "texts.jsonl").open(encoding="utf-8")
    }
    assert sources == {"rsicd", "rsitmd", "ucm", "sydney"}


def test_saved_embedder_build_and_query(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ClipEmbedder.from_config(tiny_clip_config(), seed=3).save(tmp_path / "emb")
    corpus = tmp_path / "notes.txt"
    corpus.write_text(
        "a harbour with boats\na solar farm\nan airport with planes\n", encoding="utf-8"
    )
    assert (
        main(
            [
                "build",
                "--corpus",
                str(corpus),
                "--embedder",
                str(tmp_path / "emb"),
                "--out",
                str(tmp_path / "kb"),
            ]
        )
        == 0
    )
    assert read_manifest(tmp_path / "kb").embedder == {
        "kind": "saved",
        "path": str((tmp_path / "emb").resolve()),
    }
    capsys.readouterr()
    assert main(["query", "--kb", str(tmp_path / "kb"), "--text", "a solar farm", "-k", "1"]) == 0
    assert "+1.0000  notes.txt  [-]  a solar farm" in capsys.readouterr().out


def test_add_appends_only_new_descriptions(
    tiny_json: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    first, more = tmp_path / "first.txt", tmp_path / "more.jsonl"
    first.write_text("a harbour with boats\na solar farm\n", encoding="utf-8")
    more.write_text(
        '{"text": "a solar  farm"}\n{"text": "a quarry", "level": "object", "source": "r1"}\n',
        encoding="utf-8",
    )
    out = str(tmp_path / "kb")
    assert main(["build", "--corpus", str(first), *_tiny_model(tiny_json), "--out", out]) == 0
    assert main(["add", "--kb", out, "--corpus", str(more)]) == 0  # model from the manifest
    assert "added 1 of 2 descriptions" in capsys.readouterr().out
    manifest = read_manifest(tmp_path / "kb")
    assert (manifest.count, manifest.duplicates_dropped) == (3, 1)
    assert main(["query", "--kb", out, "--text", "a quarry", "-k", "1"]) == 0
    assert "+1.0000  r1  [object]  a quarry" in capsys.readouterr().out


def _error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_bad_inputs_give_one_line_errors(
    tiny_json: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    empty, latin1, good = tmp_path / "empty.txt", tmp_path / "latin1.txt", tmp_path / "good.txt"
    empty.write_text("\n\n", encoding="utf-8")
    latin1.write_bytes("Köln harbour\n".encode("latin-1"))
    good.write_text("a harbour\n", encoding="utf-8")
    out = ["--out", str(tmp_path / "kb")]
    assert "error: the corpus is empty" in _error(
        ["build", "--corpus", str(empty), *_tiny_model(tiny_json), *out], capsys
    )
    err = _error(["build", "--corpus", str(latin1), *_tiny_model(tiny_json), *out], capsys)
    assert str(latin1) in err and "byte offset 1" in err and "re-encode the file to UTF-8" in err
    assert "does not exist" in _error(
        ["build", "--corpus", str(tmp_path / "nope.txt"), *_tiny_model(tiny_json), *out], capsys
    )
    assert "--checkpoint none" in _error(
        ["build", "--corpus", str(good), "--model-config", str(tiny_json), *out], capsys
    )
    assert "unknown open_clip architecture 'ViT-Q-99'" in _error(
        ["build", "--corpus", str(good), "--model", "ViT-Q-99", "--checkpoint", "none", *out],
        capsys,
    )
    assert "checkpoint file" in _error(
        [
            "build",
            "--corpus",
            str(good),
            "--model",
            "ViT-B-32",
            "--checkpoint",
            str(tmp_path / "w.pt"),
            *out,
        ],
        capsys,
    )
    assert "needs an embedding model" in _error(["build", "--corpus", str(good), *out], capsys)
    assert not (tmp_path / "kb").exists()

    assert main(["build", "--corpus", str(good), *_tiny_model(tiny_json), *out]) == 0
    assert "already exists; pass overwrite=True (CLI: --overwrite)" in _error(
        ["build", "--corpus", str(good), *_tiny_model(tiny_json), *out], capsys
    )
    assert "no knowledge base at" in _error(
        ["query", "--kb", str(tmp_path / "none"), "--text", "x"], capsys
    )
    assert "cannot read image" in _error(
        ["query", "--kb", str(tmp_path / "kb"), "--image", str(good)], capsys
    )
    other = ["--model-config", str(tiny_json), "--checkpoint", "none", "--text", "x"]
    bad_cfg = tmp_path / "bad.json"
    bad_cfg.write_text("{not json", encoding="utf-8")
    assert "cannot read model config" in _error(
        [
            "query",
            "--kb",
            str(tmp_path / "kb"),
            "--model-config",
            str(bad_cfg),
            "--checkpoint",
            "none",
            "--text",
            "x",
        ],
        capsys,
    )
    assert main(["query", "--kb", str(tmp_path / "kb"), *other]) == 0


def test_module_entry_point_exits_nonzero_without_traceback(tmp_path: Path) -> None:
    corpus = tmp_path / "cp1252.txt"
    corpus.write_bytes("caf\xe9 on the square\n".encode("cp1252"))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.retrieval",
            "build",
            "--corpus",
            str(corpus),
            "--model",
            "ViT-B-32",
            "--checkpoint",
            "none",
            "--out",
            str(tmp_path / "kb"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert (
        "error:" in result.stderr
        and "byte offset 3" in result.stderr
        and "Traceback" not in result.stderr
    )
    assert not (tmp_path / "kb").exists()
