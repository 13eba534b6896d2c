"""Write small GeoTIFFs (demo rasters, test fixtures): :func:`write_raster`.

Arrays are (H, W) for one band, or (bands, H, W) / (H, W, bands) with ``layout`` saying which
(inferred when unambiguous). ``cog=True`` writes a Cloud-Optimized GeoTIFF through GDAL's COG
driver (tiled, with overviews). Writes are atomic (:func:`tiles.atomic.atomic_path`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from tiles.atomic import atomic_path
from tiles.crs import parse_crs
from tiles.errors import RasterWriteError
from tiles.types import CRSLike, PathLikeStr

__all__ = ["as_chw", "write_raster"]

_MAX_BANDS_GUESS = 16


def as_chw(array: np.ndarray, layout: str | None = None) -> np.ndarray:
    """(bands, H, W) view of a 2-D or 3-D array; ``layout`` "chw"/"hwc" or None to infer
    (the band axis must then be first or last and clearly the smallest)."""
    array = np.asarray(array)
    if array.ndim == 2:
        return array[None]
    if array.ndim != 3:
        raise RasterWriteError(f"raster arrays are (H, W) or 3-D, got shape {array.shape}")
    if layout is None:
        first, last = array.shape[0], array.shape[2]
        if first <= _MAX_BANDS_GUESS and first < min(array.shape[1:]):
            layout = "chw"
        elif last <= _MAX_BANDS_GUESS and last < min(array.shape[:2]):
            layout = "hwc"
        else:
            raise RasterWriteError(
                f"cannot tell the band axis of an array shaped {array.shape}; pass layout='chw' "
                "or layout='hwc'"
            )
    if layout == "chw":
        return array
    if layout == "hwc":
        return array.transpose(2, 0, 1)
    raise RasterWriteError(f"layout must be 'chw', 'hwc' or None, got {layout!r}")


def write_raster(
    path: PathLikeStr,
    array: np.ndarray,
    crs: CRSLike | None,
    transform: Affine | None,
    nodata: float | None = None,
    *,
    layout: str | None = None,
    colorinterp: Sequence[str] | None = None,
    descriptions: Sequence[str] | None = None,
    overviews: Sequence[int] = (),
    tiled: bool = False,
    blocksize: int = 256,
    compress: str | None = "deflate",
    cog: bool = False,
    driver: str = "GTiff",
) -> Path:
    """Write ``array`` to ``path`` and return the path.

    ``crs``/``transform`` None write a raster without georeferencing. ``colorinterp`` are
    rasterio ColorInterp names per band ("red", "nir", "alpha", ...). ``overviews`` are
    decimation factors built with average resampling; ``cog=True`` builds a COG instead
    (ignores ``tiled``/``overviews``: the COG driver tiles and builds overviews itself).
    """
    path = Path(path)
    data = as_chw(array, layout)
    profile = _profile(data, crs, transform, nodata, tiled, blocksize, compress, driver)
    try:
        with atomic_path(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            if cog:
                _write_cog(tmp, data, profile, colorinterp, descriptions, compress)
            else:
                _write_plain(tmp, data, profile, colorinterp, descriptions, overviews)
    except (RasterioError, OSError, ValueError) as exc:
        raise RasterWriteError(f"cannot write raster {str(path)!r}: {exc}") from exc
    return path


def _profile(data: np.ndarray, crs: Any, transform: Affine | None, nodata: float | None,
             tiled: bool, blocksize: int, compress: str | None, driver: str) -> dict[str, Any]:
    if (crs is None) != (transform is None):
        raise RasterWriteError(
            "give both crs and transform for a georeferenced raster, or neither for a plain one"
        )
    profile: dict[str, Any] = {
        "driver": driver, "width": data.shape[2], "height": data.shape[1],
        "count": data.shape[0], "dtype": data.dtype.name, "nodata": nodata,
    }
    if crs is not None:
        profile.update(crs=parse_crs(crs).to_wkt(), transform=transform)
    if driver == "GTiff":
        if compress:
            profile["compress"] = compress
        if tiled:
            profile.update(tiled=True, blockxsize=blocksize, blockysize=blocksize)
    return profile


def _set_band_metadata(dst: Any, colorinterp: Sequence[str] | None,
                       descriptions: Sequence[str] | None) -> None:
    if colorinterp is not None:
        dst.colorinterp = [ColorInterp[name] for name in colorinterp]
    for i, text in enumerate(descriptions or (), start=1):
        dst.set_band_description(i, text)


def _write_plain(path: Path, data: np.ndarray, profile: dict[str, Any],
                 colorinterp: Sequence[str] | None, descriptions: Sequence[str] | None,
                 overviews: Sequence[int]) -> None:
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        _set_band_metadata(dst, colorinterp, descriptions)
        if overviews:
            dst.build_overviews(list(overviews), Resampling.average)


def _write_cog(path: Path, data: np.ndarray, profile: dict[str, Any],
               colorinterp: Sequence[str] | None, descriptions: Sequence[str] | None,
               compress: str | None) -> None:
    mem_profile = {k: v for k, v in profile.items() if k not in ("compress", "tiled",
                                                                "blockxsize", "blockysize")}
    mem_profile["driver"] = "GTiff"
    with rasterio.MemoryFile() as memfile:
        with memfile.open(**mem_profile) as mem:
            mem.write(data)
            _set_band_metadata(mem, colorinterp, descriptions)
        with memfile.open() as src:
            rasterio.shutil.copy(src, path, driver="COG", COMPRESS=(compress or "NONE").upper(),
                                 BLOCKSIZE=512, OVERVIEW_RESAMPLING="AVERAGE")
