"""Whole-scene search on a Ray cluster: ``python -m app.scan RASTER... --find PHRASE --ray [ADDRESS]``.

The driver (the machine running the command) opens every raster, plans its tiles
(:func:`app.scanning.plan_scan`, empty tiles skipped) and reads the JSONL checkpoints exactly as the
in-process command does; only the tiles not finished yet are handed to Ray. They become a Ray
Data dataset of ``(job, tile)`` rows (a job is one raster x one query) that ``map_batches``
sends through an actor pool of :class:`TileWorker` actors: each actor loads **one** engine
(from the same ``--model/--backbone/--adapter/--device`` as the command; one GPU per actor when
the cluster has GPUs, else CPU actors), opens each raster itself and runs its batch of tiles
through :func:`app.scanning.scan_raster` on a plan holding only those tiles. Workers read their own
pixels (windowed reads of the raster's path, so every node needs the same path: a shared
filesystem, or a COG URL read through GDAL's ``/vsicurl/``) and send back only the tiles' boxes in
raster pixels, as checkpoint lines. The driver appends each finished tile to the checkpoint,
then merges with :func:`app.scanning.scan_raster` over the finished tiles (no tile is run again:
the same ``tiles.merge_tiles`` code and order as in-process) and writes the same GeoPackage and
GeoJSON. A rerun resumes either way: in-process and Ray runs share checkpoints.

CLIP pre-filter (``--prefilter-threshold``/``--prefilter-top``): the driver loads only the CLIP
embedder (``--prefilter-clip DIR``, else the demo model's CLIP; never the VLM), ranks every
planned tile with :func:`app.scanning.prefilter_tiles` and hands only the kept tiles to the actors;
the final merge gets the same :class:`app.scanning.PrefilterOutcome`, so ``prefiltered`` and
``prefilter_note`` are those of the in-process scan.

Network rasters: a raster named on the command line as a URL (``https://.../scene.tif``) or a
GDAL network path (``/vsicurl/...``, ``/vsis3/...``) is opened with
``OpenPolicy(allow_network=True)``, trusted (the operator named it); local rasters keep the
network off, so a local VRT cannot fetch URLs. The policy travels with the :class:`tiles.Raster`
to the workers.

Ray is imported only here, and this module only when ``--ray`` is given: the default scan needs
no Ray at run time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

import tiles
from app.scanning import (
    DEFAULT_GDAL_CACHE_MB,
    DEFAULT_SCAN_TILE_PX,
    GroundingEngine,
    PrefilterOutcome,
    ScanResult,
    ScanSettings,
    TileCheckpoint,
    command_rasters,
    is_network_location,
    load_prefilter_clip,
    open_policy_for,
    plan_scan,
    prefilter_tiles,
    report_raster_error,
    scan_raster,
)

__all__ = [
    "RAY_REQUIREMENT",
    "EngineRecipe",
    "ScanRayError",
    "TileWorker",
    "import_ray",
    "init_ray",
    "is_network_location",
    "main_ray",
    "open_policy_for",
    "scan_files_ray",
]

log = logging.getLogger(__name__)

RAY_REQUIREMENT = "ray[data]==2.60.0"  # the pin in requirements.txt
REPO_ROOT = Path(__file__).resolve().parent.parent
# Environment the workers need as the driver has it (offline hubs, our own settings).
_PASS_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "GDAL_CACHEMAX")


class ScanRayError(RuntimeError):
    """The Ray scan could not start (``status`` 2) or a worker failed (``status`` 1); the
    message says what to do."""

    def __init__(self, message: str, *, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def import_ray() -> Any:
    """``import ray`` (with Ray Data), or ScanRayError saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ScanRayError(
            f"--ray needs Ray with Ray Data, which is not installed here ({exc}); install it "
            f"with `pip install '{RAY_REQUIREMENT}'` on the driver and on every worker node, "
            "or scan without --ray (in-process).") from exc
    return ray


