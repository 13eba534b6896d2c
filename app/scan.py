"""Whole-scene search, tile by tile: :func:`scan_raster` and the ``python -m app.scan`` command.

A scan asks the engine's ``ground`` task for one phrase ("storage tank") on every tile of a
:func:`tiles.plan_tiles` plan (tiles of the model's input size; empty tiles skipped with
:func:`tiles.empty_tile_predicate`), maps each tile's boxes to raster pixels
(:func:`tiles.tile_detections`) and merges them across tiles (:func:`tiles.merge_tiles`: seam
rule, then WBF or NMS). The result is a frozen :class:`ScanResult`: the objects in raster pixels
and as lon/lat polygons (pixel polygons for plain images).

Box scores: the engine gives no confidence per box yet (``BoxPx.score`` is None for both
backbones and the demo model), so such boxes count with :data:`UNSCORED_BOX_SCORE` (1.0). Merging
then still clusters duplicates (greedy, in tile order), and WBF averages their coordinates with
equal weights; the ``score`` column says 1.0 for every object until the engine reports one.

The command scans many rasters for one or more phrases and writes a GeoPackage (one layer per
query; lon/lat EPSG:4326, or ``<query> (pixel)`` layers without CRS for plain images) plus
GeoJSON next to it. It is resumable: each finished tile is appended (flushed and fsynced) to a
JSONL checkpoint ``<out>.progress/<key>.jsonl``, ``key`` hashing the raster file, the query, the
model and the tiling plan; a rerun after Ctrl-C or a crash reads those tiles back instead of
running them and writes the same features. Usage::

    python -m app.scan scene1.tif scene2.tif --find "storage tank" --out tanks.gpkg
    python -m app.scan big.tif --find building --region district.geojson --gsd 0.5
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO, runtime_checkable

import numpy as np
import shapely
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

import tiles
from app.config import BACKBONES, DEVICES
from engine.types import Answer, Task

if TYPE_CHECKING:
    from tqdm import tqdm as Tqdm

__all__ = [
    "DEFAULT_SCAN_TILE_PX",
    "UNSCORED_BOX_SCORE",
    "ScanObject",
    "ScanResult",
    "ScanSettings",
    "TileCheckpoint",
    "engine_input_px",
    "main",
    "region_px_from_lonlat",
    "scan_raster",
]

log = logging.getLogger(__name__)

DEFAULT_SCAN_TILE_PX = 512  # tile side when the engine does not say what it takes
UNSCORED_BOX_SCORE = 1.0  # score of a box the engine gave without a confidence
CHECKPOINT_VERSION = 1


@runtime_checkable
class GroundingEngine(Protocol):
    """What a scan needs from an engine (``engine.Engine``, ``engine.remote.RemoteEngine``)."""

    def run(self, image: np.ndarray, task: Task | str, question: str | None = None) -> Answer: ...


@runtime_checkable
class BatchGroundingEngine(GroundingEngine, Protocol):
    """An engine that also answers several crops in one batch (``engine.Engine.run_batch``)."""

    def run_batch(self, images: Sequence[np.ndarray], task: Task | str,
                  question: str | None = None) -> list[Answer]: ...


@dataclass(frozen=True)
class ScanObject:
    """One merged object: ``box_px`` (x0, y0, x1, y1) in raster pixels and ``polygon`` in the
    result's coordinate space (lon/lat, or raster pixels for plain images)."""

    box_px: tuple[float, float, float, float]
    polygon: BaseGeometry
    score: float  # best member score; UNSCORED_BOX_SCORE when the engine gives none
    label: str
    n_merged: int  # boxes (tile views) merged into this object
    tiles: tuple[int, ...]  # PlannedTile.index of its members


