"""Raster windows the app asks about: the whole raster, a window with context, a window in a crop.

A window is a rasterio :class:`~rasterio.windows.Window` in raster pixels (``col_off, row_off,
width, height``; x = column, y = row, pixel edges). These are the small steps between a drawn
region (:func:`tiles.region_window`) and what the model sees (:func:`tiles.read_crop`):

* :func:`full_window`: every pixel of the raster (a question about the whole raster);
* :func:`context_window`: a window grown about its centre so the crop shows its surroundings
  (a question about a box), clipped to the raster;
* :func:`window_box_in_crop`: where a raster window lies in a crop's pixels (the box the model
  is asked about), clipped to the crop.
"""

from __future__ import annotations

import math

from rasterio.windows import Window

from tiles.crop import Crop, check_window
from tiles.errors import CropError
from tiles.raster import Raster

__all__ = ["context_window", "full_window", "window_box_in_crop"]


def full_window(raster: Raster) -> Window:
    """The whole raster: ``Window(0, 0, width, height)`` in raster pixels."""
    return Window(0, 0, raster.width, raster.height)


def context_window(raster: Raster, window: Window, factor: float) -> Window:
    """``window`` grown ``factor`` times in width and height about its centre, in whole raster
    pixels (covering the grown window), clipped to the raster. ``factor`` >= 1; 1 returns the
    window's whole-pixel cover clipped to the raster."""
    check_window(raster, window)
    if isinstance(factor, bool) or not (math.isfinite(factor) and factor >= 1):
        raise CropError(f"the context factor must be a finite number >= 1, got {factor!r}")
    grow_w = window.width * (factor - 1) / 2
    grow_h = window.height * (factor - 1) / 2
    col0 = max(0, math.floor(window.col_off - grow_w))
    row0 = max(0, math.floor(window.row_off - grow_h))
    col1 = min(raster.width, math.ceil(window.col_off + window.width + grow_w))
    row1 = min(raster.height, math.ceil(window.row_off + window.height + grow_h))
    return Window(col0, row0, col1 - col0, row1 - row0)


def window_box_in_crop(crop: Crop, window: Window) -> tuple[float, float, float, float]:
    """``window`` (raster pixels) as a box ``(x0, y0, x1, y1)`` in the pixels of ``crop`` (which
    covers ``crop.window``, possibly decimated), clipped to the crop. CropError when the window
    does not overlap the crop."""
    if not isinstance(window, Window):
        raise CropError(f"window must be a rasterio.windows.Window, got {type(window).__name__}: "
                        f"{window!r}")
    x0 = (window.col_off - crop.window.col_off) / crop.scale_x
    y0 = (window.row_off - crop.window.row_off) / crop.scale_y
    x1 = x0 + window.width / crop.scale_x
    y1 = y0 + window.height / crop.scale_y
    box = (max(0.0, x0), max(0.0, y0), min(float(crop.width), x1), min(float(crop.height), y1))
    if not (box[0] < box[2] and box[1] < box[3]):
        raise CropError(
            f"window {window!r} does not overlap the crop of {crop.image_name!r}, which covers "
            f"{crop.window!r}; read the crop around the window (e.g. tiles.context_window)"
        )
    return box
