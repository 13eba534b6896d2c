"""Turn raster values into display RGB: percentile stretch, palettes, masks.

uint8 bands are shown as they are. Other dtypes (uint16 Sentinel-2/Landsat, float reflectance,
int16 DEMs) are stretched linearly from their 2nd..98th percentile to 0..255. The percentiles
are computed once per raster and band selection from a decimated read (at most
``STATS_MAX_SIDE`` pixels on a side, served from overviews when the file has them) and cached
on the raster's source, so every tile and crop of a raster uses the same stretch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from tiles.presets import BandSelection
from tiles.raster import Raster
from tiles.source import DatasetHandle, RasterSource

__all__ = [
    "STATS_MAX_SIDE",
    "STRETCH_PERCENTILES",
    "DisplayStats",
    "compute_display_stats",
    "display_stats",
    "needs_stretch",
    "palette_lut",
    "to_display_rgb",
]

log = logging.getLogger(__name__)

STATS_MAX_SIDE = 1024
STRETCH_PERCENTILES = (2.0, 98.0)


@dataclass(frozen=True)
class DisplayStats:
    """Per selected band: the value shown as 0 (``low``) and as 255 (``high``)."""

    indexes: tuple[int, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]

    def __post_init__(self) -> None:
        if not (len(self.indexes) == len(self.low) == len(self.high)):
            raise ValueError("DisplayStats needs one low/high per band index")
        for lo, hi in zip(self.low, self.high, strict=False):
            if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
                raise ValueError(f"DisplayStats needs finite low < high, got {lo}, {hi}")


def needs_stretch(raster: Raster, selection: BandSelection) -> bool:
    """True unless every selected band is uint8 (shown untouched)."""
    return any(raster.dtypes[i - 1] != "uint8" for i in selection.indexes)


def compute_display_stats(
    handle: DatasetHandle, raster: Raster, selection: BandSelection
) -> DisplayStats:
    """2-98 % percentiles of the selected bands from a decimated, masked read."""
    scale = min(1.0, STATS_MAX_SIDE / max(raster.width, raster.height))
    out_h = max(1, round(raster.height * scale))
    out_w = max(1, round(raster.width * scale))
    data = handle.dataset.read(
        indexes=list(selection.indexes), out_shape=(len(selection.indexes), out_h, out_w),
        masked=True,
    )
    lows, highs = [], []
    for band, values in zip(selection.indexes, data, strict=False):
        valid = np.asarray(values.compressed(), dtype="float64")
        valid = valid[np.isfinite(valid)]
        if valid.size == 0:
            log.warning("band %d of %s has no valid pixels; stretching 0..1", band, raster.name)
            lo, hi = 0.0, 1.0
        else:
            lo, hi = (float(v) for v in np.percentile(valid, STRETCH_PERCENTILES))
        lows.append(lo)
        highs.append(hi if hi > lo else lo + 1.0)
    return DisplayStats(selection.indexes, tuple(lows), tuple(highs))


def display_stats(
    handle: DatasetHandle, source: RasterSource, raster: Raster, selection: BandSelection
) -> DisplayStats:
    """Cached :func:`compute_display_stats` (once per source and band selection)."""
    return source.cached(
        f"display-stats:{selection.indexes}",
        lambda: compute_display_stats(handle, raster, selection),
    )


def palette_lut(handle: DatasetHandle, source: RasterSource, band: int) -> np.ndarray:
    """(256, 3) uint8 RGB lookup table from the band's color table (cached per source)."""

    def build() -> np.ndarray:
        lut = np.zeros((256, 3), dtype="uint8")
        for value, rgba in handle.dataset.colormap(band).items():
            if 0 <= value < 256:
                lut[value] = rgba[:3]
        return lut

    return source.cached(f"palette:{band}", build)


def to_display_rgb(
    data: np.ndarray,
    stats: DisplayStats | None,
    lut: np.ndarray | None = None,
) -> np.ndarray:
    """(n, H, W) band values -> (H, W, 3) uint8.

    n is 3 (RGB) or 1 (gray, repeated; or palette indices when ``lut`` is given). ``stats``
    None means the values are uint8 already and are shown untouched.
    """
    if lut is not None:
        return lut[data[0].astype("uint8", copy=False)]
    if stats is None:
        bands = data.astype("uint8", copy=False)
    else:
        bands = _stretch(data, stats)
    if bands.shape[0] == 1:
        return np.repeat(bands[0][:, :, None], 3, axis=2)
    return np.ascontiguousarray(bands.transpose(1, 2, 0))


def _stretch(data: np.ndarray, stats: DisplayStats) -> np.ndarray:
    low = np.asarray(stats.low, dtype="float32")[:, None, None]
    high = np.asarray(stats.high, dtype="float32")[:, None, None]
    scaled = (data.astype("float32") - low) * (255.0 / (high - low))
    np.nan_to_num(scaled, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    return (scaled + 0.5).astype("uint8")
