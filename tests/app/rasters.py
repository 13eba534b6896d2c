"""Small real rasters written by the app and e2e tests (GeoTIFF via tiles.write_raster, PNG via
Pillow). Deterministic, a few hundred KiB at most."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from affine import Affine

__all__ = ["GEO_CRS", "GEO_SIZE_PX", "GEO_TRANSFORM", "scene_rgb", "write_geo_raster", "write_plain_png"]

GEO_CRS = "EPSG:32633"
GEO_SIZE_PX = 512
# 2 m pixels, top-left corner at easting 500 000 m, northing 4 995 000 m (about 45.1 N, 15.0 E)
GEO_TRANSFORM = Affine(2.0, 0.0, 500_000.0, 0.0, -2.0, 4_995_000.0)


def scene_rgb(size_px: int = GEO_SIZE_PX, seed: int = 3) -> np.ndarray:
    """(size, size, 3) uint8: smooth colour gradients plus bright squares (never blank)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size_px, 0:size_px]
    image = np.stack([xx * 200 // size_px + 30, yy * 200 // size_px + 30,
                      np.full_like(xx, 90)], axis=-1).astype(np.uint8)
    for _ in range(12):
        x, y = rng.integers(0, size_px - 40, 2)
        image[y:y + 32, x:x + 32] = rng.integers(150, 255, 3)
    return image


def write_geo_raster(path: Path, size_px: int = GEO_SIZE_PX) -> Path:
    """A north-up RGB GeoTIFF in UTM 33N, tiled, with overviews."""
    from tiles import write_raster

    return write_raster(path, scene_rgb(size_px), GEO_CRS, GEO_TRANSFORM, layout="hwc",
                        colorinterp=("red", "green", "blue"), tiled=True, overviews=(2, 4))


def write_plain_png(path: Path, size_px: int = 300) -> Path:
    """A plain PNG photo without georeferencing."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(scene_rgb(size_px, seed=5)).save(path)
    return path
