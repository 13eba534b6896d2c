"""Co-registered crop pairs: one ``tiles.read_crop_pair`` vs two single ``tiles.read_crop`` calls.

On the real NAIP 2009/2020 pair in ``../shared/data/geotiff`` (two grids that differ by a 1 m
shift and one row), for the same lon/lat region: the baseline reads each raster's own window
with ``read_crop`` (no resampling, two grids); the pair reads both onto the 2020 raster's grid
through GDAL's warper (``WarpedVRT`` over the window, bilinear). Medians of ``--repeats`` calls,
interleaved, and their ratio, in one run.

Usage::

    python benchmarks/bench_pairs.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import tiles  # noqa: E402

NAIP = REPO.parent / "shared" / "data" / "geotiff"
BEFORE, AFTER = "m_4709963_se_14_1_20090818.tif", "m_4709963_se_14_1_20200831.tif"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    if not (NAIP / BEFORE).is_file() or not (NAIP / AFTER).is_file():
        sys.stderr.write(f"needs the NAIP pair in {NAIP} (the shared sample data)\n")
        return 2
    from shapely.geometry import box, mapping

    before, after = tiles.open_raster(NAIP / BEFORE), tiles.open_raster(NAIP / AFTER)
    west, south, _, _ = after.bounds_lonlat
    region = mapping(box(west + 0.01, south + 0.008, west + 0.035, south + 0.022))
    win_after, win_before = tiles.region_window(after, region), tiles.region_window(before, region)

    def singles() -> None:
        tiles.read_crop(after, win_after)
        tiles.read_crop(before, win_before)

    def pair() -> None:
        tiles.read_crop_pair(before, after, region)

    times: dict[str, list[float]] = {"two single crops": [], "one co-registered pair": []}
    for f in (singles, pair):
        f()  # warm: open datasets, GDAL block cache
    for _ in range(args.repeats):
        for name, f in (("two single crops", singles), ("one co-registered pair", pair)):
            t0 = time.perf_counter()
            f()
            times[name].append((time.perf_counter() - t0) * 1000)
    base = statistics.median(times["two single crops"])
    sys.stdout.write(f"region window on the 2020 grid: {win_after}\n")
    for name, values in times.items():
        median = statistics.median(values)
        sys.stdout.write(f"{name:24s} {median:8.1f} ms  ({median / base:.2f}x)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
