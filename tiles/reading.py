"""Read a raster: :func:`raster_handle` and :func:`read_display_rgb`.

:func:`raster_handle` is the dataset handle every read of a :class:`Raster` goes through (a
:class:`tiles.source.RasterSource` the caller passes, usually the catalog's pool, or the file
opened for the call), with read failures as RasterReadError.

:func:`read_display_rgb` reads a (possibly fractional, possibly partly outside) raster window
into display RGB, shared by crops and pixel-space tiles. Output pixel (i, j) covers raster pixels
``[col_off + j*sx, col_off + (j+1)*sx) x [row_off + i*sy, row_off + (i+1)*sy)`` with
``sx = window.width / out_w`` and ``sy = window.height / out_h`` — exactly the mapping a crop's
transform states. Only output pixels lying entirely inside the raster are read (GDAL picks the
overview level for the decimation); the rest are padding: value 0 and ``valid=False``. Nothing
is ever shifted to fit.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
from rasterio.enums import Resampling
from rasterio.windows import Window

from tiles.display import display_stats, needs_stretch, palette_lut, to_display_rgb
from tiles.presets import BandSelection
from tiles.raster import Raster
from tiles.source import DatasetHandle, RasterSource

__all__ = ["inside_output_range", "raster_handle", "read_display_rgb"]

_EPS = 1e-9


@contextlib.contextmanager
def raster_handle(
    raster: Raster, purpose: str = "pixels", *, source: RasterSource | None = None
) -> Iterator[tuple[DatasetHandle, RasterSource]]:
    """A dataset handle for ``raster``: checked out of ``source`` (the pool the catalog keeps
    for it, ``catalog.source(raster_id)``), else from a source opened for the call.

    Without a source the file is opened (under the raster's policy) and closed around the call:
    correct, but slower for repeated reads. ``purpose`` names the read in RasterReadError
    messages. A ``source`` of another file raises ValueError.
    """
    if source is not None:
        if source.read_path != raster.file_to_read:
            raise ValueError(
                f"source reads {str(source.read_path)!r} but raster {raster.name!r} reads "
                f"{str(raster.file_to_read)!r}; pass catalog.source(raster.raster_id)"
            )
        with source.handle(purpose) as handle:
            yield handle, source
        return
    own = RasterSource(raster.file_to_read, rotated=raster.is_rotated, policy=raster.policy,
                       trusted=raster.trusted)
    try:
        with own.handle(purpose) as handle:
            yield handle, own
    finally:
        own.close()


def inside_output_range(offset: float, step: float, size_in: int, size_out: int) -> tuple[int, int]:
    """Output pixels [k0, k1) whose source span [offset + k*step, offset + (k+1)*step) lies in
    [0, size_in)."""
    k0 = math.ceil(-offset / step - _EPS)
    k1 = math.floor((size_in - offset) / step + _EPS)
    return min(max(k0, 0), size_out), min(max(k1, 0), size_out)


def read_display_rgb(
    handle: DatasetHandle,
    source: RasterSource,
    raster: Raster,
    selection: BandSelection,
    window: Window,
    out_shape: tuple[int, int],
    resampling: Resampling = Resampling.nearest,
) -> tuple[np.ndarray, np.ndarray]:
    """(rgb (H, W, 3) uint8, valid (H, W) bool) for ``window`` resampled to ``out_shape``."""
    out_h, out_w = out_shape
    sx, sy = window.width / out_w, window.height / out_h
    j0, j1 = inside_output_range(window.col_off, sx, raster.width, out_w)
    i0, i1 = inside_output_range(window.row_off, sy, raster.height, out_h)
    if j1 <= j0 or i1 <= i0:
        return np.zeros((out_h, out_w, 3), "uint8"), np.zeros((out_h, out_w), bool)
    full = (i0, i1, j0, j1) == (0, out_h, 0, out_w)
    sub = Window(
        window.col_off + j0 * sx, window.row_off + i0 * sy, (j1 - j0) * sx, (i1 - i0) * sy
    )
    sub_shape = (i1 - i0, j1 - j0)
    out_hwc = np.empty((out_h, out_w, 3), "uint8") if full else None
    rgb, valid_sub = _read_inside(
        handle, source, raster, selection, sub, sub_shape, resampling, out_hwc
    )
    if full:
        valid = valid_sub
    else:
        padded = np.zeros((out_h, out_w, 3), "uint8")
        padded[i0:i1, j0:j1] = rgb
        valid = np.zeros((out_h, out_w), bool)
        valid[i0:i1, j0:j1] = valid_sub
        rgb = padded
    if not valid.all():
        rgb[~valid] = 0
    return rgb, valid


def _read_inside(
    handle: DatasetHandle,
    source: RasterSource,
    raster: Raster,
    selection: BandSelection,
    window: Window,
    shape: tuple[int, int],
    resampling: Resampling,
    out_hwc: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    dataset = handle.dataset
    indexes = list(selection.indexes)
    if len(indexes) == 3 and not needs_stretch(raster, selection):
        # Fast path: uint8 RGB read straight into an (H, W, 3) buffer, no copy afterwards.
        rgb = out_hwc if out_hwc is not None else np.empty((*shape, 3), "uint8")
        dataset.read(indexes, window=window, out=rgb.transpose(2, 0, 1), resampling=resampling)
        data_chw = rgb.transpose(2, 0, 1)
    else:
        data_chw = dataset.read(indexes, window=window, out_shape=(len(indexes), *shape),
                                resampling=resampling)
        stats = display_stats(handle, source, raster, selection) if (
            needs_stretch(raster, selection) and not selection.palette) else None
        lut = palette_lut(handle, source, indexes[0]) if selection.palette else None
        rgb = to_display_rgb(data_chw, stats, lut)
    return rgb, _valid_mask(handle, raster, data_chw, window, shape)


def _valid_mask(
    handle: DatasetHandle, raster: Raster, data_chw: np.ndarray, window: Window,
    shape: tuple[int, int],
) -> np.ndarray:
    """True where the raster has data: alpha band > 0, else not nodata in every band, else the
    dataset's internal mask, else everywhere."""
    if raster.alpha_band is not None:
        alpha = handle.dataset.read(raster.alpha_band, window=window, out_shape=shape)
        return alpha > 0
    if raster.nodata is not None:
        if math.isnan(raster.nodata):
            return ~np.isnan(data_chw).all(axis=0)
        return (data_chw != np.asarray(raster.nodata).astype(data_chw.dtype)).any(axis=0)
    if raster.has_dataset_mask:
        return handle.dataset.read_masks(1, window=window, out_shape=shape) > 0
    return np.ones(shape, bool)
