"""Description corpora: the texts that go into the semantic knowledge base (paper III-A1).

A :class:`Description` is one text with its provenance (``source``), an optional semantic level
(``"scene"`` / ``"object"``) and free JSON metadata. :func:`read_corpus` reads three formats,
chosen per path by :data:`CORPUS_FORMATS` or detected automatically:

``text``
    plain UTF-8 text, one description per non-blank line; source = file name.
``jsonl``
    one JSON object per line: ``{"text": ..., "source"?: ..., "level"?: ..., "metadata"?: {...}}``;
    any other keys are kept in ``metadata``. Detected by a ``.jsonl``/``.ndjson`` suffix or a
    first line that is a JSON object.
``captions``
    the RSICD / RSITMD / UCM / Sydney caption layout: ``<split>_caps.txt`` (one caption a line)
    beside ``<split>_filename.txt`` (one image file name a line, each image owning the same
    number of consecutive captions, five in all four datasets). Pass either file or the folder;
    source = ``<folder name>/<image file name>``, level = ``scene``. Detected by those names.

Bad files raise :class:`~engine.errors.CorpusError` naming the file, the line or byte offset and
what to do (re-encode to UTF-8, fix the JSON, ...).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import CorpusError
from engine.types import Level

__all__ = ["CORPUS_FORMATS", "Description", "iter_corpus", "normalise_text", "read_corpus"]

log = logging.getLogger(__name__)

_LEVELS = tuple(level.value for level in Level)
_JSONL_KEYS = ("text", "source", "level", "metadata")


@dataclass(frozen=True)
class Description:
    """One knowledge-base text: ``text`` (non-blank), ``source``, ``level`` (scene/object/None)."""

    text: str
    source: str
    level: str | None = None
    metadata: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip():
            raise CorpusError(f"a description needs a non-blank text, got {self.text!r}")
        if not isinstance(self.source, str):
            raise CorpusError(f"description source must be a string, got {self.source!r}")
        if isinstance(self.level, Level):
            object.__setattr__(self, "level", self.level.value)
        if self.level is not None and self.level not in _LEVELS:
            raise CorpusError(
                f"description level must be one of {_LEVELS} or None, got {self.level!r}"
            )
        if not isinstance(self.metadata, dict):
            raise CorpusError(
                f"description metadata must be a dict, got {type(self.metadata).__name__}"
            )

    def to_json(self) -> dict:
        """The JSONL record written to ``texts.jsonl``."""
        return {
            "text": self.text,
            "source": self.source,
            "level": self.level,
            "metadata": self.metadata,
        }

    @classmethod
    def from_json(cls, record: object, default_source: str) -> Description:
        """A description from one parsed JSONL record; unknown keys go into ``metadata``."""
        if not isinstance(record, dict):
            raise CorpusError(
                f"expected a JSON object with a 'text' key, got {type(record).__name__}"
            )
        if "text" not in record:
            raise CorpusError(f"JSON object has no 'text' key (keys: {sorted(record)})")
        metadata = record.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise CorpusError(f"'metadata' must be a JSON object, got {metadata!r}")
        extra = {k: v for k, v in record.items() if k not in _JSONL_KEYS}
        return cls(
            text=record["text"],
            source=str(record.get("source") or default_source),
            level=record.get("level"),
            metadata={**extra, **metadata},
        )


def normalise_text(text: str) -> str:
    """The de-duplication key: the text with runs of whitespace collapsed to one space."""
    return " ".join(text.split())


def read_corpus(paths: Sequence[Path | str], fmt: str = "auto") -> list[Description]:
    """All descriptions in ``paths`` (files or caption folders), in order; raises if empty."""
    descriptions = list(iter_corpus(paths, fmt))
    if not descriptions:
        shown = ", ".join(str(p) for p in paths) or "(no paths given)"
        raise CorpusError(
            f"the corpus is empty: no descriptions in {shown}; give files with one description a "
            "line, JSONL records with a 'text' key, or a <split>_caps.txt caption file"
        )
    return descriptions


def iter_corpus(paths: Sequence[Path | str], fmt: str = "auto") -> Iterator[Description]:
    """Stream the descriptions of ``paths``; each path's format is ``fmt`` or detected."""
    if fmt != "auto" and fmt not in CORPUS_FORMATS:
        raise CorpusError(
            f"unknown corpus format {fmt!r}; use one of: auto, {', '.join(CORPUS_FORMATS)}"
        )
    for raw_path in paths:
        path = Path(raw_path)
        if not path.exists():
            raise CorpusError(f"corpus file {path} does not exist; check the path")
        path_fmt = detect_format(path) if fmt == "auto" else fmt
        count = 0
        for description in CORPUS_FORMATS[path_fmt](path):
            count += 1
            yield description
        if count == 0:
            log.warning("corpus file %s (%s format) holds no descriptions", path, path_fmt)