@dataclass(frozen=True)
class ScanResult:
    """What one scan of one raster for one query found (frozen; ``objects`` best first)."""

    query: str
    raster: str  # the raster's file name
    coordinate_space: str  # "lonlat" or "pixel" (tiles.LONLAT / tiles.PIXEL)
    tile_px: int  # model pixels per tile side
    decimation: float  # raster pixels per model pixel
    grid_shape: tuple[int, int]  # (rows, cols) of the full tile grid
    objects: tuple[ScanObject, ...]
    tiles_done: int  # tiles with an answer (run now or read back from a checkpoint)
    tiles_total: int  # tiles of the plan (skipped ones excluded)
    skipped: int  # tiles of the grid not read: outside the region or empty
    stopped: bool  # should_stop ended the scan early: objects are those found so far

    def __post_init__(self) -> None:
        if self.coordinate_space not in (tiles.LONLAT, tiles.PIXEL):
            raise ValueError(f"coordinate_space must be {tiles.LONLAT!r} or {tiles.PIXEL!r}, "
                             f"got {self.coordinate_space!r}")
        if not 0 <= self.tiles_done <= self.tiles_total:
            raise ValueError(f"tiles_done={self.tiles_done} must be in [0, {self.tiles_total}]")

    @property
    def count(self) -> int:
        return len(self.objects)

    def features(self) -> list[dict[str, Any]]:
        """One RFC 7946 Feature per object with the properties raster, query, label, score,
        n_merged, tiles (tile indices as text, e.g. "3,4")."""
        return [
            tiles.to_feature(
                obj.polygon, _properties(self, obj), coordinate_space=self.coordinate_space,
                image=self.raster if self.coordinate_space == tiles.PIXEL else None)
            for obj in self.objects
        ]


def _properties(result: ScanResult, obj: ScanObject) -> dict[str, Any]:
    return {"raster": result.raster, "query": result.query, "label": obj.label,
            "score": obj.score, "n_merged": obj.n_merged,
            "tiles": ",".join(str(t) for t in obj.tiles)}


# --- the scan core ---------------------------------------------------------------------------


def engine_input_px(engine: object) -> int | None:
    """The square side (pixels) the engine's vision encoder takes natively, or None when it
    does not have one (dynamic resolution: Qwen2.5-VL, remote models). Only the ``paper``
    backbone (fixed-resolution SigLIP) has one: 128 for the demo model."""
    from engine.engine import Engine

    if isinstance(engine, Engine) and engine.config.backbone == "paper":
        return int(engine.vlm.backbone.vision.config.image_size)
    return None


def scan_raster(
    raster: tiles.Raster,
    engine: GroundingEngine,
    query: str,
    *,
    source: tiles.RasterSource | None = None,
    region_px: BaseGeometry | None = None,
    tile_px: int | None = None,
    gsd_m: float | None = None,
    overlap: float = tiles.DEFAULT_OVERLAP,
    method: str = "wbf",
    batch_size: int = 8,
    should_stop: Callable[[], bool] | None = None,
    progress: Callable[[tiles.TileDetections], None] | None = None,
    done_tiles: Mapping[int, tiles.TileDetections] | None = None,
    plan: tiles.TilePlan | None = None,
) -> ScanResult:
    """Find ``query`` on every tile of ``raster`` and merge the boxes into objects.

    ``region_px``: the area to scan (shapely polygon in raster pixels; default the whole
    raster); objects not meeting it are dropped. ``tile_px``: model pixels per tile (default
    :func:`engine_input_px`, else 512); ``gsd_m``: metres per model pixel (default native);
    ``overlap``: fraction of the tile.
    ``method``: "wbf" or "nms" (:func:`tiles.merge_tiles`). Tiles go to ``engine.run_batch`` in
    batches of ``batch_size`` when the engine has it, else one by one to ``engine.run``.
    ``should_stop()`` is checked before each batch; True ends the scan with ``stopped=True`` and
    the objects of the tiles done. ``progress(detections)`` is called after each tile (raster
    pixels). ``done_tiles``: detections of tiles finished earlier (by ``PlannedTile.index``),
    not run again. ``plan``: a plan made by :func:`plan_scan` with the same settings (saves
    planning twice).
    """
    query = _check_query(query)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if plan is None:
        plan = plan_scan(raster, engine, source=source, region_px=region_px, tile_px=tile_px,
                         gsd_m=gsd_m, overlap=overlap)
    done = dict(done_tiles or {})
    todo = [t for t in plan.tiles if t.index not in done]
    stopped = False
    for start in range(0, len(todo), batch_size):
        if should_stop is not None and should_stop():
            stopped = True
            break
        batch = todo[start:start + batch_size]
        for found in _run_tiles(raster, batch, engine, query, source):
            done[found.tile.index] = found
            if progress is not None:
                progress(found)
    detections = [done[t.index] for t in plan.tiles if t.index in done]  # plan order: stable merge
    merged = _inside(tiles.merge_tiles(plan, detections, method=method), region_px)
    space, polygons = _result_polygons(raster, merged)
    objects = tuple(
        ScanObject(box.xyxy, polygon, box.score, str(box.label), box.n_merged, box.tiles)
        for box, polygon in zip(merged, polygons, strict=True)
    )
    return ScanResult(query=query, raster=raster.name, coordinate_space=space,
                      tile_px=plan.tile_px, decimation=plan.decimation,
                      grid_shape=plan.grid_shape, objects=objects, tiles_done=len(detections),
                      tiles_total=len(plan.tiles), skipped=plan.skipped, stopped=stopped)


