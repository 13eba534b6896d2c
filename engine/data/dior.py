"""DIOR-RSVG referring expressions and DIOR oriented-box annotations (VOC-style XML).

DIOR-RSVG (Zhan et al.) puts one referring expression per object in a VOC ``<object>``::

    <object><name>golffield</name><bndbox><xmin>133</xmin>...</bndbox>
            <description>A green and brown golf field</description></object>

Each described object becomes one ``ground`` sample: question = the description, box = the
``bndbox`` in image pixels (values kept as written), answer = the box on the 0-1000 grid.

DIOR's oriented annotation (``<robndbox>`` with four named corners, as mmrotate ships it)
becomes one ``ground`` sample per class holding every oriented box of that class (minimum-area
rectangle of the four corners), the question being the class phrase (``golffield`` -> "golf
field").

Image location: ``image_path=`` for a single XML file, else ``image_root / <filename>`` (the
XML's ``<filename>``), ``image_root`` defaulting to the XML's folder. Images are not opened
while loading; the size comes from the XML's ``<size>``.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from engine.data.boxes import box_to_grid, min_area_box_px
from engine.data.instructions import Sample
from engine.errors import DataFormatError
from engine.types import BoxPx, Level, Task

__all__ = ["DIOR_CLASS_PHRASES", "class_phrase", "load_dior_obb", "load_dior_rsvg"]

log = logging.getLogger(__name__)

DIOR_CLASS_PHRASES = {
    "airplane": "airplane",
    "airport": "airport",
    "baseballfield": "baseball field",
    "basketballcourt": "basketball court",
    "bridge": "bridge",
    "chimney": "chimney",
    "dam": "dam",
    "expressway-service-area": "expressway service area",
    "expressway-toll-station": "expressway toll station",
    "golffield": "golf field",
    "groundtrackfield": "ground track field",
    "harbor": "harbor",
    "overpass": "overpass",
    "ship": "ship",
    "stadium": "stadium",
    "storagetank": "storage tank",
    "tenniscourt": "tennis court",
    "trainstation": "train station",
    "vehicle": "vehicle",
    "windmill": "windmill",
}
_CORNERS = ("left_top", "right_top", "right_bottom", "left_bottom")


def class_phrase(name: str) -> str:
    """Readable phrase for a DIOR/DOTA class name (``golffield`` -> ``golf field``)."""
    return DIOR_CLASS_PHRASES.get(name.lower(), name.replace("-", " ").replace("_", " ").lower())


def _xml_files(annotations: Path) -> list[Path]:
    if annotations.is_file():
        return [annotations]
    if annotations.is_dir():
        files = sorted(annotations.glob("*.xml"))
        if files:
            return files
    raise DataFormatError(
        f"no VOC XML annotation found at {str(annotations)!r} "
        "(give an .xml file or a folder of them)"
    )


def _parse(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise DataFormatError(f"{path}: malformed XML: {exc}") from None


def _text(elem: ET.Element, tag: str, path: Path) -> str:
    child = elem.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise DataFormatError(f"{path}: <{elem.tag}> lacks <{tag}>")
    return child.text.strip()


def _number(elem: ET.Element, tag: str, path: Path) -> float:
    raw = _text(elem, tag, path)
    try:
        return float(raw)
    except ValueError:
        raise DataFormatError(f"{path}: <{tag}> is not a number: {raw!r}") from None


def _image_of(root: ET.Element, path: Path, image_root: Path | None, image_path: Path | None):
    size = root.find("size")
    if size is None:
        raise DataFormatError(
            f"{path}: no <size> element (width/height needed for the 0-1000 grid)"
        )
    size_px = (int(_number(size, "width", path)), int(_number(size, "height", path)))
    if image_path is None:
        image_path = (image_root or path.parent) / _text(root, "filename", path)
    return str(image_path), size_px


def _single_image_path(files: list[Path], image_path: str | Path | None) -> Path | None:
    if image_path is not None and len(files) != 1:
        raise DataFormatError(
            f"image_path= only works with one XML file, got {len(files)}; use image_root="
        )
    return None if image_path is None else Path(image_path)


def _annotated_images(
    annotations: str | Path, image_root: str | Path | None, image_path: str | Path | None
) -> tuple[list[Path], list[tuple[Path, ET.Element, Path, tuple[int, int]]]]:
    """The XML files, and for each: (xml path, parsed root, image path, image size in px)."""
    files = _xml_files(Path(annotations))
    explicit = _single_image_path(files, image_path)
    root_dir = None if image_root is None else Path(image_root)
    parsed = []
    for path in files:
        root = _parse(path)
        parsed.append((path, root, *_image_of(root, path, root_dir, explicit)))
    return files, parsed


def load_dior_rsvg(
    annotations: str | Path,
    image_root: str | Path | None = None,
    image_path: str | Path | None = None,
) -> list[Sample]:
    """``ground`` samples, one per ``<object>`` that has a ``<description>``."""
    files, parsed = _annotated_images(annotations, image_root, image_path)
    samples = []
    for path, root, image, size_px in parsed:
        for i, obj in enumerate(root.iter("object")):
            if obj.find("description") is None:
                continue
            bnd = obj.find("bndbox")
            if bnd is None:
                raise DataFormatError(f"{path}: object {i} has a description but no <bndbox>")
            name = _text(obj, "name", path)
            box = BoxPx(
                *(_number(bnd, t, path) for t in ("xmin", "ymin", "xmax", "ymax")), label=name
            )
            samples.append(
                Sample(
                    id=f"dior_rsvg:{path.stem}:{i}",
                    task=Task.GROUND,
                    question=_text(obj, "description", path),
                    answer=box_to_grid(box, size_px).text(),
                    image_path=image,
                    image_size_px=size_px,
                    boxes_px=(box,),
                    level=Level.OBJECT,
                    source="dior_rsvg",
                )
            )
    log.info("loaded %d DIOR-RSVG expressions from %d file(s)", len(samples), len(files))
    return samples


def _robndbox(obj: ET.Element, path: Path) -> BoxPx:
    rob = obj.find("robndbox")
    if rob is None:
        raise DataFormatError(
            f"{path}: object lacks <robndbox> (is this the horizontal-box DIOR XML?)"
        )
    corners = np.array(
        [(_number(rob, f"x_{c}", path), _number(rob, f"y_{c}", path)) for c in _CORNERS]
    )
    return min_area_box_px(corners, label=_text(obj, "name", path))


def load_dior_obb(
    annotations: str | Path,
    image_root: str | Path | None = None,
    image_path: str | Path | None = None,
) -> list[Sample]:
    """``ground`` samples from DIOR oriented-box XML: one per (image, class), oriented boxes."""
    _files, parsed = _annotated_images(annotations, image_root, image_path)
    samples = []
    for path, root, image, size_px in parsed:
        by_class: dict[str, list[BoxPx]] = {}
        for obj in root.iter("object"):
            box = _robndbox(obj, path)
            by_class.setdefault(box.label, []).append(box)
        for name, boxes in sorted(by_class.items()):
            samples.append(
                Sample(
                    id=f"dior_obb:{path.stem}:{name}",
                    task=Task.GROUND,
                    question=class_phrase(name),
                    answer="\n".join(box_to_grid(b, size_px).text() for b in boxes),
                    image_path=image,
                    image_size_px=size_px,
                    boxes_px=tuple(boxes),
                    level=Level.OBJECT,
                    source="dior_obb",
                )
            )
    return samples
