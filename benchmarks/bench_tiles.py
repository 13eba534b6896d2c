"""Benchmark the tiles package against plain rasterio / rio-tiler baselines, in one run.

    python benchmarks/bench_tiles.py [--cache-dir .bench-cache] [--tiles-per-zoom 20]

Builds (once, cached under ``.bench-cache/``) a 20000 x 20000 3-band uint8 Cloud-Optimized
GeoTIFF in UTM 33N at 0.5 m (JPEG-compressed like most aerial COGs), then measures:

1. crop of a 1024 x 1024 window (``read_crop``) vs a bare rasterio windowed read;
2. decimated crop of a 10000 x 10000 region to 1024 px (``read_crop``) vs reading the region
   at full resolution and resizing it with Pillow;
3. XYZ tile rendering p50/p95 across zoom levels (``render_tile``) vs rio-tiler called
   directly (``Reader.tile`` + ``ImageData.render``).

Every number is a ratio against a baseline measured in the same run; absolute times are
printed for context only. Targets: crop overhead <= 1.2x, decimated >= 20x faster, tile
p95 <= 60 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from PIL import Image
from rasterio.windows import Window

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import tiles

SIZE = 20_000
BLOCK_ROWS = 512
TRANSFORM = Affine(0.5, 0.0, 500_000.0, 0.0, -0.5, 5_300_000.0)
CRS = "EPSG:32633"


def synthetic_rows(row0: int, rows: int, width: int, noise: np.ndarray) -> np.ndarray:
    """(3, rows, width) uint8 'landscape': smooth fields, parcels, a road grid, texture.

    Separable sines (outer products) and a pre-drawn noise tile keep this ~0.3 s per block.
    """
    x = np.arange(width, dtype="float32")
    y = np.arange(row0, row0 + rows, dtype="float32")
    fields = 50.0 * (np.outer(np.cos(y / 700.0), np.sin(x / 900.0))
                     + np.outer(np.cos(y / 2300.0), np.sin(x / 2300.0))
                     + np.outer(np.sin(y / 2300.0), np.cos(x / 2300.0)))
    parcels = ((x[None, :] // 400 + y[:, None] // 400) % 5) * 18.0
    roads = ((x[None, :] % 1000 < 12) | (y[:, None] % 1000 < 12)) * 90.0
    base = 90.0 + fields + parcels + roads  # (rows, width)
    cols = (np.arange(width) * 7 + row0) % noise.shape[2]
    texture = noise[:, :rows][:, :, cols]  # (3, rows, width) int16
    bands = np.stack([base, base * 1.1 + 10.0, base * 0.8]) + texture
    return np.clip(bands, 0, 255).astype("uint8")


def build_cog(cache_dir: Path, size: int = SIZE) -> Path:
    """The size^2 COG, built once: blocks into a temp GTiff, then GDAL's COG driver."""
    path = cache_dir / f"bench_{size}_rgb_cog.tif"
    if path.exists():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    print(f"building {path} (once; a few minutes on 2 cores) ...", flush=True)
    noise = np.random.default_rng(0).integers(-12, 13, (3, BLOCK_ROWS, 4099), dtype="int16")
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        staging = Path(tmp) / "staging.tif"
        profile = {"driver": "GTiff", "width": size, "height": size, "count": 3,
                   "dtype": "uint8", "crs": CRS, "transform": TRANSFORM, "tiled": True,
                   "blockxsize": 512, "blockysize": 512, "compress": "lzw", "bigtiff": "yes"}
        with rasterio.open(staging, "w", **profile) as dst:
            for row0 in range(0, size, BLOCK_ROWS):
                rows = min(BLOCK_ROWS, size - row0)
                dst.write(synthetic_rows(row0, rows, size, noise),
                          window=Window(0, row0, size, rows))
        partial = Path(tmp) / "cog.tif"
        with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
            rasterio.shutil.copy(staging, partial, driver="COG", COMPRESS="JPEG", QUALITY=85,
                                 BLOCKSIZE=512, OVERVIEW_RESAMPLING="AVERAGE",
                                 NUM_THREADS="ALL_CPUS", BIGTIFF="IF_SAFER")
        os.replace(partial, path)
    return path


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def random_windows(raster: tiles.Raster, rng: np.random.Generator, n: int,
                   size: int) -> list[Window]:
    offsets = rng.integers(0, max(1, min(raster.width, raster.height) - size), (n, 2))
    return [Window(int(c), int(r), size, size) for c, r in offsets]


def bench_crop(raster: tiles.Raster, source, dataset, rng, n: int) -> dict:
    """Interleaved: each method reads its own random windows (no shared block-cache hits)."""
    ours, bare = [], []
    for window_a, window_b in zip(random_windows(raster, rng, n, 1024),
                                random_windows(raster, rng, n, 1024), strict=False):
        bare.append(timed(dataset.read, window=window_a))
        ours.append(timed(tiles.read_crop, raster, window_b, 1024, source=source))
    return {"ours": statistics.median(ours), "baseline": statistics.median(bare)}


