"""Whole-scene search, tile by tile: :func:`scan_raster` (the core under ``python -m app.scan``,
the app's tile-by-tile search and ``--ray`` workers).

A scan asks the engine's ``ground`` task for one phrase ("storage tank") on every tile of a
:func:`tiles.plan_tiles` plan (tiles of the model's input size; empty tiles skipped with
:func:`tiles.empty_tile_predicate`), maps each tile's boxes to raster pixels
(:func:`tiles.tile_detections`) and merges them across tiles (:func:`tiles.merge_tiles`: seam
rule, then WBF or NMS). The result is a frozen :class:`ScanResult`: the objects in raster pixels
and as lon/lat polygons (pixel polygons for plain images).

Box scores: the in-process engine scores each box with the geometric mean of the probabilities
of the tokens that wrote its four coordinates (:mod:`engine.boxes`): the model's own confidence
in the box's position, not a calibrated detection probability. Merging ranks and weights boxes
by it (NMS keeps the best, WBF weights coordinates by score) and an object's ``score`` is its
best member's. Boxes without a score (remote servers that send none) count with
:data:`UNSCORED_BOX_SCORE` (1.0).

Batches: tiles go to ``engine.run_batch`` ``batch_size`` at a time; the engine halves its batch
on a CUDA out-of-memory error (``engine.Engine.run_batch``) and remembers the size that fit, and
:attr:`ScanResult.batch_size` reports the batch the scan settled on.

Pre-filter (ImageRAG-style, optional): with a :class:`TilePrefilter`, the retriever's CLIP embeds
every tile of the plan once and the query once (:func:`engine.retrieval.ranking.rank_images_for_text`),
and only the tiles whose similarity passes a threshold, or the top fraction of them, go to the VLM;
:attr:`ScanResult.prefiltered` counts the tiles it skipped, and when no tile passes the threshold
the scan says so (:attr:`ScanResult.prefilter_note`, a warning) instead of returning nothing
silently. Tiles are read twice (once for CLIP, again for the VLM), so memory stays that of a batch.

Checkpoints (:class:`TileCheckpoint`) and the GeoPackage/GeoJSON writer (:func:`write_results`)
live here too; the command line (``python -m app.scan``) is :mod:`app.scan`, and the Ray
scale-out :mod:`app.scan_ray`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO, runtime_checkable

import numpy as np
import shapely
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

import tiles
from engine.types import Answer, Task

__all__ = [
    "DEFAULT_GDAL_CACHE_MB",
    "DEFAULT_SCAN_TILE_PX",
    "UNSCORED_BOX_SCORE",
    "CommandRaster",
    "PrefilterOutcome",
    "ScanObject",
    "ScanResult",
    "ScanSettings",
    "TileCheckpoint",
    "TilePrefilter",
    "command_rasters",
    "engine_input_px",
    "is_network_location",
    "layer_name",
    "load_prefilter_clip",
    "load_scan_engine",
    "merge_objects",
    "open_policy_for",
    "plan_scan",
    "prefilter_tiles",
    "region_px_from_lonlat",
    "report_raster_error",
    "scan_raster",
    "settled_batch_size",
    "write_and_report",
    "write_results",
]

log = logging.getLogger(__name__)

DEFAULT_SCAN_TILE_PX = 512  # tile side when the engine does not say what it takes
UNSCORED_BOX_SCORE = 1.0  # score of a box the engine gave without a confidence
CHECKPOINT_VERSION = 1
# GDAL block cache (MiB) during a scan: a native-resolution scan decodes blocks that later tiles,
# far away, never reuse; GDAL's default (5 % of RAM) let the RSS grow ~1.1 MB per tile.
DEFAULT_GDAL_CACHE_MB = 64
_NETWORK_PREFIXES = ("/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsiadls", "/vsioss",
                     "/vsiswift", "/vsiwebhdfs", "/vsihdfs")


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
    prefiltered: int = 0  # tiles of the plan the CLIP pre-filter kept from the VLM
    prefilter_note: str | None = None  # e.g. that no tile passed the pre-filter's threshold
    batch_size: int | None = None  # tiles per engine batch the scan settled on (after OOMs)

    def __post_init__(self) -> None:
        if self.coordinate_space not in (tiles.LONLAT, tiles.PIXEL):
            raise ValueError(f"coordinate_space must be {tiles.LONLAT!r} or {tiles.PIXEL!r}, "
                             f"got {self.coordinate_space!r}")
        if not 0 <= self.tiles_done <= self.tiles_total:
            raise ValueError(f"tiles_done={self.tiles_done} must be in [0, {self.tiles_total}]")
        if not 0 <= self.prefiltered <= self.tiles_total - self.tiles_done:
            raise ValueError(f"prefiltered={self.prefiltered} must be in [0, tiles_total - "
                             f"tiles_done = {self.tiles_total - self.tiles_done}]")

    @property
    def count(self) -> int:
        return len(self.objects)

    def summary(self) -> str:
        """One line for logs and the command: count, tiles done, skipped, pre-filtered, batch."""
        text = (f"{self.raster}: {self.count} x {self.query!r} ({self.tiles_done}/"
                f"{self.tiles_total} tiles, {self.skipped} skipped")
        if self.prefiltered:
            text += f", {self.prefiltered} left out by the CLIP pre-filter"
        if self.batch_size is not None:
            text += f", batch {self.batch_size}"
        return text + ")" + (f"; {self.prefilter_note}" if self.prefilter_note else "")

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
    prefilter: TilePrefilter | PrefilterOutcome | None = None,
    gdal_cache_mb: int | None = None,
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
    planning twice). ``prefilter``: a :class:`TilePrefilter` (CLIP ranks the tiles first), or
    the :class:`PrefilterOutcome` of one already run on this plan and query; only its kept
    tiles are run and merged (done tiles it drops too, so a resumed scan merges what a fresh
    one does). ``gdal_cache_mb``: GDAL's block cache cap (MiB) while the scan reads
    (:func:`tiles.gdal_cache_limit`; None or 0, the default: leave the cache alone). The cache
    size is process-wide and shrinking it flushes blocks other threads may be reading, so only
    single-threaded scan processes set it (the command, Ray actors), never the app.
    """
    with tiles.gdal_cache_limit(gdal_cache_mb):
        return _scan_raster(raster, engine, query, source=source, region_px=region_px,
                            tile_px=tile_px, gsd_m=gsd_m, overlap=overlap, method=method,
                            batch_size=batch_size, should_stop=should_stop, progress=progress,
                            done_tiles=done_tiles, plan=plan, prefilter=prefilter)