def plan_scan(
    raster: tiles.Raster,
    engine: object,
    *,
    source: tiles.RasterSource | None = None,
    region_px: BaseGeometry | None = None,
    tile_px: int | None = None,
    gsd_m: float | None = None,
    overlap: float = tiles.DEFAULT_OVERLAP,
) -> tiles.TilePlan:
    """The tiling plan :func:`scan_raster` uses (empty tiles skipped; see its arguments)."""
    if tile_px is None:
        tile_px = engine_input_px(engine) or DEFAULT_SCAN_TILE_PX
    return tiles.plan_tiles(raster, tile_px=tile_px, overlap=overlap, polygon=region_px,
                            gsd_m=gsd_m, skip=tiles.empty_tile_predicate(raster, source=source))


def _inside(merged: tuple[tiles.MergedBox, ...],
            region_px: BaseGeometry | None) -> tuple[tiles.MergedBox, ...]:
    """The objects meeting the region: tiles stick out of a drawn polygon, and what they see
    outside it was not asked about."""
    if region_px is None or not merged:
        return merged
    boxes = shapely.box(*np.array([b.xyxy for b in merged]).T)
    meets = shapely.intersects(region_px, boxes) & ~shapely.touches(region_px, boxes)
    return tuple(b for b, keep in zip(merged, meets.tolist(), strict=True) if keep)


def _check_query(query: Any) -> str:
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"query must be a non-empty phrase to find, e.g. 'storage tank'; "
                         f"got {query!r}")
    return query.strip()


def _run_tiles(raster: tiles.Raster, batch: list[tiles.PlannedTile],
               engine: GroundingEngine, query: str,
               source: tiles.RasterSource | None) -> list[tiles.TileDetections]:
    """Read ``batch`` (windowed), ask the engine, map the boxes to raster pixels."""
    crops = [tiles.read_crop(raster, t.window, t.max_side, source=source) for t in batch]
    images = [c.image for c in crops]
    if isinstance(engine, BatchGroundingEngine) and len(images) > 1:
        answers = engine.run_batch(images, Task.GROUND, question=query)
    else:
        answers = [engine.run(image, Task.GROUND, question=query) for image in images]
    return [_detections(t, c, a, query) for t, c, a in zip(batch, crops, answers, strict=True)]


def _detections(tile: tiles.PlannedTile, crop: tiles.Crop, answer: Answer,
                query: str) -> tiles.TileDetections:
    boxes = answer.boxes_px
    scores = [UNSCORED_BOX_SCORE if b.score is None else float(b.score) for b in boxes]
    labels = [(b.label or "").strip() or query for b in boxes]
    return tiles.tile_detections(tile, crop, boxes, scores, labels)


def _raster_frame(raster: tiles.Raster) -> tiles.Crop:
    """A pixel-less Crop standing for the whole raster at native scale: its crop pixels are the
    raster's pixels, so tiles' geometry functions map raster-pixel boxes with it."""
    return tiles.Crop(image=np.zeros((1, 1, 3), np.uint8), valid=np.zeros((1, 1), bool),
                      transform=raster.transform, crs=raster.crs,
                      window=Window(0, 0, raster.width, raster.height), raster_path=raster.path,
                      raster_id=raster.raster_id, scale_x=1.0, scale_y=1.0)


