"""DOTA object labels (Xia et al., 2018): four corner points, class, difficulty per line.

::

    imagesource:GoogleEarth        (optional header lines, skipped)
    gsd:0.146
    359.0 663.0 369.0 497.0 543.0 509.0 531.0 677.0 plane 0

Each object gives an oriented box (minimum-area rectangle of its four points, ``angle_deg`` in
[-45, 45), on-screen counter-clockwise) and an axis-aligned box (bounds of the four points).
``scale`` multiplies every coordinate: the shared DOTA patch is a 170 px thumbnail of a 1024 px
patch, so its labels need ``scale=170/1024``.

:func:`load_dota` turns a label file into ``ground`` samples, one per class, holding all boxes of
that class; the question is the class phrase (``storage-tank`` -> "storage tank").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.data.boxes import box_to_grid, min_area_box_px
from engine.data.dior import class_phrase
from engine.data.images import IMAGE_SUFFIXES, read_size_px
from engine.data.instructions import Sample
from engine.errors import DataFormatError
from engine.types import BoxPx, Level, Task

__all__ = ["DotaObject", "load_dota", "read_dota_labels"]

log = logging.getLogger(__name__)

_HEADERS = ("imagesource:", "gsd:")


@dataclass(frozen=True)
class DotaObject:
    """One labelled object: corner points in image pixels (after scaling), class, difficulty."""

    polygon_px: tuple[tuple[float, float], ...]  # 4 (x, y) corners in label order
    label: str
    difficult: bool

    def __post_init__(self) -> None:
        if len(self.polygon_px) != 4:
            raise ValueError(f"a DOTA object has 4 corners, got {self.polygon_px}")

    @property
    def obb_px(self) -> BoxPx:
        """Oriented box: minimum-area rectangle of the corners."""
        return min_area_box_px(np.array(self.polygon_px), label=self.label)

    @property
    def aabb_px(self) -> BoxPx:
        """Axis-aligned box: bounds of the four corners."""
        pts = np.array(self.polygon_px)
        (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
        return BoxPx(float(x0), float(y0), float(x1), float(y1), label=self.label)


def _parse_line(line: str, path: Path, lineno: int, scale: float) -> DotaObject:
    parts = line.split()
    if len(parts) not in (9, 10):
        raise DataFormatError(
            f"{path}:{lineno}: expected 'x1 y1 x2 y2 x3 y3 x4 y4 class [difficulty]', "
            f"got {line.strip()!r}"
        )
    try:
        coords = [float(v) * scale for v in parts[:8]]
        difficult = len(parts) == 10 and int(parts[9]) != 0
    except ValueError:
        raise DataFormatError(
            f"{path}:{lineno}: non-numeric coordinate or difficulty in {line.strip()!r}"
        ) from None
    corners = tuple((coords[i], coords[i + 1]) for i in range(0, 8, 2))
    return DotaObject(corners, parts[8], difficult)


def read_dota_labels(path: str | Path, scale: float = 1.0) -> list[DotaObject]:
    """Objects of one DOTA label file; header lines (``imagesource:``, ``gsd:``) are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"DOTA label file not found: {str(path)!r}")
    if not scale > 0:
        raise DataFormatError(f"scale must be positive, got {scale!r}")
    objects = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.strip().lower().startswith(_HEADERS):
            continue
        objects.append(_parse_line(line, path, lineno, scale))
    return objects


def _find_image(label_path: Path, image_root: Path | None) -> Path:
    folder = image_root or label_path.parent
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{label_path.stem}{suffix}"
        if candidate.is_file():
            return candidate
    raise DataFormatError(
        f"no image named {label_path.stem}.* ({', '.join(IMAGE_SUFFIXES)}) in {str(folder)!r}; "
        "pass image_root= (the DOTA 'images' folder)"
    )


def load_dota(
    labels: str | Path,
    image_root: str | Path | None = None,
    scale: float = 1.0,
    oriented: bool = True,
    include_difficult: bool = True,
) -> list[Sample]:
    """``ground`` samples from a DOTA label file or a folder of them (``labelTxt``).

    The image of ``<stem>.txt`` is ``<image_root>/<stem>.<png|jpg|tif...>`` (``image_root``
    defaults to the label's folder); its size is read from the file header. Boxes are oriented
    (``oriented=True``) or axis-aligned.
    """
    labels = Path(labels)
    files = (
        [labels] if labels.is_file() else sorted(labels.glob("*.txt")) if labels.is_dir() else []
    )
    if not files:
        raise DataFormatError(
            f"no DOTA label file at {str(labels)!r} (a .txt file or a folder of them)"
        )
    samples = []
    for path in files:
        image = _find_image(path, None if image_root is None else Path(image_root))
        size_px = read_size_px(image)
        by_class: dict[str, list[BoxPx]] = {}
        for obj in read_dota_labels(path, scale):
            if obj.difficult and not include_difficult:
                continue
            by_class.setdefault(obj.label, []).append(obj.obb_px if oriented else obj.aabb_px)
        for name, boxes in sorted(by_class.items()):
            samples.append(
                Sample(
                    id=f"dota:{path.stem}:{name}",
                    task=Task.GROUND,
                    question=class_phrase(name),
                    answer="\n".join(box_to_grid(b, size_px).text() for b in boxes),
                    image_path=str(image),
                    image_size_px=size_px,
                    boxes_px=tuple(boxes),
                    level=Level.OBJECT,
                    source="dota",
                )
            )
    log.info("loaded %d DOTA grounding samples from %d label file(s)", len(samples), len(files))
    return samples