def _scan_raster(raster, engine, query, *, source, region_px, tile_px, gsd_m, overlap, method,
                 batch_size, should_stop, progress, done_tiles, plan, prefilter) -> ScanResult:
    query = _check_query(query)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if plan is None:
        plan = plan_scan(raster, engine, source=source, region_px=region_px, tile_px=tile_px,
                         gsd_m=gsd_m, overlap=overlap)
    if isinstance(prefilter, TilePrefilter):
        prefilter = prefilter_tiles(raster, plan, query, prefilter, source=source)
    kept = prefilter.kept if prefilter is not None else frozenset(t.index for t in plan.tiles)
    done = {i: found for i, found in (done_tiles or {}).items() if i in kept}
    todo = [t for t in plan.tiles if t.index not in done and t.index in kept]
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
    space, objects = merge_objects(raster, plan, detections, region_px=region_px, method=method)
    return ScanResult(query=query, raster=raster.name, coordinate_space=space,
                      tile_px=plan.tile_px, decimation=plan.decimation,
                      grid_shape=plan.grid_shape, objects=objects, tiles_done=len(detections),
                      tiles_total=len(plan.tiles), skipped=plan.skipped, stopped=stopped,
                      prefiltered=len(plan.tiles) - len(kept),
                      prefilter_note=prefilter.note if prefilter is not None else None,
                      batch_size=settled_batch_size(engine, batch_size))


def settled_batch_size(engine: object, batch_size: int) -> int:
    """Tiles per engine batch: ``batch_size``, or less once the engine halved its batch after
    running out of memory (``engine.Engine.batch_limit``); 1 for engines without batches."""
    if not isinstance(engine, BatchGroundingEngine):
        return 1
    limit = getattr(engine, "batch_limit", None)
    return min(batch_size, limit) if isinstance(limit, int) and limit >= 1 else batch_size


# --- CLIP pre-filter -------------------------------------------------------------------------


