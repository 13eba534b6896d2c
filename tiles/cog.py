"""Cached Cloud-Optimized GeoTIFF copies of large rasters.

Big rasters that are striped (not tiled) or have no overviews make every map tile read far
more than it shows. The catalog replaces them, once, with a COG (GDAL's COG driver through
``rasterio.shutil.copy``: 512 px tiles, lossless DEFLATE, overviews down to one tile) in the
workspace. The cache key is the source's resolved path, size and modification time, so an
edited file gets a new copy; the copy is written to a temp name and renamed into place, so a
crash never leaves a half-written COG under the final name.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
import warnings
from pathlib import Path

import rasterio
import rasterio.shutil
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from tiles.errors import RasterOpenError
from tiles.raster import Raster, open_dataset

__all__ = ["COG_DIRNAME", "DEFAULT_COG_THRESHOLD_PX", "build_cog", "cog_cache_path", "needs_cog"]

log = logging.getLogger(__name__)

COG_DIRNAME = "cog-cache"
DEFAULT_COG_THRESHOLD_PX = 4096


def needs_cog(raster: Raster, threshold_px: int = DEFAULT_COG_THRESHOLD_PX) -> bool:
    """True for rasters wider or taller than ``threshold_px`` that are not tiled or lack
    overviews."""
    large = max(raster.width, raster.height) > threshold_px
    return large and not (raster.tiled and raster.overviews)


def cog_cache_path(workspace_dir: Path, source_path: Path) -> Path:
    """Where the COG of ``source_path`` lives: key from resolved path + size + mtime."""
    resolved = source_path.resolve()
    stat = resolved.stat()
    key = hashlib.sha256(f"{resolved}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    return Path(workspace_dir) / COG_DIRNAME / f"{resolved.stem}-{key[:16]}.tif"


def build_cog(source_path: Path, cog_path: Path, raster: Raster) -> Path:
    """Write the COG of ``source_path`` to ``cog_path`` unless it is already there."""
    if cog_path.exists():
        log.info("reusing cached COG %s for %s", cog_path, source_path)
        return cog_path
    cog_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = cog_path.with_name(f".{cog_path.stem}.{uuid.uuid4().hex[:8]}.tmp.tif")
    resampling = "NEAREST" if raster.colorinterp[0] == "palette" else "AVERAGE"
    log.info("building COG %s from %s (%dx%d)", cog_path, source_path, raster.width,
             raster.height)
    try:
        with warnings.catch_warnings(), rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with open_dataset(source_path) as src:
                rasterio.shutil.copy(
                    src, tmp, driver="COG", COMPRESS="DEFLATE", PREDICTOR="YES",
                    BLOCKSIZE=512, OVERVIEWS="AUTO", OVERVIEW_RESAMPLING=resampling,
                    NUM_THREADS="ALL_CPUS", BIGTIFF="IF_SAFER",
                )
        os.replace(tmp, cog_path)
    except (RasterioError, OSError) as exc:
        if tmp.exists():
            tmp.unlink()
        raise RasterOpenError(
            f"cannot build a Cloud-Optimized GeoTIFF of {str(source_path)!r} in "
            f"{str(cog_path.parent)!r}: {exc}. Check free disk space in the workspace, or "
            "convert it yourself with `gdal_translate -of COG in.tif out.tif` and open that."
        ) from exc
    return cog_path
