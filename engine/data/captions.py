"""Caption sets in the AMFMN layout (RSICD, RSITMD, UCM-captions, Sydney-captions).

A set folder holds ``<split>_caps.txt`` (one caption per line) and ``<split>_filename.txt`` (one
image file name per line). Captions come in equal consecutive groups, one group per file name
(five per image in all four public sets): caption line ``i`` belongs to file ``i // k`` with
``k = n_captions / n_files``.

Images are not part of these files. Samples carry ``image_root / <file name>`` as their
``image_path`` whether or not it exists (``image_root`` defaults to the set folder), so the
captions are usable as a text corpus right away and as a training set once the images are
placed there; :meth:`Sample.load_image` says which file is missing. Blank caption lines are
dropped; an image whose captions are all blank is skipped (RSITMD has four) and logged.
"""

from __future__ import annotations

import logging
from pathlib import Path

from engine.data.instructions import Sample
from engine.errors import DataFormatError
from engine.types import Level, Task

__all__ = ["load_captions", "read_caption_groups"]

log = logging.getLogger(__name__)


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataFormatError(
            f"caption file missing: {str(path)!r} (need <split>_caps.txt and <split>_filename.txt)"
        )
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not UTF-8 text: {exc}") from None


def read_caption_groups(
    set_dir: str | Path, split: str = "train"
) -> list[tuple[str, tuple[str, ...]]]:
    """``(file name, captions)`` per image, in file order, blank captions removed."""
    set_dir = Path(set_dir)
    caps = _lines(set_dir / f"{split}_caps.txt")
    names = [n.strip() for n in _lines(set_dir / f"{split}_filename.txt")]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise DataFormatError(f"{set_dir / f'{split}_filename.txt'}: no file names")
    for lineno, name in enumerate(names, start=1):
        if not name:
            raise DataFormatError(f"{set_dir / f'{split}_filename.txt'}:{lineno}: blank file name")
    per_image, rest = divmod(len(caps), len(names))
    if rest or per_image == 0:
        raise DataFormatError(
            f"{set_dir}: {len(caps)} captions do not split evenly over {len(names)} file names; "
            "each image needs the same number of consecutive caption lines"
        )
    return [
        (name, tuple(c.strip() for c in caps[i * per_image : (i + 1) * per_image] if c.strip()))
        for i, name in enumerate(names)
    ]


def load_captions(
    set_dir: str | Path,
    image_root: str | Path | None = None,
    split: str = "train",
    source: str | None = None,
) -> list[Sample]:
    """``caption`` samples, one per image: answer = first caption, references = all captions."""
    set_dir = Path(set_dir)
    root = Path(image_root) if image_root is not None else set_dir
    source = source or set_dir.name
    samples, skipped = [], []
    for i, (name, captions) in enumerate(read_caption_groups(set_dir, split)):
        if not captions:
            skipped.append(name)
            continue
        samples.append(
            Sample(
                id=f"{source}:{i}:{name}",
                task=Task.CAPTION,
                question="",
                answer=captions[0],
                image_path=str(root / name),
                references=captions,
                question_type="caption",
                level=Level.SCENE,
                source=source,
            )
        )
    if skipped:
        log.warning(
            "%s: skipped %d image(s) without any caption: %s", set_dir, len(skipped), skipped[:5]
        )
    present = any(Path(s.image_path).is_file() for s in samples[:20])
    log.info(
        "loaded %d captioned images from %s (images %s under %s)",
        len(samples),
        set_dir,
        "found" if present else "absent",
        root,
    )
    return samples
