"""LEVIR-CC (change captioning): ``LevirCCcaptions.json`` plus the image pairs in ``A/`` and ``B/``.

The caption file lists ``images``; each has ``filepath`` (the split folder: ``train``, ``val``,
``test``), ``filename`` (the same name in ``A/`` and ``B/``), ``split``, ``sentences`` (five
reference captions, ``raw``) and, in the released file, ``changeflag`` (0 = no change)::

    Levir-CC-dataset/
        LevirCCcaptions.json
        images/test/A/test_000001.png    # before (2008-2012)
        images/test/B/test_000001.png    # after (2016-2018)

Each pair becomes one ``change_caption`` :class:`~engine.data.instructions.Sample`: the ``A``
image is ``before_image_path``, the ``B`` image ``image_path``; ``references`` are all raw
sentences (stripped), ``answer`` the first; ``question_type`` is ``"change"`` or
``"no_change"`` (from ``changeflag``, else from the references: no change when most of them say
so, :func:`engine.metrics.says_no_change`). The loader does not read the images.
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.data.instructions import Sample
from engine.errors import DataFormatError
from engine.types import Task

__all__ = ["CAPTIONS_FILE", "load_levir_cc"]

CAPTIONS_FILE = "LevirCCcaptions.json"


def load_levir_cc(
    path: str | Path, split: str | None = "test", image_root: str | Path | None = None
) -> list[Sample]:
    """``change_caption`` samples of LEVIR-CC's ``split`` (``None`` or ``"all"``: every split).

    ``path``: the dataset folder (holding ``LevirCCcaptions.json``) or the JSON file itself.
    ``image_root``: the folder holding ``<filepath>/A`` and ``<filepath>/B``; by default
    ``<folder>/images`` when it exists, else the folder itself.
    """
    from engine.metrics import says_no_change

    path = Path(path)
    file = path / CAPTIONS_FILE if path.is_dir() else path
    if not file.is_file():
        raise DataFormatError(
            f"LEVIR-CC captions not found at {str(file)!r}; pass the dataset folder holding "
            f"{CAPTIONS_FILE} or the file itself"
        )
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DataFormatError(f"cannot read {str(file)!r}: {err}") from None
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise DataFormatError(f"{str(file)!r} has no 'images' list; is it LevirCCcaptions.json?")
    root = Path(image_root) if image_root is not None else _default_root(file.parent)
    wanted = None if split in (None, "all") else split
    samples = []
    for index, entry in enumerate(images):
        where = f"{file}: images[{index}]"
        try:
            if wanted is not None and entry["split"] != wanted:
                continue
            folder, name = str(entry["filepath"]), str(entry["filename"])
            refs = tuple(" ".join(str(s["raw"]).split()) for s in entry["sentences"])
        except (KeyError, TypeError) as err:
            raise DataFormatError(f"{where}: missing or bad field {err}") from None
        refs = tuple(r for r in refs if r)
        if not refs:
            raise DataFormatError(f"{where}: no reference sentences")
        flag = entry.get("changeflag")
        if flag is None:
            changed = sum(not says_no_change(r) for r in refs) * 2 > len(refs)
        else:
            changed = bool(int(flag))
        samples.append(
            Sample(
                id=f"levir_cc:{folder}/{name}",
                task=Task.CHANGE_CAPTION,
                question="",
                answer=refs[0],
                image_path=str(root / folder / "B" / name),
                before_image_path=str(root / folder / "A" / name),
                references=refs,
                question_type="change" if changed else "no_change",
                source="levir_cc",
            )
        )
    if not samples:
        splits = sorted({str(e.get("split")) for e in images if isinstance(e, dict)})
        raise DataFormatError(f"{str(file)!r} has no {split!r} pairs; its splits: {splits}")
    first = Path(samples[0].before_image_path)
    if not first.is_file() or not Path(samples[0].image_path).is_file():
        raise DataFormatError(
            f"LEVIR-CC images not found: {str(first)!r} (and its B/ twin); pass "
            "image_root=<folder holding <split>/A and <split>/B>"
        )
    return samples


def _default_root(folder: Path) -> Path:
    return folder / "images" if (folder / "images").is_dir() else folder
