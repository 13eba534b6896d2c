"""Reading dataset images with PIL (the engine never imports rasterio).

RSVQA's GeoTIFF tiles are plain 8-bit RGB and open with PIL; so do DIOR JPEGs, DOTA PNGs (RGBA,
alpha dropped) and RSSCN7 JPEGs. Georeferencing is ignored here: datasets only need pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.errors import DataFormatError

__all__ = ["IMAGE_SUFFIXES", "read_rgb", "read_size_px"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DataFormatError(
            f"image file not found: {str(path)!r}; check the image root passed to the loader "
            "(caption sets ship their file names only: pass image_root= where the images are)"
        )
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataFormatError(
            f"PIL cannot read image {str(path)!r}: {exc}; convert it to PNG/JPEG"
        ) from exc


def read_rgb(path: str | Path) -> np.ndarray:
    """Image as uint8 (H, W, 3) RGB; grey, palette and RGBA images are converted."""
    with _open(Path(path)) as img:
        try:
            rgb = img.convert("RGB")
        except (OSError, ValueError) as exc:
            raise DataFormatError(
                f"cannot convert {str(path)!r} (mode {img.mode}) to RGB: {exc}"
            ) from exc
        return np.asarray(rgb, dtype=np.uint8).copy()


def read_size_px(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` from the file header, without decoding the pixels."""
    with _open(Path(path)) as img:
        return int(img.width), int(img.height)