@dataclass(frozen=True)
class TilePrefilter:
    """Send only the tiles CLIP finds most like the query to the VLM (exactly one of
    ``threshold``, a cosine similarity in [-1, 1], or ``top_fraction`` in (0, 1]).

    ``embedder``: an ``engine.retrieval.ClipEmbedder`` (the retriever's:
    ``engine.retriever.embedder``); ``template``: the sentence the query goes into
    (:data:`engine.retrieval.ranking.TILE_QUERY_TEMPLATE` by default)."""

    embedder: Any
    threshold: float | None = None
    top_fraction: float | None = None
    template: str | None = None
    batch_size: int = 32

    def __post_init__(self) -> None:
        if (self.threshold is None) == (self.top_fraction is None):
            raise ValueError("the pre-filter needs exactly one of a similarity threshold "
                             "(--prefilter-threshold T) or a top fraction (--prefilter-top F)")
        if self.threshold is not None and not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"the pre-filter threshold is a cosine similarity in [-1, 1], "
                             f"got {self.threshold}")
        if self.top_fraction is not None and not 0.0 < self.top_fraction <= 1.0:
            raise ValueError(f"the pre-filter top fraction must be in (0, 1], e.g. 0.25 for "
                             f"the best quarter of the tiles; got {self.top_fraction}")
        if self.batch_size < 1:
            raise ValueError(f"the pre-filter batch size must be >= 1, got {self.batch_size}")
        if self.template is not None and "{query}" not in self.template:
            raise ValueError(f"the pre-filter template must contain {{query}}, got "
                             f"{self.template!r}; e.g. 'an aerial image with {{query}}s'")


@dataclass(frozen=True)
class PrefilterOutcome:
    """Which tiles of a plan the pre-filter kept (``PlannedTile.index``), every tile's
    similarity to the query, and a note when the filter kept nothing."""

    kept: frozenset[int]
    similarity: Mapping[int, float] = dataclasses.field(compare=False)
    skipped: int
    note: str | None = None
    stopped: bool = False  # should_stop ended the ranking: nothing was kept, nothing should run


def prefilter_tiles(raster: tiles.Raster, plan: tiles.TilePlan, query: str,
                    prefilter: TilePrefilter, *,
                    source: tiles.RasterSource | None = None,
                    gdal_cache_mb: int | None = None,
                    should_stop: Callable[[], bool] | None = None) -> PrefilterOutcome:
    """Embed every tile of ``plan`` with CLIP (read windowed, ``prefilter.batch_size`` at a
    time, GDAL's block cache capped as in :func:`scan_raster`) and keep those passing
    ``prefilter`` (ties broken by tile order). ``should_stop()`` is checked before each batch:
    True returns at once an outcome with ``stopped`` set that keeps nothing."""
    from engine.retrieval.ranking import TILE_QUERY_TEMPLATE, rank_images_for_text

    template = prefilter.template or TILE_QUERY_TEMPLATE
    similarity: dict[int, float] = {}
    for start in range(0, len(plan.tiles), prefilter.batch_size):
        if should_stop is not None and should_stop():
            return PrefilterOutcome(frozenset(), similarity, len(plan.tiles), "stopped while ranking",
                                    stopped=True)
        batch = plan.tiles[start:start + prefilter.batch_size]
        with tiles.gdal_cache_limit(gdal_cache_mb):
            images = [tiles.read_crop(raster, t.window, t.max_side, source=source).image
                      for t in batch]
        sims = rank_images_for_text(prefilter.embedder, images, query, template=template,
                                    batch_size=prefilter.batch_size)
        similarity.update((t.index, float(v)) for t, v in zip(batch, sims, strict=True))
    ranked = sorted(similarity, key=lambda i: (-similarity[i], i))
    note = None
    if prefilter.top_fraction is not None:
        keep = ranked[:max(1, math.ceil(prefilter.top_fraction * len(ranked)))] if ranked else []
    else:
        keep = [i for i in ranked if similarity[i] >= prefilter.threshold]
        if ranked and not keep:
            note = (f"no tile passed the pre-filter: the best of {len(ranked)} tiles has "
                    f"similarity {similarity[ranked[0]]:.3f} to {query!r}, under the threshold "
                    f"{prefilter.threshold}; nothing was scanned. Lower --prefilter-threshold, "
                    "use --prefilter-top F, or scan without the pre-filter")
            log.warning("%s: %s", raster.name, note)
    return PrefilterOutcome(frozenset(keep), similarity, len(ranked) - len(keep), note)