def _result_polygons(raster: tiles.Raster,
                     merged: Sequence[tiles.MergedBox]) -> tuple[str, list[BaseGeometry]]:
    frame = _raster_frame(raster)
    boxes = [b.xyxy for b in merged]
    if not boxes:
        return (tiles.LONLAT if raster.georeferenced else tiles.PIXEL), []
    return tiles.boxes_to_result_space(frame, boxes)


def region_px_from_lonlat(raster: tiles.Raster, region_lonlat: Any) -> BaseGeometry:
    """A lon/lat (EPSG:4326) polygon (GeoJSON or shapely) -> the same polygon in ``raster``'s
    pixels (x = column, y = row). NotGeoreferencedError for plain images."""
    geom = tiles.as_geometry(region_lonlat)
    if not raster.georeferenced:
        raise tiles.NotGeoreferencedError(
            f"raster {raster.name!r} is not georeferenced, so a lon/lat --region cannot be "
            "placed on it; scan it without --region")
    geom = shapely.segmentize(geom, 0.001)  # about 100 m: follow the CRS's curvature
    frame = _raster_frame(raster)

    def to_px(lonlat: np.ndarray) -> np.ndarray:
        x, y = tiles.lonlat_to_px(frame, lonlat[:, 0], lonlat[:, 1])
        return np.stack([x, y], axis=1)

    return shapely.make_valid(shapely.transform(geom, to_px))


# --- checkpoints -----------------------------------------------------------------------------


class TileCheckpoint:
    """Finished tiles of one (raster, query, model, plan) as JSONL, one line per tile:
    ``{"tile": index, "boxes_px": [[x0, y0, x1, y1], ...], "scores": [...], "labels": [...]}``
    in raster pixels. Lines are appended, flushed and fsynced, so a crash loses at most the
    tile being written (a torn last line is ignored on reading)."""

    def __init__(self, path: Path, plan: tiles.TilePlan) -> None:
        self.path = path
        self.plan = plan
        self._file: TextIO | None = None

    @staticmethod
    def key(raster: tiles.Raster, query: str, model: str, plan: tiles.TilePlan) -> str:
        """A hash of what a tile's boxes depend on: the raster file, the query, the model and
        the plan (not the merge method: a rerun with another --merge reuses the tiles)."""
        try:
            stat = Path(raster.path).stat()
            identity = [str(Path(raster.path).resolve()), stat.st_size, stat.st_mtime_ns]
        except OSError:  # not a local file (e.g. /vsicurl/): its name only
            identity = [str(raster.path)]
        parts = {
            "version": CHECKPOINT_VERSION, "raster": identity, "query": query, "model": model,
            "tile_px": plan.tile_px, "overlap_px": plan.overlap_px,
            "decimation": plan.decimation, "span_px": plan.span_px,
            "window": [int(plan.window.col_off), int(plan.window.row_off),
                       int(plan.window.width), int(plan.window.height)],
            "tiles": [[t.index, *t.bounds_px] for t in plan.tiles],
        }
        text = json.dumps(parts, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def read(self) -> dict[int, tiles.TileDetections]:
        """Detections of the tiles finished earlier (none when the file does not exist)."""
        by_index = {t.index: t for t in self.plan.tiles}
        done: dict[int, tiles.TileDetections] = {}
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return done
        for number, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
                tile = by_index[int(row["tile"])]
                boxes = np.asarray(row["boxes_px"], "float64").reshape(-1, 4)
                done[tile.index] = tiles.TileDetections(
                    tile, boxes, np.asarray(row["scores"], "float64").reshape(-1),
                    tuple(row["labels"]))
            except (ValueError, KeyError, TypeError, tiles.TilingError) as exc:
                log.warning("%s line %d is not a finished tile (%s); it will be run again",
                            self.path, number, exc)
        return done

    def append(self, found: tiles.TileDetections) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close)
            if self._file.tell() and not self.path.read_bytes().endswith(b"\n"):
                self._file.write("\n")  # end a torn line so the next one stands alone
        row = {"tile": found.tile.index, "boxes_px": found.boxes_px.tolist(),
               "scores": found.scores.tolist(), "labels": [str(x) for x in found.labels]}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# --- writing ---------------------------------------------------------------------------------

