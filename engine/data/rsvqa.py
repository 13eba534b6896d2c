"""RSVQA-LR / RSVQA-HR loader (Lobry et al., 2020): three JSON files linked by ids.

Layout of a split (``<prefix>`` is e.g. ``LR_split_test`` or ``USGS_split_val``)::

    <prefix>_images.json     {"images": [{"id": 72, "active": true, "questions_ids": [...]}, ...]}
    <prefix>_questions.json  {"questions": [{"id", "img_id", "type", "question",
                                             "answers_ids", "active"}, ...]}
    <prefix>_answers.json    {"answers": [{"id", "question_id", "answer", "active"}]}
    images/<img_id>.tif      8-bit RGB tiles (PIL reads them)

Question types: ``rural_urban``, ``presence``, ``count``, ``comp`` (LR) and ``presence``,
``count``, ``area``, ``comp`` (HR). Every *active question* becomes one ``ask`` sample; the
image's ``active`` flag is not used to drop questions (the shared subsets mark some images
inactive and strip their metadata while their questions stay active). Answers are kept
verbatim (``"69"``, ``"6500m2"``); bucketing of counts/areas is an evaluation choice
(:mod:`engine.metrics`). ``rural_urban`` questions get level ``scene``, all others ``object``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from engine.data.instructions import Sample
from engine.errors import DataFormatError
from engine.types import Level, Task

__all__ = ["RSVQA_TYPES", "find_rsvqa_prefix", "load_rsvqa"]

log = logging.getLogger(__name__)

RSVQA_TYPES = ("rural_urban", "presence", "count", "comp", "area")


def find_rsvqa_prefix(root: Path) -> str:
    """The one ``<prefix>`` with a ``<prefix>_questions.json`` in ``root`` (error if not one)."""
    found = sorted(p.name[: -len("_questions.json")] for p in root.glob("*_questions.json"))
    if len(found) != 1:
        raise DataFormatError(
            f"expected exactly one *_questions.json in {str(root)!r}, found {found or 'none'}; "
            "pass prefix= (e.g. 'LR_split_test') to choose the split"
        )
    return found[0]


def _read_list(path: Path, key: str) -> list[dict]:
    if not path.is_file():
        raise DataFormatError(
            f"RSVQA file missing: {str(path)!r} (need <prefix>_images/_questions/_answers.json)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise DataFormatError(f"{path}: expected an object with a list under {key!r}")
    return data[key]


def _by_id(rows: list[dict], path: Path) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "id" not in row:
            raise DataFormatError(f"{path}: entry {i} has no 'id': {str(row)[:120]}")
        out[row["id"]] = row
    return out


def load_rsvqa(
    root: str | Path, prefix: str | None = None, source: str | None = None
) -> list[Sample]:
    """``ask`` samples for every active question of an RSVQA split in ``root``.

    ``source`` defaults to ``"rsvqa_lr"`` for ``LR*`` prefixes and ``"rsvqa_hr"`` otherwise
    (HR files are named ``USGS_*``). Image paths point at ``root/images/<img_id>.tif``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"RSVQA folder not found: {str(root)!r}")
    prefix = prefix or find_rsvqa_prefix(root)
    source = source or ("rsvqa_lr" if prefix.upper().startswith("LR") else "rsvqa_hr")
    images_path, q_path, a_path = (
        root / f"{prefix}_{n}.json" for n in ("images", "questions", "answers")
    )
    image_ids = set(_by_id(_read_list(images_path, "images"), images_path))
    answers = _by_id(_read_list(a_path, "answers"), a_path)
    samples = []
    for question in _read_list(q_path, "questions"):
        if not question.get("active", True):
            continue
        samples.append(_question_sample(question, answers, image_ids, root, source, q_path))
    log.info("loaded %d RSVQA questions from %s (%s)", len(samples), root, prefix)
    return samples


def _question_sample(
    question: dict,
    answers: dict[int, dict],
    image_ids: set[int],
    root: Path,
    source: str,
    q_path: Path,
) -> Sample:
    qid = question.get("id")
    try:
        img_id, qtype, text, answer_ids = (
            question["img_id"],
            question["type"],
            question["question"],
            question["answers_ids"],
        )
    except KeyError as exc:
        raise DataFormatError(f"{q_path}: question {qid} lacks key {exc}") from None
    if img_id not in image_ids:
        raise DataFormatError(
            f"{q_path}: question {qid} refers to image {img_id}, not in the images file"
        )
    active = [answers[a] for a in answer_ids if a in answers and answers[a].get("active", True)]
    if not active:
        raise DataFormatError(
            f"{q_path}: question {qid} has no active answer among ids {answer_ids}"
        )
    if qtype not in RSVQA_TYPES:
        log.warning("question %s has unknown RSVQA type %r (known: %s)", qid, qtype, RSVQA_TYPES)
    texts = tuple(str(a["answer"]) for a in active)
    return Sample(
        id=f"{source}:{qid}",
        task=Task.ASK,
        question=str(text),
        answer=texts[0],
        image_path=str(root / "images" / f"{img_id}.tif"),
        references=texts if len(texts) > 1 else (),
        question_type=str(qtype),
        level=Level.SCENE if qtype == "rural_urban" else Level.OBJECT,
        source=source,
    )
