"""``python -m app.scan``: find objects on whole rasters, tile by tile, into a GeoPackage.

The command scans many rasters for one or more phrases with :func:`app.scanning.scan_raster` and
writes a GeoPackage (one layer per query; lon/lat EPSG:4326, or ``<query> (pixel)`` layers without
CRS for plain images) plus GeoJSON next to it. It is resumable: each finished tile is appended
(flushed and fsynced) to a JSONL checkpoint ``<out>.progress/<key>.jsonl``, ``key`` hashing the
raster file, the query, the model and the tiling plan; a rerun after Ctrl-C or a crash reads those
tiles back instead of running them and writes the same features. ``--ray [ADDRESS]`` runs the
tiles on a Ray cluster (:mod:`app.scan_ray`; Ray is imported only then). A raster named as a URL
(``https://.../scene.tif``) or GDAL network path (``/vsicurl/...``) is read over the network,
in-process as with ``--ray`` (:func:`app.scanning.open_policy_for`: the operator named it); local
rasters keep GDAL's network off. GDAL's block cache is capped at ``--gdal-cache-mb`` (64 MiB)
during the scan, so that a long native-resolution scan does not grow by GDAL's default cache
(5 % of RAM). Usage::

    python -m app.scan scene1.tif scene2.tif --find "storage tank" --out tanks.gpkg
    python -m app.scan big.tif --find building --region district.geojson --gsd 0.5
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import tiles
from app.config import BACKBONES, DEVICES
from app.scanning import (
    DEFAULT_GDAL_CACHE_MB,
    INTERRUPTED_MESSAGE,
    GroundingEngine,
    ScanResult,
    ScanSettings,
    TileCheckpoint,
    _check_query,
    command_rasters,
    is_network_location,
    load_scan_engine,
    plan_scan,
    prefilter_tiles,
    report_raster_error,
    scan_raster,
    write_and_report,
)

if TYPE_CHECKING:
    from tqdm import tqdm as Tqdm

__all__ = ["build_arg_parser", "main", "scan_files"]


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m app.scan",
        description="Find objects on whole rasters, tile by tile, and write them to a GeoPackage "
                    "and GeoJSON. Rerun the same command to resume an interrupted scan.")
    p.add_argument("rasters", nargs="+", metavar="RASTER",
                   help="rasters to scan (any GDAL format; a URL or /vsicurl/ path is read "
                        "over the network)")
    p.add_argument("--find", action="append", required=True, metavar="PHRASE",
                   help="what to find, e.g. 'storage tank' (repeat for several: one layer each)")
    p.add_argument("--region", metavar="FILE",
                   help="GeoJSON FeatureCollection of lon/lat polygon(s): scan only there")
    p.add_argument("--gsd", type=float, metavar="M",
                   help="metres per model pixel (default: native)")
    p.add_argument("--overlap", type=float, default=tiles.DEFAULT_OVERLAP, metavar="F",
                   help="overlap between tiles as a fraction of the tile (default 0.125)")
    p.add_argument("--tile-px", type=int, metavar="N",
                   help="tile side in model pixels (default: the model's input size, else 512)")
    p.add_argument("--merge", choices=tiles.MERGE_METHODS, default="wbf",
                   help="how duplicate boxes merge (default wbf)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N",
                   help="tiles per model batch (halved automatically on out-of-memory)")
    p.add_argument("--prefilter-threshold", type=float, metavar="T",
                   help="CLIP pre-filter: only tiles whose cosine similarity to the "
                        "phrase is >= T go to the model")
    p.add_argument("--prefilter-top", type=float, metavar="F",
                   help="CLIP pre-filter: only the fraction F (0-1] of the tiles most similar "
                        "to the phrase go to the model")
    p.add_argument("--prefilter-clip", metavar="DIR",
                   help="CLIP embedder directory for the pre-filter (default: the model's "
                        "retriever, e.g. the demo's)")
    p.add_argument("--out", default="results.gpkg", metavar="FILE.gpkg",
                   help="GeoPackage to write (GeoJSON goes next to it); default results.gpkg")
    p.add_argument("--model", metavar="PATH_OR_NAME",
                   help="model directory or name (default: the shipped demo model)")
    p.add_argument("--backbone", choices=BACKBONES, default="paper",
                   help="model family (default: paper)")
    p.add_argument("--adapter", metavar="PATH", help="trained adapter directory")
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="where the model runs (default: auto)")
    p.add_argument("--max-answer-tokens", type=int, metavar="N",
                   help="longest answer per tile in tokens (default: the model's)")
    p.add_argument("--gdal-cache-mb", type=int, default=DEFAULT_GDAL_CACHE_MB, metavar="N",
                   help=f"cap GDAL's raster block cache at N MiB during the scan (default "
                        f"{DEFAULT_GDAL_CACHE_MB}; 0: GDAL's default, 5 %% of RAM)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run the tiles on a Ray cluster: HOST:6379 of its head node, or no "
                        "ADDRESS for the cluster this machine joined (else a local Ray); "
                        "needs ray[data] (app/scan_ray.py)")
    p.add_argument("--ray-actors", type=int, metavar="N",
                   help="with --ray: actors, one engine each (default: one per GPU, else CPU)")
    return p


def scan_files(
    paths: Sequence[str | Path], engine: GroundingEngine, model_key: str, settings: ScanSettings,
    out: Path, *, region_lonlat: Any = None, show_progress: bool = True,
    should_stop: Callable[[], bool] | None = None, stderr: TextIO | None = None,
    prefilter_embedder: Any = None,
) -> tuple[list[ScanResult], list[str]]:
    """Scan every raster for every query with checkpoints under ``<out>.progress/``; returns
    (results, one error message per raster that could not be scanned). ``prefilter_embedder``:
    the CLIP for ``settings``' pre-filter (needed when it sets one). A raster given as a URL
    or GDAL network path (a ``str``: pathlib folds its "//") is opened with the network on
    (:func:`app.scanning.open_policy_for`, as ``--ray`` does); local rasters keep it off."""
    prefilter = settings.tile_prefilter(prefilter_embedder)
    stderr = stderr or sys.stderr
    progress_dir = out.with_name(out.name + ".progress")
    results: list[ScanResult] = []
    errors: list[str] = []
    with command_rasters(progress_dir / "workspace") as open_raster:
        for path in paths:
            try:
                named = open_raster(path, region_lonlat)
                plan = plan_scan(named.raster, engine, source=named.source,
                                 region_px=named.region_px, tile_px=settings.tile_px,
                                 gsd_m=settings.gsd_m, overlap=settings.overlap)
                for query in settings.queries:
                    results.append(_scan_with_checkpoint(
                        named.raster, named.source, plan, named.region_px, engine, query,
                        model_key, settings, progress_dir, show_progress, should_stop, stderr,
                        prefilter))
            except tiles.TilesError as exc:
                report_raster_error(path, exc, errors, stderr)
    return results, errors


def _scan_with_checkpoint(raster, source, plan, region, engine, query, model_key, settings,
                          progress_dir, show_progress, should_stop, stderr,
                          prefilter=None) -> ScanResult:
    key = TileCheckpoint.key(raster, query, model_key, plan)
    checkpoint = TileCheckpoint(progress_dir / f"{key}.jsonl", plan)
    done = checkpoint.read()
    total = len(plan.tiles)
    if prefilter is not None:  # before the bar, so that it counts the tiles that will run
        prefilter = prefilter_tiles(raster, plan, query, prefilter, source=source,
                                    gdal_cache_mb=settings.gdal_cache_mb)
        total, done = len(prefilter.kept), {i: d for i, d in done.items() if i in prefilter.kept}
    bar = _progress_bar(f"{raster.name}: {query}", total, len(done), show_progress, stderr)

    def finished(found: tiles.TileDetections) -> None:
        checkpoint.append(found)
        bar.update(1)

    try:
        return scan_raster(raster, engine, query, source=source, region_px=region,
                           method=settings.method,
                           batch_size=settings.batch_size, should_stop=should_stop,
                           progress=finished, done_tiles=done, plan=plan, prefilter=prefilter,
                           gdal_cache_mb=settings.gdal_cache_mb)
    finally:
        checkpoint.close()
        bar.close()


def _progress_bar(desc: str, total: int, initial: int, show: bool, stream: TextIO) -> Tqdm:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="tile", disable=not show,
                file=stream, dynamic_ncols=True)


def main(argv: Sequence[str] | None = None, *, engine: GroundingEngine | None = None,
         model_key: str | None = None) -> int:
    """Run the command; returns the exit status (0 ok, 1 some raster failed, 130 interrupted).
    ``engine``/``model_key``: an engine loaded already (tests) instead of --model."""
    args = build_arg_parser().parse_args(argv)
    try:
        settings = ScanSettings(queries=tuple(dict.fromkeys(_check_query(q) for q in args.find)),
                                tile_px=args.tile_px, gsd_m=args.gsd, overlap=args.overlap,
                                method=args.merge, batch_size=args.batch_size,
                                prefilter_threshold=args.prefilter_threshold,
                                prefilter_top=args.prefilter_top,
                                gdal_cache_mb=args.gdal_cache_mb)
        region = tiles.read_geojson(args.region) if args.region else None
        if Path(args.out).suffix.lower() != ".gpkg":
            raise ValueError(f"--out must name a GeoPackage ending in .gpkg, got {args.out!r}; "
                             "the GeoJSON is written next to it")
    except (ValueError, tiles.TilesError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    if args.ray is not None:  # Ray is imported only here
        from app.scan_ray import main_ray

        return main_ray(args, settings, region, engine=engine)
    if engine is None:
        from engine.errors import EngineError

        try:
            engine, model_key = load_scan_engine(args)
        except EngineError as exc:
            sys.stderr.write(f"error: {exc}\n")
            return 2
    out = Path(args.out).expanduser()
    try:
        embedder = _prefilter_embedder(args, engine, settings)
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    try:
        paths = [p if is_network_location(p) else Path(p).expanduser() for p in args.rasters]
        results, errors = scan_files(paths, engine,
                                     model_key or "", settings, out, region_lonlat=region,
                                     show_progress=not args.quiet, prefilter_embedder=embedder)
    except KeyboardInterrupt:
        sys.stderr.write(f"{INTERRUPTED_MESSAGE}\n")
        return 130
    return write_and_report(out, results, errors, sys.stderr)


def _prefilter_embedder(args: argparse.Namespace, engine: object, settings: ScanSettings) -> Any:
    """The CLIP of the pre-filter: --prefilter-clip DIR, else the engine's retriever's; None
    without a pre-filter."""
    if settings.prefilter_threshold is None and settings.prefilter_top is None:
        return None
    if args.prefilter_clip:
        from engine.errors import EngineError
        from engine.retrieval import ClipEmbedder

        try:
            return ClipEmbedder.load(Path(args.prefilter_clip).expanduser())
        except EngineError as exc:
            raise ValueError(f"--prefilter-clip {args.prefilter_clip}: {exc}") from exc
    embedder = getattr(getattr(engine, "retriever", None), "embedder", None)
    if embedder is None:
        raise ValueError("the CLIP pre-filter needs a CLIP: this model has no retriever, so "
                         "name an embedder directory with --prefilter-clip DIR "
                         "(e.g. assets/demo/clip)")
    return embedder


if __name__ == "__main__":  # pragma: no cover
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