def init_ray(address: str | None = None, **init_kwargs: Any) -> bool:
    """Connect to the Ray cluster at ``address`` ("HOST:6379", "auto"; None or "": the cluster
    this machine belongs to, else a new local one) unless this process is connected already.
    Workers get this checkout on their ``PYTHONPATH`` (every node needs the project at the same
    path) and the driver's offline-hub settings. Returns True when it connected (the caller
    shuts Ray down), False when Ray was running in this process already."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    env = {"PYTHONPATH": os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.update({k: os.environ[k] for k in _PASS_ENV if k in os.environ})
    try:
        ray.init(address=address or None, runtime_env={"env_vars": env},
                 logging_level=logging.WARNING, include_dashboard=False, **init_kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ScanRayError(
            f"cannot connect to the Ray cluster at {address or '(local)'!r}: {exc}. Start the "
            "head node with `ray start --head` and pass its HOST:6379 (run the command on a "
            "node of the cluster), or give --ray without an address for a local Ray.") from exc
    return True


@dataclass(frozen=True)
class EngineRecipe:
    """How every actor loads its engine: the command's model flags (picklable, small)."""

    model: str | None = None  # None: the shipped demo model
    backbone: str = "paper"
    adapter: str | None = None
    device: str = "auto"
    max_answer_tokens: int | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EngineRecipe:
        return cls(model=args.model, backbone=args.backbone, adapter=args.adapter,
                   device=args.device, max_answer_tokens=args.max_answer_tokens)

    def load(self) -> GroundingEngine:
        """The engine, loaded as ``python -m app.scan`` loads it (:func:`app.scanning.load_scan_engine`)."""
        from app.scanning import load_scan_engine

        engine, _ = load_scan_engine(argparse.Namespace(**dataclasses.asdict(self)))
        return engine

    def model_key(self) -> str:
        """The checkpoint model key :func:`app.scanning.load_scan_engine` gives this model (so that
        in-process and Ray runs share checkpoints), without loading it."""
        from app.demo import demo_manifest

        manifest = demo_manifest() if self.model is None else None
        model = str(manifest) if manifest else self.model
        adapter = Path(self.adapter).expanduser() if self.adapter else None
        return f"{self.backbone}:{model}:{adapter}:{self.max_answer_tokens}"

    @property
    def wants_gpu(self) -> bool:
        return self.device in ("auto", "cuda")


@dataclass(frozen=True)
class ScanJob:
    """One raster x one query: what a worker needs to read and run its tiles."""

    raster: tiles.Raster  # carries its OpenPolicy (network on only for URLs named by the operator)
    plan: tiles.TilePlan
    query: str


class TileWorker:
    """A Ray Data actor: one engine, loaded once; reads its tiles itself and returns their
    detections (raster pixels) as checkpoint lines, one output row per tile run."""

    def __init__(self, recipe: EngineRecipe, jobs: dict[int, ScanJob], batch_size: int,
                 gdal_cache_mb: int | None = DEFAULT_GDAL_CACHE_MB) -> None:
        logging.basicConfig(level=logging.WARNING)
        self.engine = recipe.load()
        self.jobs = jobs
        self.batch_size = batch_size
        self.gdal_cache_mb = gdal_cache_mb
        self._sources: dict[int, tiles.RasterSource] = {}

    def _source(self, job_id: int) -> tiles.RasterSource:
        if job_id not in self._sources:
            raster = self.jobs[job_id].raster
            self._sources[job_id] = tiles.RasterSource(
                raster.file_to_read, rotated=raster.is_rotated, policy=raster.policy,
                trusted=raster.trusted)
        return self._sources[job_id]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out_job: list[int] = []
        out_tile: list[int] = []
        out_line: list[str] = []
        out_error: list[str] = []
        job_ids = np.asarray(batch["job"])
        tile_ids = np.asarray(batch["tile"])
        for job_id in dict.fromkeys(job_ids.tolist()):
            job = self.jobs[job_id]
            sub = dataclasses.replace(job.plan, tiles=tuple(
                job.plan.tiles[i] for i in tile_ids[job_ids == job_id].tolist()))
            found: list[tiles.TileDetections] = []
            try:
                scan_raster(job.raster, self.engine, job.query, source=self._source(job_id),
                            plan=sub, batch_size=self.batch_size, progress=found.append,
                            gdal_cache_mb=self.gdal_cache_mb)
            except tiles.TilesError as exc:  # this raster, not the worker: report, go on
                out_job.append(job_id)
                out_tile.append(-1)
                out_line.append("")
                out_error.append(str(exc))
            for d in found:
                out_job.append(job_id)
                out_tile.append(d.tile.index)
                out_line.append(checkpoint_line(d))
                out_error.append("")
        return {"job": np.asarray(out_job, "int64"), "tile": np.asarray(out_tile, "int64"),
                "line": np.asarray(out_line, dtype=object),
                "error": np.asarray(out_error, dtype=object)}


