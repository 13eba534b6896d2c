"""Corpus formats of the knowledge base: plain text, JSONL, RSICD-style caption files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.errors import CorpusError
from engine.retrieval import Description, normalise_text, read_corpus
from engine.retrieval.corpus import detect_format

# Real counts in ../shared/data/captions/<set>/: (caption lines, non-blank captions, images named,
# images with captions). RSITMD's caption file holds 20 blank lines: 4 images have no captions.
CAPTION_COUNTS = {
    "rsicd": (49_140, 49_140, 9_828, 9_828),
    "rsitmd": (21_455, 21_435, 4_291, 4_287),
    "ucm": (8_400, 8_400, 1_680, 1_680),
    "sydney": (2_485, 2_485, 497, 497),
}


def test_description_validates_text_level_and_metadata() -> None:
    assert Description("a road", "x.txt", "object").level == "object"
    with pytest.raises(CorpusError, match="non-blank"):
        Description("   ", "x.txt")
    with pytest.raises(CorpusError, match="level must be one of"):
        Description("a road", "x.txt", "pixel")
    with pytest.raises(CorpusError, match="metadata must be a dict"):
        Description("a road", "x.txt", metadata=["a"])  # type: ignore[arg-type]


def test_plain_text_one_description_per_nonblank_line(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("\ufeffa harbour with boats\n\n  two piers   \n", encoding="utf-8")
    descriptions = read_corpus([path])
    assert [d.text for d in descriptions] == ["a harbour with boats", "two piers"]
    assert descriptions[1] == Description("two piers", "notes.txt", None)
    assert descriptions[1].metadata == {"line": 3}
    assert detect_format(path) == "text"


def test_jsonl_keeps_source_level_and_extra_keys(tmp_path: Path) -> None:
    path = tmp_path / "reports.data"  # no .jsonl suffix: detected from the first line
    records = [
        {"text": "a solar farm", "source": "report-7", "level": "scene", "metadata": {"page": 2}},
        {"text": "a white tank", "level": "object", "image": "t.png"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    first, second = read_corpus([path])
    assert (first.text, first.source, first.level, first.metadata) == (
        "a solar farm",
        "report-7",
        "scene",
        {"page": 2},
    )
    assert (second.source, second.level, second.metadata) == (
        "reports.data",
        "object",
        {"image": "t.png"},
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text": "ok"', "line 2: not valid JSON"),
        ('{"txt": "no text key"}', "line 2: JSON object has no 'text' key"),
        ('{"text": "x", "level": "pixel"}', "line 2: description level must be one of"),
        ('{"text": "x", "metadata": [1]}', "line 2: 'metadata' must be a JSON object"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=message) as info:
        read_corpus([path])
    assert str(path) in str(info.value)


def test_wrong_encoding_reports_byte_offset_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("first line\nSão Paulo harbour\n".encode("latin-1"))
    with pytest.raises(CorpusError) as info:
        read_corpus([path])
    message = str(info.value)
    assert str(path) in message and "byte offset 12" in message and "line 2" in message
    assert "0xe3" in message and "re-encode the file to UTF-8" in message


def test_missing_unreadable_and_empty_inputs(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        read_corpus([tmp_path / "nope.txt"])
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(CorpusError, match="the corpus is empty"):
        read_corpus([blank])
    with pytest.raises(CorpusError, match="not a caption corpus"):
        read_corpus([tmp_path])  # a folder without <split>_caps.txt
    with pytest.raises(CorpusError, match="unknown corpus format 'csv'"):
        read_corpus([blank], fmt="csv")


def test_caption_pair_uneven_counts_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "train_caps.txt").write_text("a\nb\nc\n", encoding="utf-8")
    (tmp_path / "train_filename.txt").write_text("1.tif\n2.tif\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="has 3 caption lines but .* names 2 images"):
        read_corpus([tmp_path / "train_caps.txt"])


def test_caption_pair_maps_consecutive_captions_to_images(tmp_path: Path) -> None:
    folder = tmp_path / "mini"
    folder.mkdir()
    (folder / "train_caps.txt").write_text(
        "a\nb\n\n\nc\nd\n\n", encoding="utf-8"
    )  # image 2 has none
    (folder / "train_filename.txt").write_text("1.tif\n2.tif\n3.tif\n", encoding="utf-8")
    for given in (folder, folder / "train_caps.txt", folder / "train_filename.txt"):
        descriptions = read_corpus([given])
        assert [d.text for d in descriptions] == ["a", "b", "c", "d"]
        assert [d.source for d in descriptions] == [
            "mini/1.tif",
            "mini/1.tif",
            "mini/3.tif",
            "mini/3.tif",
        ]
        assert {d.level for d in descriptions} == {"scene"}
        assert descriptions[3].metadata == {"dataset": "mini", "split": "train", "image": "3.tif"}


@pytest.mark.parametrize("name", sorted(CAPTION_COUNTS))
def test_real_caption_files_parse_with_their_published_counts(shared_data: Path, name: str) -> None:
    n_lines, n_captions, n_names, n_images = CAPTION_COUNTS[name]
    folder = shared_data / "captions" / name
    with (folder / "train_caps.txt").open("rb") as handle:
        assert sum(1 for _ in handle) == n_lines
    with (folder / "train_filename.txt").open("rb") as handle:
        assert sum(1 for _ in handle) == n_names
    assert detect_format(folder / "train_caps.txt") == "captions"
    descriptions = read_corpus([folder])
    assert len(descriptions) == n_captions
    assert len({d.metadata["image"] for d in descriptions}) == n_images
    assert all(d.source.startswith(f"{name}/") and d.level == "scene" for d in descriptions)
    # the first image's captions are the first lines of the caption file
    first_image = (
        (folder / "train_filename.txt").read_text(encoding="utf-8").split("\n", 1)[0].strip()
    )
    first_caption = (
        (folder / "train_caps.txt").read_text(encoding="utf-8").split("\n", 1)[0].strip()
    )
    assert (
        descriptions[0].source == f"{name}/{first_image}" and descriptions[0].text == first_caption
    )


def test_normalise_text_collapses_whitespace() -> None:
    assert normalise_text("  a\tsolar \n farm ") == "a solar farm"