COLUMNS = ("raster", "query", "label", "score", "n_merged", "tiles")


def layer_name(query: str, space: str) -> str:
    """GeoPackage layer of a query: the query itself (lon/lat) or ``<query> (pixel)``."""
    return query if space == tiles.LONLAT else f"{query} ({tiles.PIXEL})"


def write_results(out: Path, results: Sequence[ScanResult]) -> list[Path]:
    """Write ``results`` as a GeoPackage at ``out`` (one layer per query and space; lon/lat
    layers in EPSG:4326, pixel layers without CRS and with a ``coordinate_space`` column) and
    as GeoJSON next to it (``<stem>.geojson`` lon/lat, ``<stem>.pixel.geojson`` pixel space).
    Both are written to a temp file and renamed. Returns the paths written."""
    import geopandas as gpd
    import pyogrio

    groups: dict[tuple[str, str], list[ScanResult]] = {}
    for result in results:
        groups.setdefault((result.query, result.coordinate_space), []).append(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.gpkg")
    tmp.unlink(missing_ok=True)
    for (query, space), group in groups.items():
        rows = [{**_properties(r, o), "geometry": o.polygon} for r in group for o in r.objects]
        frame = gpd.GeoDataFrame(rows, columns=[*COLUMNS, "geometry"], geometry="geometry",
                                 crs=tiles.LONLAT_CRS if space == tiles.LONLAT else None)
        if space == tiles.PIXEL:
            frame.insert(len(COLUMNS), tiles.COORDINATE_SPACE_KEY, tiles.PIXEL)
        with warnings.catch_warnings():  # pixel layers have no CRS on purpose
            warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)
            pyogrio.write_dataframe(frame, tmp, layer=layer_name(query, space), driver="GPKG",
                                    append=tmp.exists())
    written = []
    if groups:
        os.replace(tmp, out)
        written.append(out)
    for space, suffix in ((tiles.LONLAT, ".geojson"), (tiles.PIXEL, ".pixel.geojson")):
        features = [f for r in results if r.coordinate_space == space for f in r.features()]
        if any(r.coordinate_space == space for r in results):
            path = out.with_suffix(suffix)
            tiles.write_geojson(path, tiles.to_feature_collection(features))
            written.append(path)
    return written


# --- the command -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ScanSettings:
    """The command's tiling and merging settings, shared by every raster and query."""

    queries: tuple[str, ...]
    tile_px: int | None = None
    gsd_m: float | None = None
    overlap: float = tiles.DEFAULT_OVERLAP
    method: str = "wbf"
    batch_size: int = 8

    def __post_init__(self) -> None:
        if not self.queries:
            raise ValueError("give at least one --find PHRASE, e.g. --find 'storage tank'")
        if self.method not in tiles.MERGE_METHODS:
            raise ValueError(f"unknown merge method {self.method!r}; use one of "
                             f"{tiles.MERGE_METHODS}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m app.scan",
        description="Find objects on whole rasters, tile by tile, and write them to a GeoPackage "
                    "and GeoJSON. Rerun the same command to resume an interrupted scan.")
    p.add_argument("rasters", nargs="+", metavar="RASTER", help="rasters to scan (any GDAL format)")
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
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="tiles per model batch")
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
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def load_scan_engine(args: argparse.Namespace) -> tuple[GroundingEngine, str]:
    """(engine, model key for checkpoints) from --model/--backbone/--adapter/--device and
    --max-answer-tokens; the shipped demo model when --model is not given (as ``launch.py``)."""
    from app.config import ModelSpec, engine_config_for
    from app.demo import demo_manifest
    from app.services import load_engine
    from engine.config import EngineConfig

    manifest = demo_manifest() if args.model is None else None
    if args.model is None and manifest is None:
        raise SystemExit("no model: name one with --model PATH (the demo model is not built; "
                         "`python assets/build_demo.py` builds it)")
    spec = ModelSpec(model=str(manifest) if manifest else args.model, backbone=args.backbone,
                     adapter=Path(args.adapter).expanduser() if args.adapter else None,
                     device=args.device, is_demo=manifest is not None)
    config = engine_config_for(spec)
    if args.max_answer_tokens is not None and isinstance(config, EngineConfig):
        config = dataclasses.replace(config, generation=dataclasses.replace(
            config.generation, max_new_tokens=args.max_answer_tokens))
    engine, status = load_engine(spec, config)
    if engine is None:
        raise SystemExit(f"the model could not be loaded: {status}")
    return engine, f"{spec.backbone}:{spec.model}:{spec.adapter}:{args.max_answer_tokens}"