def merge_objects(
    raster: tiles.Raster,
    plan: tiles.TilePlan,
    detections: Sequence[tiles.TileDetections],
    *,
    region_px: BaseGeometry | None = None,
    method: str = "wbf",
) -> tuple[str, tuple[ScanObject, ...]]:
    """(coordinate space, objects best first) of tile ``detections`` (in plan order) merged
    across seams and overlaps, kept where they meet ``region_px``. What :func:`scan_raster`
    returns at its end; the app also calls it on the tiles done so far (boxes as they arrive)."""
    merged = _inside(tiles.merge_tiles(plan, detections, method=method), region_px)
    space, polygons = _result_polygons(raster, merged)
    return space, tuple(
        ScanObject(box.xyxy, polygon, box.score, str(box.label), box.n_merged, box.tiles)
        for box, polygon in zip(merged, polygons, strict=True)
    )


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


INTERRUPTED_MESSAGE = "interrupted: finished tiles are kept; rerun the same command to resume"


def write_and_report(out: Path, results: Sequence[ScanResult], errors: Sequence[str],
                     stderr: TextIO) -> int:
    """The end of a scan command: write the results (:func:`write_results`), say what was
    written and found on ``stderr``, and return the exit status (1 when a raster failed)."""
    for path in write_results(out, results):
        stderr.write(f"wrote {path}\n")
    for result in results:
        stderr.write(f"{result.summary()}\n")
    return 1 if errors else 0


# --- settings and the engine of a scan ------------------------------------------------------