def detect_format(path: Path) -> str:
    """``captions``, ``jsonl`` or ``text`` for ``path`` (see the module docstring for the rules)."""
    if path.is_dir() or _caption_pair(path) is not None:
        return "captions"
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return "jsonl"
    for _, line in _iter_lines(path):
        return "jsonl" if line.startswith("{") and _is_json_object(line) else "text"
    return "text"


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


def _iter_lines(path: Path, keep_blank: bool = False) -> Iterator[tuple[int, str]]:
    """(1-based line number, stripped text) of each non-blank (or every) line of a UTF-8 file."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise CorpusError(
            f"cannot read corpus file {path}: {exc.strerror or exc}; check the path and permissions"
        ) from exc
    with handle:
        offset = 0
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise CorpusError(
                    f"{path} is not valid UTF-8: byte 0x{raw[exc.start]:02x} at byte offset "
                    f"{offset + exc.start} "
                    f"(line {number}) cannot be decoded; re-encode the file to UTF-8, e.g. "
                    f"`iconv -f latin1 -t utf-8 {path} > fixed.txt`"
                ) from None
            offset += len(raw)
            text = text.strip()
            if text or keep_blank:
                yield number, text


def _read_text(path: Path) -> Iterator[Description]:
    for number, line in _iter_lines(path):
        yield Description(text=line, source=path.name, metadata={"line": number})


def _read_jsonl(path: Path) -> Iterator[Description]:
    for number, line in _iter_lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(
                f"{path} line {number}: not valid JSON ({exc.msg} at column {exc.colno}); "
                "fix or remove the line"
            ) from None
        try:
            yield Description.from_json(record, default_source=path.name)
        except CorpusError as exc:
            raise CorpusError(f"{path} line {number}: {exc}") from None


def _caption_pair(path: Path) -> tuple[Path, Path] | None:
    """(captions file, file-names file) when ``path`` is one of such a pair, else None."""
    for caps_suffix, names_suffix in (("_caps.txt", "_filename.txt"),):
        if path.name.endswith(caps_suffix):
            names = path.with_name(path.name[: -len(caps_suffix)] + names_suffix)
            return (path, names) if names.is_file() else None
        if path.name.endswith(names_suffix):
            caps = path.with_name(path.name[: -len(names_suffix)] + caps_suffix)
            return (caps, path) if caps.is_file() else None
    return None


def _read_captions(path: Path) -> Iterator[Description]:
    pairs = (
        [_caption_pair(p) for p in sorted(path.glob("*_caps.txt"))]
        if path.is_dir()
        else [_caption_pair(path)]
    )
    pairs = [p for p in pairs if p is not None]
    if not pairs:
        raise CorpusError(
            f"{path} is not a caption corpus: expected <split>_caps.txt beside "
            "<split>_filename.txt "
            "(the RSICD/RSITMD/UCM/Sydney layout)"
        )
    for caps_path, names_path in pairs:
        yield from _read_caption_pair(caps_path, names_path)


def _read_caption_pair(caps_path: Path, names_path: Path) -> Iterator[Description]:
    """Caption line i belongs to image i // captions-per-image; blank caption lines are skipped
    (RSITMD leaves 4 images without captions: 5 blank lines each)."""
    captions = _without_trailing_blanks(
        [line for _, line in _iter_lines(caps_path, keep_blank=True)]
    )
    names = [line for _, line in _iter_lines(names_path)]
    if not names or len(captions) % len(names) != 0:
        raise CorpusError(
            f"{caps_path} has {len(captions)} caption lines but {names_path} names "
            f"{len(names)} images; "
            "each image must own the same number of consecutive caption lines"
        )
    per_image = len(captions) // len(names)
    dataset = caps_path.parent.name
    split = caps_path.name[: -len("_caps.txt")]
    for i, caption in enumerate(captions):
        if not caption:
            continue
        image = names[i // per_image]
        yield Description(
            text=caption,
            source=f"{dataset}/{image}",
            level=Level.SCENE.value,
            metadata={"dataset": dataset, "split": split, "image": image},
        )


def _without_trailing_blanks(lines: list[str]) -> list[str]:
    while lines and not lines[-1]:
        lines.pop()
    return lines


CORPUS_FORMATS: dict[str, Callable[[Path], Iterable[Description]]] = {
    "text": _read_text,
    "jsonl": _read_jsonl,
    "captions": _read_captions,
}