def scan_files(
    paths: Sequence[Path], engine: GroundingEngine, model_key: str, settings: ScanSettings,
    out: Path, *, region_lonlat: Any = None, show_progress: bool = True,
    should_stop: Callable[[], bool] | None = None, stderr: TextIO | None = None,
) -> tuple[list[ScanResult], list[str]]:
    """Scan every raster for every query with checkpoints under ``<out>.progress/``; returns
    (results, one error message per raster that could not be scanned)."""
    stderr = stderr or sys.stderr
    progress_dir = out.with_name(out.name + ".progress")
    results: list[ScanResult] = []
    errors: list[str] = []
    with tiles.Catalog(progress_dir / "workspace") as catalog:
        for path in paths:
            try:
                raster_id = catalog.open(path, trusted=True)
                raster, source = catalog.get(raster_id), catalog.source(raster_id)
                region = (None if region_lonlat is None
                          else region_px_from_lonlat(raster, region_lonlat))
                plan = plan_scan(raster, engine, source=source, region_px=region,
                                 tile_px=settings.tile_px, gsd_m=settings.gsd_m,
                                 overlap=settings.overlap)
                for query in settings.queries:
                    results.append(_scan_with_checkpoint(
                        raster, source, plan, region, engine, query, model_key, settings,
                        progress_dir, show_progress, should_stop, stderr))
            except tiles.RegionOutsideError as exc:
                print(f"{path}: skipped, the region does not meet it ({exc})", file=stderr)
            except tiles.TilesError as exc:
                errors.append(f"{path}: {exc}")
                print(f"error: {path}: {exc}", file=stderr)
    return results, errors


def _scan_with_checkpoint(raster, source, plan, region, engine, query, model_key, settings,
                          progress_dir, show_progress, should_stop, stderr) -> ScanResult:
    key = TileCheckpoint.key(raster, query, model_key, plan)
    checkpoint = TileCheckpoint(progress_dir / f"{key}.jsonl", plan)
    done = checkpoint.read()
    bar = _progress_bar(f"{raster.name}: {query}", len(plan.tiles), len(done), show_progress,
                        stderr)

    def finished(found: tiles.TileDetections) -> None:
        checkpoint.append(found)
        bar.update(1)

    try:
        return scan_raster(raster, engine, query, source=source, region_px=region,
                           method=settings.method,
                           batch_size=settings.batch_size, should_stop=should_stop,
                           progress=finished, done_tiles=done, plan=plan)
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
                                method=args.merge, batch_size=args.batch_size)
        region = tiles.read_geojson(args.region) if args.region else None
        if Path(args.out).suffix.lower() != ".gpkg":
            raise ValueError(f"--out must name a GeoPackage ending in .gpkg, got {args.out!r}; "
                             "the GeoJSON is written next to it")
    except (ValueError, tiles.TilesError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if engine is None:
        from engine.errors import EngineError

        try:
            engine, model_key = load_scan_engine(args)
        except EngineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    out = Path(args.out).expanduser()
    try:
        results, errors = scan_files([Path(p).expanduser() for p in args.rasters], engine,
                                     model_key or "", settings, out, region_lonlat=region,
                                     show_progress=not args.quiet)
    except KeyboardInterrupt:
        print("interrupted: finished tiles are kept; rerun the same command to resume",
              file=sys.stderr)
        return 130
    for path in write_results(out, results):
        print(f"wrote {path}", file=sys.stderr)
    for result in results:
        print(f"{result.raster}: {result.count} x {result.query!r} ({result.tiles_done}/"
              f"{result.tiles_total} tiles, {result.skipped} skipped)", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":  # pragma: no cover
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
