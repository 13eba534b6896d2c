"""Window -> model-ready crop: :class:`Crop` and :func:`read_crop`.

A crop is an (H, W, 3) uint8 RGB image of a raster window, at native resolution when the
window fits ``max_side``, else a decimated read (``out_shape``; GDAL serves it from overviews,
the window is never read at full resolution first). ``Crop.transform`` maps crop pixels to the
raster CRS *including the resampling*:

    transform = raster.transform @ Affine.translation(col_off, row_off) @ Affine.scale(sx, sy)

so a box in crop pixels lands on the map with one affine product, exactly, also for rotated or
skewed geotransforms. For non-georeferenced rasters it maps crop pixels to raster pixels, which
``Crop.raster_px_transform`` does for every crop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.enums import Resampling
from rasterio.windows import Window

from tiles.errors import CropError, RegionOutsideError
from tiles.presets import select_bands
from tiles.raster import Raster
from tiles.reading import raster_handle, read_display_rgb
from tiles.source import RasterSource

__all__ = ["DEFAULT_MAX_SIDE", "Crop", "check_window", "crop_shape", "read_crop"]

DEFAULT_MAX_SIDE = 1024


@dataclass(frozen=True)
class Crop:
    """An RGB crop of a raster window, ready for a model, with its exact georeferencing."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    valid: np.ndarray  # (H, W) bool: True where the raster had data (False: nodata/padding)
    transform: Affine  # crop px (x right, y down, pixel edges) -> raster CRS (or raster px)
    crs: str | None  # raster CRS WKT; None in pixel space
    window: Window  # raster pixels the crop covers (may extend past the raster: padding)
    raster_path: Path
    raster_id: str | None
    scale_x: float  # raster pixels per crop pixel along x (1.0 at native resolution)
    scale_y: float

    def __post_init__(self) -> None:
        img = self.image
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"Crop.image must be (H, W, 3) uint8, got {img.shape} {img.dtype}")
        if self.valid.shape != img.shape[:2] or self.valid.dtype != np.bool_:
            raise ValueError(
                f"Crop.valid must be (H, W) bool matching the image, got {self.valid.shape} "
                f"{self.valid.dtype} for image {img.shape[:2]}"
            )
        if not (self.scale_x > 0 and self.scale_y > 0):
            raise ValueError(f"Crop scales must be > 0, got {self.scale_x}, {self.scale_y}")

    @property
    def georeferenced(self) -> bool:
        return self.crs is not None

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def image_name(self) -> str:
        return self.raster_path.name

    @property
    def raster_px_transform(self) -> Affine:
        """Crop px -> raster px (column, row) of the raster the crop was read from."""
        return (Affine.translation(self.window.col_off, self.window.row_off)
                @ Affine.scale(self.scale_x, self.scale_y))


def crop_shape(window: Window, max_side: int) -> tuple[int, int]:
    """(out_h, out_w): the window's size, or scaled so the longer side is ``max_side``."""
    w, h = float(window.width), float(window.height)
    if max(w, h) <= max_side:
        return max(1, round(h)), max(1, round(w))
    scale = max_side / max(w, h)
    return max(1, min(max_side, round(h * scale))), max(1, min(max_side, round(w * scale)))


def check_window(raster: Raster, window: Window) -> None:
    """CropError unless ``window`` is a rasterio Window with finite values and a positive size;
    RegionOutsideError when it does not overlap ``raster``."""
    if not isinstance(window, Window):
        raise CropError(
            f"window must be a rasterio.windows.Window (e.g. from tiles.region_window), got "
            f"{type(window).__name__}: {window!r}"
        )
    values = (window.col_off, window.row_off, window.width, window.height)
    if not all(math.isfinite(v) for v in values) or window.width <= 0 or window.height <= 0:
        raise CropError(f"window must be finite with width and height > 0, got {window!r}")
    if (window.col_off >= raster.width or window.row_off >= raster.height
            or window.col_off + window.width <= 0 or window.row_off + window.height <= 0):
        where = (
            f"lon/lat bounds {tuple(round(v, 6) for v in raster.bounds_lonlat)}"
            if raster.bounds_lonlat else "pixel space"
        )
        raise RegionOutsideError(
            f"window {window!r} lies outside raster {raster.name!r} ({raster.width}x"
            f"{raster.height} px, {where}); pick a region over the raster."
        )


def read_crop(
    raster: Raster,
    window: Window,
    max_side: int = DEFAULT_MAX_SIDE,
    *,
    preset: str | None = None,
    resampling: Resampling = Resampling.average,
    source: RasterSource | None = None,
) -> Crop:
    """Read ``window`` of ``raster`` as RGB uint8 with at most ``max_side`` pixels per side.

    Bands come from ``preset`` (see :mod:`tiles.presets`; None = from color interpretation);
    non-uint8 data is stretched as on the map. ``resampling`` applies only when decimating
    (native reads copy pixels). Parts of the window outside the raster are padded with 0 and
    marked invalid. ``source``: the raster's open datasets (``catalog.source(raster_id)``);
    None opens the file for this call.
    """
    check_window(raster, window)
    if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1:
        raise CropError(f"max_side must be an integer >= 1 (pixels), got {max_side!r}")
    selection = select_bands(raster, preset)
    out_h, out_w = crop_shape(window, max_side)
    native = (out_h, out_w) == (window.height, window.width)
    method = Resampling.nearest if native or selection.palette else resampling
    purpose = (f"pixels x {window.col_off:g}..{window.col_off + window.width:g}, "
               f"y {window.row_off:g}..{window.row_off + window.height:g}")
    with raster_handle(raster, purpose, source=source) as (handle, pool):
        image, valid = read_display_rgb(
            handle, pool, raster, selection, window, (out_h, out_w), method
        )
    scale_x, scale_y = window.width / out_w, window.height / out_h
    transform = (
        raster.transform
        @ Affine.translation(window.col_off, window.row_off)
        @ Affine.scale(scale_x, scale_y)
    )
    return Crop(
        image=image, valid=valid, transform=transform, crs=raster.crs, window=window,
        raster_path=raster.path, raster_id=raster.raster_id, scale_x=scale_x, scale_y=scale_y,
    )