@dataclass(frozen=True)
class ScanSettings:
    """A scan command's tiling and merging settings, shared by every raster and query."""

    queries: tuple[str, ...]
    tile_px: int | None = None
    gsd_m: float | None = None
    overlap: float = tiles.DEFAULT_OVERLAP
    method: str = "wbf"
    batch_size: int = 8
    prefilter_threshold: float | None = None  # CLIP pre-filter (see TilePrefilter)
    prefilter_top: float | None = None
    gdal_cache_mb: int | None = DEFAULT_GDAL_CACHE_MB  # GDAL block cache cap; 0/None: GDAL's

    def __post_init__(self) -> None:
        if not self.queries:
            raise ValueError("give at least one --find PHRASE, e.g. --find 'storage tank'")
        if self.prefilter_threshold is not None and self.prefilter_top is not None:
            raise ValueError("give --prefilter-threshold or --prefilter-top, not both")
        if self.prefilter_threshold is not None and not -1 <= self.prefilter_threshold <= 1:
            raise ValueError(f"--prefilter-threshold is a cosine similarity in [-1, 1], got "
                             f"{self.prefilter_threshold}")
        if self.prefilter_top is not None and not 0 < self.prefilter_top <= 1:
            raise ValueError(f"--prefilter-top is a fraction of the tiles in (0, 1], e.g. 0.25; "
                             f"got {self.prefilter_top}")
        if self.method not in tiles.MERGE_METHODS:
            raise ValueError(f"unknown merge method {self.method!r}; use one of "
                             f"{tiles.MERGE_METHODS}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.gdal_cache_mb is not None and self.gdal_cache_mb < 0:
            raise ValueError(f"--gdal-cache-mb is GDAL's block cache in MiB (0: GDAL's default, "
                             f"5 % of RAM), got {self.gdal_cache_mb}; e.g. --gdal-cache-mb 64")

    def tile_prefilter(self, embedder: Any) -> TilePrefilter | None:
        """The settings' CLIP pre-filter with ``embedder`` (None when they set none);
        ValueError when they set one and ``embedder`` is None."""
        if self.prefilter_threshold is None and self.prefilter_top is None:
            return None
        if embedder is None:
            raise ValueError("the CLIP pre-filter needs an embedder: pass --prefilter-clip DIR")
        return TilePrefilter(embedder, threshold=self.prefilter_threshold,
                             top_fraction=self.prefilter_top)


# --- where rasters come from and the pre-filter's CLIP ---------------------------------------


def is_network_location(path: str | Path) -> bool:
    """A URL (``https://...``, ``s3://...``) or a GDAL network path (``/vsicurl/...``)."""
    text = str(path)
    return "://" in text or text.startswith(_NETWORK_PREFIXES)


def open_policy_for(path: str | Path) -> tiles.OpenPolicy:
    """The policy a command-line raster is opened under, in-process and with ``--ray``: the
    network only for a raster the operator named as a URL or GDAL network path (trusted: the
    operator typed it), never for local files (a local VRT stays unable to fetch URLs)."""
    if is_network_location(path):
        return tiles.OpenPolicy(allow_network=True)
    return tiles.DEFAULT_POLICY


@dataclass(frozen=True)
class CommandRaster:
    """A raster the scan command names, opened: ``path`` as given, its catalog ``source``, the
    region in its pixels (None: the whole raster)."""

    path: str
    raster: tiles.Raster
    source: tiles.RasterSource
    region_px: BaseGeometry | None


@contextlib.contextmanager
def command_rasters(workspace: Path) -> Iterator[Callable[[str | Path, Any], CommandRaster]]:
    """Open the scan command's rasters as the command does, in-process and on the ``--ray``
    driver: yields ``open_raster(path, region_lonlat)``, which opens ``path`` trusted (the
    operator named it) in one of two catalogs under ``workspace`` (one with the network on, for
    URLs and GDAL network paths only: :func:`open_policy_for`) and puts ``region_lonlat`` in its
    pixels. The catalogs and their open handles close when the block ends. ``tiles`` errors
    propagate; :func:`report_raster_error` turns them into the command's messages."""
    with tiles.Catalog(workspace) as local, \
            tiles.Catalog(workspace, policy=open_policy_for("https://")) as network:

        def open_raster(path: str | Path, region_lonlat: Any = None) -> CommandRaster:
            catalog = network if open_policy_for(path).allow_network else local
            raster_id = catalog.open(str(path), trusted=True)
            raster = catalog.get(raster_id)
            region = (None if region_lonlat is None
                      else region_px_from_lonlat(raster, region_lonlat))
            return CommandRaster(str(path), raster, catalog.source(raster_id), region)

        yield open_raster


def report_raster_error(path: str | Path, exc: tiles.TilesError, errors: list[str],
                        stream: TextIO) -> None:
    """What the scan command says when ``path`` cannot be scanned: a region that misses it is a
    note (the raster is skipped, not an error); any other ``tiles`` error is appended to
    ``errors`` (the command's exit status 1) with what the command offers where the message
    names the app's network flag."""
    if isinstance(exc, tiles.RegionOutsideError):
        stream.write(f"{path}: skipped, the region does not meet it ({exc})\n")
        return
    text = str(exc)
    if "--allow-network-rasters" in text:
        text += (" (python -m app.scan has no such flag: it reads a raster over the network "
                 "only when the command line names it as a URL or /vsicurl/ path; a local "
                 "file, a VRT included, never fetches URLs)")
    errors.append(f"{path}: {text}")
    stream.write(f"error: {errors[-1]}\n")


def load_prefilter_clip(clip_dir: str | Path | None, model: str | None) -> Any:
    """The pre-filter's CLIP without loading the VLM (the ``--ray`` driver): ``clip_dir``
    (--prefilter-clip DIR), else the demo model's CLIP when ``model`` is None (the demo). A
    ValueError says what to pass otherwise."""
    from engine.errors import EngineError
    from engine.retrieval import ClipEmbedder

    if clip_dir is None:
        from app.demo import demo_manifest
        from engine.demo.manifest import read_demo_manifest

        manifest = demo_manifest() if model is None else None
        clip_dir = read_demo_manifest(manifest).embedder_dir if manifest else None
        if clip_dir is None:
            raise ValueError("the CLIP pre-filter needs a CLIP: name an embedder directory with "
                             "--prefilter-clip DIR (e.g. assets/demo/clip); only the demo "
                             "model's CLIP is found without it")
        flag = f"the demo model's CLIP {str(clip_dir)!r}"
    else:
        flag = f"--prefilter-clip {clip_dir}"
    try:
        return ClipEmbedder.load(Path(clip_dir).expanduser())
    except EngineError as exc:
        raise ValueError(f"{flag}: {exc}") from exc


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


