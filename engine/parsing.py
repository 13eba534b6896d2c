"""Labels in model text, and the prompt files' names for box conventions.

Boxes are read and written by the registry in :mod:`engine.boxes` (``BOX_CONVENTIONS``: one
:class:`~engine.boxes.BoxConvention` per model family). ``BOX_FORMATS`` keeps the names the
prompt files in ``assets/prompts`` use (``grid1000`` is the ``paper`` convention, ``qwen_pixels``
the ``qwen2.5-vl`` one); :func:`box_format` resolves any registered name or alias.
Classification answers are matched to the given labels after normalisation; no match gives
``None``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from engine.boxes import BOX_CONVENTIONS, BoxConvention, box_convention

__all__ = ["BOX_FORMATS", "BoxFormat", "box_format", "match_label", "normalise_label"]

BoxFormat = BoxConvention  # the name used before the registry had one entry per family

BOX_FORMATS: dict[str, BoxConvention] = {
    "grid1000": BOX_CONVENTIONS["paper"],
    "qwen_pixels": BOX_CONVENTIONS["qwen2.5-vl"],
}


def box_format(name: str) -> BoxConvention:
    """The :class:`~engine.boxes.BoxConvention` called ``name`` (a prompt-file name, a family
    name or an alias); unknown names raise :class:`ConfigError` listing the known ones."""
    return box_convention(name)


def normalise_label(text: str) -> str:
    """Lowercase, accents and punctuation folded, ``_``/``-`` as spaces, single spaces."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode() or text
    text = re.sub(r"[_\-/]+", " ", text.lower())
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def match_label(answer: str, labels: Sequence[str]) -> str | None:
    """The label ``answer`` names: an exact normalised match (also ignoring spaces, so "golf
    field" names "golffield"), else the one label found as whole words in the answer (labels
    inside a longer found label do not count, so "dense residential" beats "residential");
    ``None`` when nothing or several unrelated labels match. The one rule for the label the app
    shows (:attr:`engine.types.Answer.label`) and the one evaluation counts
    (:func:`engine.metrics.classification_accuracy`)."""
    norm_answer = normalise_label(answer)
    by_norm = {normalise_label(label): label for label in labels}
    if norm_answer in by_norm:
        return by_norm[norm_answer]
    by_key = {n.replace(" ", ""): label for n, label in by_norm.items()}
    if norm_answer and norm_answer.replace(" ", "") in by_key:
        return by_key[norm_answer.replace(" ", "")]
    padded = f" {norm_answer} "
    hits = [n for n in by_norm if n and f" {n} " in padded]
    outer = [n for n in hits if not any(n != m and f" {n} " in f" {m} " for m in hits)]
    return by_norm[outer[0]] if len(outer) == 1 else None