def checkpoint_line(found: tiles.TileDetections) -> str:
    """One tile's detections as a :class:`app.scanning.TileCheckpoint` line (JSON floats are
    exact: the driver gets the worker's float64 boxes bit for bit)."""
    return json.dumps({"tile": found.tile.index, "boxes_px": found.boxes_px.tolist(),
                       "scores": found.scores.tolist(),
                       "labels": [str(x) for x in found.labels]})


def detections_from_line(plan: tiles.TilePlan, line: str) -> tiles.TileDetections:
    row = json.loads(line)
    return tiles.TileDetections(
        plan.tiles[int(row["tile"])], np.asarray(row["boxes_px"], "float64").reshape(-1, 4),
        np.asarray(row["scores"], "float64").reshape(-1), tuple(row["labels"]))


class _MergeOnly:
    """The engine the driver passes to :func:`app.scanning.scan_raster` for the final merge: every
    tile is done by then, so no tile may reach it."""

    batch_limit = None  # the workers' engines adapt their own batches

    def run(self, image: np.ndarray, task: Any, question: str | None = None) -> Any:
        raise RuntimeError("bug: the Ray driver asked for a tile that its workers had not run")

    def run_batch(self, images: Sequence[np.ndarray], task: Any,
                  question: str | None = None) -> list[Any]:
        raise RuntimeError("bug: the Ray driver asked for tiles that its workers had not run")


def resolve_tile_px(settings: ScanSettings, recipe: EngineRecipe) -> int:
    """The tile side without loading the model on the driver: ``--tile-px``; else, as
    :func:`app.scanning.engine_input_px`, the ``paper`` backbone's native input (``image_size`` of
    its ``vision/config.json``); else 512 (dynamic-resolution models)."""
    if settings.tile_px is not None:
        return settings.tile_px
    if recipe.backbone != "paper":
        return DEFAULT_SCAN_TILE_PX
    if recipe.model is None:
        from app.demo import demo_manifest
        from engine.demo.manifest import read_demo_manifest

        manifest = demo_manifest()
        if manifest is None:
            raise ScanRayError("no model: name one with --model PATH (the demo model is not "
                               "built; `python assets/build_demo.py` builds it)")
        model_dir = Path(read_demo_manifest(manifest).model_dir)
    else:
        model_dir = Path(recipe.model).expanduser()
    config_path = model_dir / "vision" / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ScanRayError(
            f"cannot read the paper model's input size from {str(config_path)!r} ({exc}); "
            "check --model, or give the tile side with --tile-px N") from exc
    size = config.get("image_size") or config.get("vision_config", {}).get("image_size")
    if not isinstance(size, int) or size < 8:
        raise ScanRayError(f"{str(config_path)!r} has no usable image_size ({size!r}); give the "
                           "tile side with --tile-px N")
    return size


