"""Scene-classification folders: ``root/<class name>/<image>`` (RSSCN7, UCM, AID, NWPU layout).

Every image becomes one ``classify`` sample whose answer is its folder name and whose label
set is every class folder (sorted), so ``aGrass`` stays ``aGrass``: the folder name *is* the
class. Folders without images are ignored; files that are not images are skipped.
"""

from __future__ import annotations

import logging
from pathlib import Path

from engine.data.images import IMAGE_SUFFIXES
from engine.data.instructions import Sample
from engine.errors import DataFormatError
from engine.types import Level, Task

__all__ = ["load_scene_folders"]

log = logging.getLogger(__name__)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_scene_folders(root: str | Path, source: str | None = None) -> list[Sample]:
    """``classify`` samples for ``root/<class>/<image>``; ``source`` defaults to the folder name."""
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(
            f"scene folder not found: {str(root)!r} (expected root/<class>/<image>)"
        )
    classes = {d.name: _images_in(d) for d in sorted(root.iterdir()) if d.is_dir()}
    classes = {name: images for name, images in classes.items() if images}
    if not classes:
        raise DataFormatError(
            f"no class folders with images ({', '.join(IMAGE_SUFFIXES)}) under {str(root)!r}; "
            "the layout is root/<class name>/<image>"
        )
    labels = tuple(classes)
    source = source or root.name
    samples = [
        Sample(
            id=f"{source}:{name}/{image.name}",
            task=Task.CLASSIFY,
            question="",
            answer=name,
            image_path=str(image),
            labels=labels,
            question_type="scene",
            level=Level.SCENE,
            source=source,
        )
        for name, images in classes.items()
        for image in images
    ]
    log.info("loaded %d scene images in %d classes from %s", len(samples), len(labels), root)
    return samples