def full_res_then_resize(dataset, window: Window, side: int) -> np.ndarray:
    data = dataset.read(window=window)  # (3, 10000, 10000)
    image = Image.fromarray(np.ascontiguousarray(data.transpose(1, 2, 0)))
    return np.asarray(image.resize((side, side), Image.Resampling.BILINEAR))


def bench_decimated(raster: tiles.Raster, source, dataset, rng, n: int) -> dict:
    ours, full = [], []
    for window_a, window_b in zip(random_windows(raster, rng, n, 10_000),
                                  random_windows(raster, rng, n, 10_000), strict=False):
        full.append(timed(full_res_then_resize, dataset, window_a, 1024))
        ours.append(timed(tiles.read_crop, raster, window_b, 1024, source=source))
    return {"ours": statistics.median(ours), "baseline": statistics.median(full)}


def tiles_for_zoom(raster: tiles.Raster, z: int, n: int, rng) -> list[tuple[int, int, int]]:
    import morecantile

    tms = morecantile.tms.get("WebMercatorQuad")
    west, south, east, north = raster.bounds_lonlat
    inner = [tms.tile(lon, lat, z) for lon, lat in zip(rng.uniform(west, east, n),
                                                       rng.uniform(south, north, n), strict=False)]
    return [(t.z, t.x, t.y) for t in inner]


def rio_tiler_png(reader, z: int, x: int, y: int) -> bytes:
    """The baseline: rio-tiler's own tile read and PNG render."""
    return reader.tile(x, y, z).render(img_format="PNG")


def bench_tiles(raster: tiles.Raster, source, path: Path, zooms: range, per_zoom: int, rng) -> dict:
    from rio_tiler.io import Reader

    ours, direct = [], []
    with warnings.catch_warnings(), Reader(str(path)) as reader:
        warnings.simplefilter("ignore")
        for z in zooms:
            for tz, tx, ty in tiles_for_zoom(raster, z, per_zoom, rng):
                direct.append(timed(rio_tiler_png, reader, tz, tx, ty))
                ours.append(timed(tiles.render_tile, raster, tz, tx, ty, source=source))
    return {
        "ours_p50": float(np.percentile(ours, 50)), "ours_p95": float(np.percentile(ours, 95)),
        "baseline_p50": float(np.percentile(direct, 50)),
        "baseline_p95": float(np.percentile(direct, 95)), "count": len(ours),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / ".bench-cache")
    parser.add_argument("--crops", type=int, default=15, help="1024^2 crops per method")
    parser.add_argument("--decimated", type=int, default=3, help="10000^2 reads per method")
    parser.add_argument("--tiles-per-zoom", type=int, default=20)
    parser.add_argument("--size", type=int, default=SIZE, help="raster side (smoke tests only)")
    args = parser.parse_args()

    path = build_cog(args.cache_dir, args.size)
    rng = np.random.default_rng(42)
    with tiles.Catalog(args.cache_dir / "workspace") as catalog, rasterio.open(path) as dataset:
        raster = catalog.get(catalog.open(path))
        source = catalog.source(raster.raster_id)  # the catalog's pooled handles, as the app reads
        tiles.read_crop(raster, Window(0, 0, 256, 256), 256, source=source)  # warm: open handle, page cache
        dataset.read(window=Window(0, 0, 256, 256))
        crop = bench_crop(raster, source, dataset, rng, args.crops)
        decimated = bench_decimated(raster, source, dataset, rng, args.decimated)
        tile = bench_tiles(raster, source, path, range(12, 20), args.tiles_per_zoom, rng)

    rows = [
        ("crop 1024² window vs bare rasterio read", crop["ours"], crop["baseline"],
         f"{crop['ours'] / crop['baseline']:.2f}x time", "<= 1.2x"),
        ("decimated crop 10000²→1024 vs full-res read + resize", decimated["ours"],
         decimated["baseline"], f"{decimated['baseline'] / decimated['ours']:.1f}x faster",
         ">= 20x"),
        (f"tile p50 z12-19 ({tile['count']} tiles) vs rio-tiler", tile["ours_p50"],
         tile["baseline_p50"], f"{tile['ours_p50'] / tile['baseline_p50']:.2f}x time", "-"),
        ("tile p95 vs rio-tiler", tile["ours_p95"], tile["baseline_p95"],
         f"{tile['ours_p95'] / tile['baseline_p95']:.2f}x time", "p95 <= 60 ms"),
    ]
    print(f"\nGeoLens tiles benchmark ({os.cpu_count()} CPUs, {args.size}x{args.size} RGB COG)\n")
    print("| measurement | ours (ms) | baseline (ms) | ratio | target |")
    print("|---|---|---|---|---|")
    for name, ours_s, base_s, ratio, target in rows:
        print(f"| {name} | {ours_s * 1000:.1f} | {base_s * 1000:.1f} | {ratio} | {target} |")


if __name__ == "__main__":
    main()