def _pool_options(ray: Any, recipe: EngineRecipe, actors: int | None,
                  n_rows: int) -> tuple[int, dict[str, float]]:
    """(actor count, per-actor resources): one GPU per actor when the cluster has GPUs and the
    device allows it, else one CPU per actor; by default as many actors as GPUs (or CPUs)."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if recipe.device == "cuda" and not gpus:
        raise ScanRayError("--device cuda, but the Ray cluster reports no GPU; start the "
                           "workers on GPU nodes (`ray start --address ... --num-gpus N`) or "
                           "use --device auto/cpu")
    if gpus and recipe.wants_gpu:
        size, per_actor = gpus, {"num_gpus": 1}
    else:
        size, per_actor = max(1, int(resources.get("CPU", 1))), {"num_cpus": 1}
    if actors is not None:
        size = actors
    return max(1, min(size, n_rows)), per_actor


def scan_files_ray(
    paths: Sequence[str | Path], recipe: EngineRecipe, settings: ScanSettings, out: Path, *,
    address: str | None = None, actors: int | None = None, region_lonlat: Any = None,
    show_progress: bool = True, stderr: TextIO | None = None, prefilter_embedder: Any = None,
) -> tuple[list[ScanResult], list[str]]:
    """:func:`app.scan.scan_files` on a Ray cluster: same plans, checkpoints (under
    ``<out>.progress/``), results and per-raster error messages; tiles run on ``actors`` Ray
    actors (default: one per GPU, else per CPU of the cluster). ``prefilter_embedder``: the
    CLIP of ``settings``' pre-filter (needed when it sets one); it ranks the tiles here, on the
    driver, and only the kept tiles go to the actors."""
    stderr = stderr or sys.stderr
    prefilter = settings.tile_prefilter(prefilter_embedder)
    ray = import_ray()
    progress_dir = out.with_name(out.name + ".progress")
    model_key = recipe.model_key()
    tile_px = resolve_tile_px(settings, recipe)
    errors: list[str] = []
    jobs: dict[int, ScanJob] = {}
    places: dict[int, tuple[tiles.RasterSource, Any]] = {}  # job -> (driver source, region)
    checkpoints: dict[int, TileCheckpoint] = {}
    done: dict[int, dict[int, tiles.TileDetections]] = {}
    kept: dict[int, PrefilterOutcome] = {}  # job -> the pre-filter's outcome (with one)
    failed: set[str] = set()
    job_path: dict[int, str] = {}
    started = False
    with command_rasters(progress_dir / "workspace") as open_raster:
        try:
            for raw in paths:
                path = str(raw)  # as given: a URL must not go through pathlib (it folds "//")
                try:
                    named = open_raster(raw, region_lonlat)
                    raster, source, region = named.raster, named.source, named.region_px
                    plan = plan_scan(raster, None, source=source, region_px=region,
                                     tile_px=tile_px, gsd_m=settings.gsd_m,
                                     overlap=settings.overlap)
                    outcomes = {query: prefilter_tiles(raster, plan, query, prefilter,
                                                       source=source,
                                                       gdal_cache_mb=settings.gdal_cache_mb)
                                for query in settings.queries} if prefilter is not None else {}
                except tiles.TilesError as exc:
                    report_raster_error(path, exc, errors, stderr)
                    continue
                for query in settings.queries:
                    job_id = len(jobs)
                    jobs[job_id] = ScanJob(raster, plan, query)
                    places[job_id] = (source, region)
                    job_path[job_id] = path
                    key = TileCheckpoint.key(raster, query, model_key, plan)
                    checkpoints[job_id] = TileCheckpoint(progress_dir / f"{key}.jsonl", plan)
                    done[job_id] = checkpoints[job_id].read()
                    if query in outcomes:  # only the tiles the pre-filter kept run and merge
                        kept[job_id] = outcomes[query]
                        done[job_id] = {i: d for i, d in done[job_id].items()
                                        if i in outcomes[query].kept}
            rows = [{"job": j, "tile": t.index} for j, job in jobs.items()
                    for t in job.plan.tiles
                    if t.index not in done[j] and (j not in kept or t.index in kept[j].kept)]
            total = sum(len(kept[j].kept) if j in kept else len(job.plan.tiles)
                        for j, job in jobs.items())
            bar = _progress_bar(total, total - len(rows), show_progress, stderr)
            try:
                if rows:
                    started = init_ray(address)
                    for job_id, found, error in _run_on_ray(ray, recipe, jobs, rows, settings,
                                                            actors):
                        if error:
                            path = job_path[job_id]
                            if path not in failed:
                                failed.add(path)
                                errors.append(f"{path}: {error}")
                                stderr.write(f"error: {path}: {error}\n")
                            continue
                        checkpoints[job_id].append(found)
                        done[job_id][found.tile.index] = found
                        bar.update(1)
            finally:
                bar.close()
                for checkpoint in checkpoints.values():
                    checkpoint.close()
            results = []
            for job_id, job in jobs.items():
                if job_path[job_id] in failed:
                    continue
                source, region = places[job_id]
                results.append(scan_raster(
                    job.raster, _MergeOnly(), job.query, source=source, region_px=region,
                    method=settings.method, batch_size=settings.batch_size,
                    done_tiles=done[job_id], plan=job.plan, prefilter=kept.get(job_id),
                    gdal_cache_mb=settings.gdal_cache_mb))
            return results, errors
        finally:
            if started:
                ray.shutdown()


def _run_on_ray(ray: Any, recipe: EngineRecipe, jobs: dict[int, ScanJob], rows: list[dict],
                settings: ScanSettings, actors: int | None):
    """Yield (job id, TileDetections or None, error text) as the actors finish tiles."""
    from ray.data import ActorPoolStrategy, DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False  # ours is the tqdm bar
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-dataset INFO lines
    context.enable_operator_progress_bars = False
    size, per_actor = _pool_options(ray, recipe, actors, len(rows))
    # Several blocks per actor, so that every actor gets tiles to read and run.
    blocks = max(1, min(len(rows), size * 4, -(-len(rows) // settings.batch_size)))
    dataset = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
        TileWorker, fn_constructor_kwargs={"recipe": recipe, "jobs": jobs,
                                           "batch_size": settings.batch_size,
                                           "gdal_cache_mb": settings.gdal_cache_mb},
        batch_size=settings.batch_size, batch_format="numpy",
        compute=ActorPoolStrategy(size=size), **per_actor)
    log.info("Ray scan: %d tiles on %d actors (%s each)", len(rows), size, per_actor)
    try:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for job_id, tile, line, error in zip(batch["job"].tolist(), batch["tile"].tolist(),
                                                 batch["line"].tolist(), batch["error"].tolist(),
                                                 strict=True):
                if error:
                    yield job_id, None, error
                else:
                    yield job_id, detections_from_line(jobs[job_id].plan, line), ""
    except ray.exceptions.RayError as exc:
        raise ScanRayError(
            f"a Ray worker failed ({type(exc).__name__}: {_first_line(exc)}); the tiles "
            "finished so far are kept: rerun the same command to resume", status=1) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


def _progress_bar(total: int, initial: int, show: bool, stream: TextIO) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="tiles (Ray)", unit="tile",
                disable=not show, file=stream, dynamic_ncols=True)


def main_ray(args: argparse.Namespace, settings: ScanSettings, region_lonlat: Any, *,
             engine: GroundingEngine | None = None) -> int:
    """``python -m app.scan ... --ray [ADDRESS]`` after the common argument checks; the same
    exit statuses and outputs as the in-process command."""
    from app.scanning import INTERRUPTED_MESSAGE, write_and_report

    if args.ray_actors is not None and args.ray_actors < 1:
        sys.stderr.write(f"error: --ray-actors must be at least 1, got {args.ray_actors}\n")
        return 2
    if engine is not None:
        sys.stderr.write("error: --ray loads the model on every worker from --model/--backbone/"
                         "--adapter/--device; an engine object cannot be handed to it (scan "
                         "without --ray)\n")
        return 2
    out = Path(args.out).expanduser()
    paths = [p if is_network_location(p) else Path(p).expanduser() for p in args.rasters]
    embedder = None
    if settings.prefilter_threshold is not None or settings.prefilter_top is not None:
        try:  # the CLIP only: the driver never loads the VLM
            embedder = load_prefilter_clip(args.prefilter_clip, args.model)
        except (ValueError, OSError) as exc:
            sys.stderr.write(f"error: {exc}\n")
            return 2
    try:
        results, errors = scan_files_ray(paths, EngineRecipe.from_args(args), settings, out,
                                         address=args.ray or None, actors=args.ray_actors,
                                         region_lonlat=region_lonlat,
                                         show_progress=not args.quiet,
                                         prefilter_embedder=embedder)
    except ScanRayError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.status
    except KeyboardInterrupt:
        sys.stderr.write(f"{INTERRUPTED_MESSAGE}\n")
        return 130
    return write_and_report(out, results, errors, sys.stderr)
