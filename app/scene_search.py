"""Whole-scene search in the app: "Find objects" and counting questions on regions larger than
one model input run tile by tile through :func:`app.scanning.scan_raster`.

The rule (documented in the README, "Search a whole scene"): a request is searched tile by tile
when

* it is **Find objects** (``Task.GROUND``), or an **Ask** that is a counting question ("How many
  storage tanks are there?", "What is the number of buildings?", "Count the ships"), and
* its window (the drawn rectangle/polygon/point square, or the whole raster when nothing is
  drawn) does not fit one model input: at the model's ground resolution the window is wider or
  taller than the model's input side (by more than 5 %: a clicked point's ground square of one
  input, rounded out to whole pixels on the raster's grid, is a few pixels over and stays one
  crop).

The model's input side is :func:`app.scanning.engine_input_px` (fixed-resolution encoders: 128 px for
the demo model) or, for dynamic-resolution and remote models, the app's largest crop
(``--max-crop-px``, 1024 by default): what one question sends today. The ground resolution is the
raster's own, or, for the demo model, the one it was trained at (``recommended_region_m`` in
``assets/demo/demo.json`` over its input side: 64 m / 128 px = 0.5 m) when the raster is finer.
Everything else (other tasks, other questions, regions that fit) is asked as one crop, exactly as
before.

A search streams :class:`ScanUpdate` values (tiles done/total, the objects merged so far, the
time left) while :func:`app.scanning.scan_raster` runs in a worker thread; the caller's
``should_stop`` is polled before each batch of tiles, and stopping keeps what was found. The
result is one :class:`app.results.ResultRecord` (:func:`build_scan_record`): the region, one box
per object (label, score, the tiles that saw it) and ``scan`` (query, count, tiles).

"Search the most likely tiles" (``AskRequest.search_top``): a search may run only the most likely share of
its tiles, those the retriever's CLIP finds most like the query (:class:`app.scanning.TilePrefilter`,
the ``--prefilter-top`` of ``python -m app.scan``). The worker ranks every tile first (a phase of
its own in the progress; Stop is polled between CLIP batches too), then runs the kept tiles;
answer, record and progress count the tiles run and say how many the pre-filter left out. A
model without a retriever (no CLIP) cannot do it and says so.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.asking import DEMO_REAL_NOTE, AskRequest, _region_geometry, drawn_window
from app.errors import UserInputError
from app.results import ResultBox, ResultRecord
from engine.types import Task

if TYPE_CHECKING:
    from rasterio.windows import Window
    from shapely.geometry.base import BaseGeometry

    from app.scanning import ScanObject, ScanResult
    from tiles import Raster, RasterSource, TilePlan

__all__ = [
    "FIT_TOLERANCE",
    "SEARCH_TILE_CHOICES",
    "ScanUpdate",
    "SceneSearch",
    "build_scan_record",
    "count_target",
    "pending_features",
    "plural_noun",
    "scan_answer",
    "scan_interim_answer",
    "scan_progress_text",
    "scene_search_for",
    "singular_noun",
    "stream_scene_search",
]

_COUNT_PATTERNS = (
    # "How many storage tanks are there?", "how many buildings in this district"
    re.compile(r"^\s*how\s+many\s+(?P<what>.+?)"
               r"(?:\s+(?:are|is|can|could|do|does|did|were|have|has|there|in|on|inside|within|"
               r"visible|appear|exist|at|across|here)\b.*)?[\s?.!]*$", re.IGNORECASE),
    # "What is the number of storage tanks?", "the number of buildings in the region"
    re.compile(r"^\s*(?:what\s+is\s+|what's\s+|give\s+(?:me\s+)?)?the\s+number\s+of\s+(?P<what>.+?)"
               r"(?:\s+(?:are|is|in|on|inside|within|visible|there|here)\b.*)?[\s?.!]*$",
               re.IGNORECASE),
    # "Count the ships", "count all storage tanks in the region"
    re.compile(r"^\s*count\s+(?:the\s+|all\s+(?:the\s+)?)?(?P<what>.+?)"
               r"(?:\s+(?:in|on|inside|within|visible|there|here)\b.*)?[\s?.!]*$", re.IGNORECASE),
)
FIT_TOLERANCE = 1.05  # a window up to 5 % over one model input is still read as one crop
_LEADING = re.compile(r"^(?:the|a|an|all|any|of)\s+", re.IGNORECASE)


def count_target(question: str | None) -> str | None:
    """The object phrase of a counting question, singular, for the ground task ("How many
    storage tanks are there?" -> "storage tank"); None when ``question`` does not ask to count."""
    text = " ".join((question or "").split())
    for pattern in _COUNT_PATTERNS:
        match = pattern.match(text)
        if match:
            what = _LEADING.sub("", match.group("what").strip(" ?.!,"))
            return singular_noun(what) if what else None
    return None


def singular_noun(phrase: str) -> str:
    """``storage tanks`` -> ``storage tank``, ``ferries`` -> ``ferry``, ``boxes`` -> ``box``
    (the last word only; English regular plurals)."""
    head, _, last = phrase.strip().rpartition(" ")
    low = last.lower()
    if low.endswith("ies") and len(low) > 4:
        last = last[:-3] + "y"
    elif low.endswith(("ches", "shes", "sses", "xes", "zes")):
        last = last[:-2]
    elif low.endswith("s") and not low.endswith(("ss", "us", "is")):
        last = last[:-1]
    return f"{head} {last}".strip()


def plural_noun(phrase: str) -> str:
    """``storage tank`` -> ``storage tanks``, ``ferry`` -> ``ferries``; a plural stays plural."""
    phrase = phrase.strip()
    if singular_noun(phrase) != phrase:
        return phrase  # already plural
    low = phrase.lower()
    if low.endswith("y") and len(low) > 1 and low[-2] not in "aeiou":
        return phrase[:-1] + "ies"
    if low.endswith(("s", "x", "z", "ch", "sh")):
        return phrase + "es"
    return phrase + "s"


def _count_words(n: int, noun: str) -> str:
    """``1 storage tank``, ``37 storage tanks``, ``no storage tank``."""
    if n == 0:
        return f"no {singular_noun(noun)}"
    return f"{n} {singular_noun(noun) if n == 1 else plural_noun(noun)}"


# The app's search-tiles menu (under the question): the share of a search's tiles that runs, those CLIP ranks most
# like the query (None: every tile). On the demo scene, for storage tanks, a half was 1.6x faster
# and its tiles held every tank a tile can hold, a quarter 3x faster holding two thirds of them;
# for buildings the demo CLIP ranks tiles badly and most are lost (docs/BENCHMARKS.md). How much
# a real scene loses depends on how well the CLIP knows the object.
SEARCH_TILE_CHOICES: dict[str, float | None] = {
    "Large regions: search every tile": None,
    "Large regions: search the most likely half of the tiles (CLIP)": 0.5,
    "Large regions: search the most likely quarter of the tiles (CLIP)": 0.25,
    "Large regions: search the most likely tenth of the tiles (CLIP)": 0.1,
}


@dataclass(frozen=True)
class SceneSearch:
    """How one request is searched tile by tile: the ground ``query``, the raster ``window``
    and ``region_px`` (the drawn shape in raster pixels; None: the whole raster), tiles of
    ``tile_px`` model pixels at ``gsd_m`` metres per model pixel (None: native);
    ``prefilter_top``: the share of tiles CLIP ranks most like the query that run (None: all)."""

    query: str
    window: Window
    region_px: BaseGeometry | None
    tile_px: int
    gsd_m: float | None
    prefilter_top: float | None = None


def _model_input_px(engine: object, max_crop_px: int) -> int:
    from app.scanning import engine_input_px

    return engine_input_px(engine) or int(max_crop_px)


def _region_px(raster: Raster, request: AskRequest, point_size_m: float,
               point_size_px: float) -> BaseGeometry | None:
    """The drawn shape in raster pixels (a point: the square it stands for)."""
    import shapely
    from shapely.geometry import shape

    from app.scanning import region_px_from_lonlat
    from tiles import point_square

    region = request.region
    if region is None:
        return None
    space = "pixel" if region.space == "pixel" else "EPSG:4326"
    if region.shape == "point":
        x, y = region.geometry["coordinates"][:2]
        geom = point_square(x, y, space, point_size_m=point_size_m, point_size_px=point_size_px)
    else:
        geom = shape(region.geometry)
    if region.space == "pixel":
        return shapely.make_valid(geom)
    return region_px_from_lonlat(raster, geom)


def scene_search_for(raster: Raster, request: AskRequest, engine: object, *, max_crop_px: int,
                     point_size_m: float, point_size_px: float,
                     recommended_region_m: float | None = None) -> SceneSearch | None:
    """The whole-scene search for ``request``, or None when it is asked as one crop (see the
    module's rule). ``recommended_region_m``: the ground side of the model's input it was
    trained on (the demo model's ``recommended_region_m``), None for others."""
    if request.task is Task.GROUND:
        query = " ".join((request.question or "").split())
    elif request.task is Task.ASK:
        query = count_target(request.question) or ""
    else:
        return None
    if not query:
        return None
    from tiles import full_window, ground_resolution_m

    window = (drawn_window(raster, request.region, point_size_m=point_size_m,
                           point_size_px=point_size_px)
              if request.region is not None else full_window(raster))
    tile_px = _model_input_px(engine, max_crop_px)
    gsd_m, decimation = None, 1.0
    if recommended_region_m and raster.georeferenced:
        native = max(ground_resolution_m(raster, window))
        trained = recommended_region_m / tile_px
        if trained > native * (1 + 1e-6):  # the raster is finer than the model knows: decimate
            gsd_m, decimation = trained, trained / native
    fits = all(side / decimation <= tile_px * FIT_TOLERANCE
               for side in (float(window.width), float(window.height)))
    if fits:
        return None
    region_px = _region_px(raster, request, point_size_m, point_size_px)
    return SceneSearch(query=query, window=window, region_px=region_px, tile_px=tile_px,
                       gsd_m=gsd_m, prefilter_top=request.search_top)


@dataclass(frozen=True)
class ScanUpdate:
    """One streamed state of a search: ``tiles_done`` of ``tiles_total`` tiles to run, the
    objects merged so far (``coordinate_space`` "lonlat" or "pixel"), ``seconds_left`` (None
    until a tile is done), and on the last update the :class:`app.scanning.ScanResult`.
    ``ranking``: the CLIP pre-filter is ranking the plan's ``tiles_total`` tiles (nothing ran
    yet); ``prefiltered``: the tiles it then left out (not counted in ``tiles_total``)."""

    query: str
    tiles_done: int
    tiles_total: int
    objects: tuple[ScanObject, ...]
    coordinate_space: str
    seconds_left: float | None = None
    result: ScanResult | None = None
    ranking: bool = False
    prefiltered: int = 0

    @property
    def count(self) -> int:
        return len(self.objects)


def stream_scene_search(engine: object, raster: Raster, search: SceneSearch, *,
                        source: RasterSource | None = None,
                        should_stop: Callable[[], bool] | None = None,
                        poll_s: float = 0.2, merge_every_s: float = 1.0) -> Iterator[ScanUpdate]:
    """Run :func:`app.scanning.scan_raster` for ``search`` in a worker thread and yield a
    :class:`ScanUpdate` once the tiles are planned and after every batch of tiles; the last
    update carries the result. The objects so far are merged again at most every
    ``merge_every_s`` seconds (placing them in lon/lat costs about 1 ms per object, taken from
    the CPU the model runs on), so an update's ``objects`` may lag its ``tiles_done`` by that
    long. ``should_stop`` is polled (from the worker) before each batch:
    True ends the search keeping what was found. Closing the generator stops the worker and
    waits for its batch to end, so the engine is free when this returns. With
    ``search.prefilter_top`` the worker first ranks the tiles with the engine's retriever CLIP
    (one ``ranking`` update) and runs only the kept ones; an engine without one raises
    UserInputError before any work."""
    import shapely

    from app.scanning import merge_objects, plan_scan, prefilter_tiles, scan_raster

    prefilter = _tile_prefilter(engine, search)

    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    closed = threading.Event()

    def stopper() -> bool:
        return closed.is_set() or (should_stop is not None and bool(should_stop()))

    # The worker gets its own copy of the region: GEOS geometries carry lazily built state
    # (a prepared index) that two threads must not build at once, and both threads merge.
    worker_region_px = (None if search.region_px is None
                        else shapely.from_wkb(shapely.to_wkb(search.region_px)))

    def work() -> None:
        try:
            plan = plan_scan(raster, engine, source=source, region_px=worker_region_px,
                             tile_px=search.tile_px, gsd_m=search.gsd_m)
            events.put(("plan", plan))
            kept = None
            if prefilter is not None:
                kept = prefilter_tiles(raster, plan, search.query, prefilter, source=source,
                                       should_stop=stopper)
                if kept.stopped:  # Stop while ranking: the scan below stops before any tile
                    kept = None
                events.put(("kept", kept))
            result = scan_raster(raster, engine, search.query, source=source,
                                 region_px=worker_region_px, plan=plan, should_stop=stopper,
                                 progress=lambda found: events.put(("tile", found)),
                                 prefilter=kept)
            events.put(("done", result))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            events.put(("error", exc))

    worker = threading.Thread(target=work, name="geolens-scene-search", daemon=True)
    worker.start()
    plan: TilePlan | None = None
    prefiltered: int | None = None if prefilter is not None else 0  # None: still ranking
    found: dict[int, Any] = {}
    started = time.monotonic()
    space = "lonlat" if raster.georeferenced else "pixel"
    objects: tuple[ScanObject, ...] = ()
    merged_at, merged_tiles = -merge_every_s, 0
    try:
        while True:
            try:
                batch = [events.get(timeout=poll_s)]
            except queue.Empty:
                continue
            while True:  # the tiles of one batch arrive together: report them once
                try:
                    batch.append(events.get_nowait())
                except queue.Empty:
                    break
            for kind, payload in batch:
                if kind == "error":
                    raise payload
                if kind == "plan":
                    plan, started = payload, time.monotonic()
                elif kind == "kept":
                    prefiltered = payload.skipped if payload is not None else 0
                    started = time.monotonic()
                elif kind == "tile":
                    found[payload.tile.index] = payload
                elif kind == "done":
                    result: ScanResult = payload
                    yield ScanUpdate(search.query, result.tiles_done,
                                     result.tiles_total - result.prefiltered, result.objects,
                                     result.coordinate_space, 0.0, result,
                                     prefiltered=result.prefiltered)
                    return
            if plan is None:
                continue
            if prefiltered is None:  # CLIP is ranking the tiles: nothing runs yet
                yield ScanUpdate(search.query, 0, len(plan.tiles), (), space, None, ranking=True)
                continue
            if len(found) > merged_tiles and time.monotonic() - merged_at >= merge_every_s:
                detections = [found[t.index] for t in plan.tiles if t.index in found]
                space, objects = merge_objects(raster, plan, detections, region_px=search.region_px)
                merged_at, merged_tiles = time.monotonic(), len(found)
            done, total = len(found), len(plan.tiles) - prefiltered
            left = (time.monotonic() - started) / done * (total - done) if done else None
            yield ScanUpdate(search.query, done, total, objects, space, left,
                             prefiltered=prefiltered)
    finally:
        closed.set()
        worker.join()


def _tile_prefilter(engine: object, search: SceneSearch) -> Any:
    """The search's CLIP pre-filter (None: every tile runs), with the engine's retriever CLIP."""
    if search.prefilter_top is None:
        return None
    embedder = getattr(getattr(engine, "retriever", None), "embedder", None)
    if embedder is None:
        raise UserInputError(
            "searching only the most likely tiles needs the retriever's CLIP, and this model has "
            "none: choose 'search every tile' under the question, or launch with a knowledge base "
            "(--kb DIR) whose CLIP ranks the tiles")
    from app.scanning import TilePrefilter

    return TilePrefilter(embedder, top_fraction=float(search.prefilter_top))


PENDING_LIMIT = 2000  # boxes of a running search the map value carries at most (best first)


def pending_features(update: ScanUpdate, image_name: str) -> list[dict[str, Any]]:
    """The objects found so far as GeoJSON Features for the map (``kind`` "box", label, score,
    ``pending``: not stored yet), best first, at most :data:`PENDING_LIMIT`."""
    import shapely

    from tiles import to_feature

    image = image_name if update.coordinate_space == "pixel" else None
    tolerance = 1e-7 if update.coordinate_space == "lonlat" else 0.01  # ~1 cm: the box's corners only
    return [to_feature(shapely.simplify(obj.polygon, tolerance), {"kind": "box", "label": obj.label, "score": round(float(obj.score), 4),
                                     "tiles": ",".join(str(t) for t in obj.tiles), "pending": True},
                       coordinate_space=update.coordinate_space, image=image)
            for obj in update.objects[:PENDING_LIMIT]]


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    minutes = seconds / 60
    return f"{round(minutes)} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def scan_progress_text(update: ScanUpdate) -> str:
    """The status line of a running search: tiles done/total, a bar, found so far, time left."""
    if update.ranking:
        return (f"Ranking {update.tiles_total} tiles with CLIP to search the most likely "
                "ones first… Stop ends the search.")
    total = max(update.tiles_total, 1)
    filled = round(20 * update.tiles_done / total)
    bar = "▰" * filled + "▱" * (20 - filled)
    if update.tiles_total and update.tiles_done >= update.tiles_total:
        left = "merging the tiles' boxes"
    elif update.seconds_left is None:
        left = "estimating time left"
    else:
        left = f"about {_duration(update.seconds_left)} left"
    kept = (f" (the most likely of {update.tiles_total + update.prefiltered})"
            if update.prefiltered else "")
    return (f"Searching tile by tile: {update.tiles_done} of {update.tiles_total} tiles{kept} {bar} · "
            f"{_count_words(update.count, update.query)} so far · {left}. "
            "Stop keeps what was found.")


def scan_interim_answer(update: ScanUpdate) -> str:
    """The answer box while a search runs: ``5 storage tanks so far (12 of 40 tiles)…``."""
    if update.ranking:
        return f"Ranking {update.tiles_total} tiles…"
    what = _count_words(update.count, update.query)
    return f"{what[0].upper()}{what[1:]} so far ({update.tiles_done} of {update.tiles_total} tiles)…"


def scan_answer(result: ScanResult, noun: str) -> str:
    """The analyst's answer: ``37 storage tanks found in 40 tiles (boxes on the map).``,
    ``No storage tank found in 42 tiles.``, ``Stopped after 12 of 40 tiles: 5 storage tanks
    so far (boxes on the map).``; with the CLIP pre-filter ``... found in 10 tiles, the most
    likely of 40 (CLIP left out 30) ...``."""
    what = _count_words(result.count, noun)
    boxes = " (boxes on the map)" if result.count else ""
    run = result.tiles_total - result.prefiltered
    tiles = f"{run} tile{'s' if run != 1 else ''}"
    if result.prefiltered:
        tiles += f", the most likely of {result.tiles_total} (CLIP left out {result.prefiltered})"
    if result.stopped:
        return f"Stopped after {result.tiles_done} of {tiles}: {what} so far{boxes}."
    if result.tiles_total == 0:
        return (f"No {singular_noun(noun)} found: the region holds no valid pixels "
                f"(all {result.skipped} tiles are empty).")
    return f"{what[0].upper()}{what[1:]} found in {tiles}{boxes}."


def build_scan_record(raster: Raster, request: AskRequest, search: SceneSearch,
                      result: ScanResult, model: str, adapter: str | None, *,
                      point_size_m: float, point_size_px: float,
                      source: RasterSource | None = None,
                      demo_on_real: bool = False) -> ResultRecord:
    """One stored result for a whole-scene search: the searched region, one box per object
    (label, score, ``tiles``: the tile indices that saw it) and ``scan`` = query, count, tiles
    done/total/skipped, stopped, tile size and decimation."""
    from tiles import read_crop, to_feature

    w = search.window
    footprint = read_crop(raster, w, 16, source=source)  # a tiny read: the window's footprint
    region = _region_geometry(footprint, request.region, result.coordinate_space, point_size_m,
                              point_size_px)
    image = raster.name if result.coordinate_space == "pixel" else None
    boxes = tuple(
        ResultBox(geometry=to_feature(obj.polygon, {}, coordinate_space=result.coordinate_space,
                                      image=image)["geometry"],
                  label=obj.label, score=float(obj.score),
                  tiles=",".join(str(t) for t in obj.tiles))
        for obj in result.objects
    )
    text = scan_answer(result, search.query)
    if demo_on_real:
        text = f"{text}\n\n{DEMO_REAL_NOTE}"
    scan = {"query": search.query, "count": result.count, "tiles_done": result.tiles_done,
            "tiles_total": result.tiles_total, "skipped": result.skipped,
            "stopped": result.stopped, "tile_px": result.tile_px,
            "decimation": round(float(result.decimation), 6), "prefiltered": result.prefiltered}
    return ResultRecord(
        task=request.task.value, question=request.question or None, answer=text, model=model,
        adapter=adapter, raster=str(raster.path),
        window={"col_off": int(w.col_off), "row_off": int(w.row_off), "width": int(w.width),
                "height": int(w.height)},
        region=region, coordinate_space=result.coordinate_space, crs=raster.crs_label,
        boxes=boxes, whole_raster=request.region is None, scan=scan,
    )
