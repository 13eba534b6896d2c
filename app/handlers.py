"""What each UI action does, as plain typed functions (no Gradio types in or out).

``app.ui`` wires these to components; tests call them directly with real rasters and a real
engine. Every function takes the process's :class:`app.services.AppServices` first. Errors are
raised as the package's own exceptions (``AppError``, ``tiles.TilesError``,
``engine.EngineError``) with messages meant for the analyst; the UI shows them verbatim.
"""

from __future__ import annotations

import logging
import math
import shutil
import threading
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.asking import (
    AskRequest,
    build_record,
    drawn_window,
    evidence_dicts,
    prepare_crop,
    stream_answer,
)
from app.compare import (
    ChangeRequest,
    build_change_record,
    is_demo_pair,
    map_compare,
    prepare_pair,
    stream_change,
)
from app.errors import NoModelError, UserInputError
from app.export import EXPORT_FORMATS, export_geopackage
from app.export import export_results as write_exports
from app.map_view import drawn_region, map_raster, map_value
from app.results import ResultQuery, ResultRecord
from app.scene_search import (
    ScanUpdate,
    SceneSearch,
    build_scan_record,
    pending_features,
    scan_interim_answer,
    scene_search_for,
    stream_scene_search,
)
from app.services import AppServices
from engine.types import Answer

__all__ = [
    "RASTER_SUFFIXES",
    "RESULT_COLUMNS",
    "AskControl",
    "AskProgress",
    "TablePage",
    "ask",
    "ask_change",
    "clear_results",
    "close_raster",
    "delete_results",
    "export_results",
    "map_features",
    "map_update",
    "open_raster_path",
    "open_raster_upload",
    "raster_choices",
    "region_summary",
    "results_page",
    "results_rows",
    "scan_pending",
    "selected_ids",
    "start_open_path",
    "start_open_upload",
    "toggle_selected",
]

log = logging.getLogger(__name__)

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".png", ".jpg", ".jpeg", ".webp")
RESULT_COLUMNS = ["✓", "id", "created (UTC)", "task", "question", "answer", "boxes", "raster"]
PAGE_SIZE = 50  # rows of the results table per page
MAP_RESULTS_LIMIT = 1000  # answers the map draws in one view at most (newest first)
POINT_SIZE_PX = 256.0  # a clicked point on a plain image asks about this many pixels square


# -- rasters -----------------------------------------------------------------------------------
def raster_choices(services: AppServices) -> list[tuple[str, str]]:
    """(label, catalog id) of every open raster, for the raster selector."""
    out = []
    for r in services.catalog_list():
        where = r.crs_label or "plain image, pixel space"
        demo = " · demo" if services.demo is not None and r.path == services.demo.path else ""
        out.append((f"{r.name} ({where}){demo}", r.raster_id))
    return out


def _path_typed(path_text: str | None) -> Path:
    text = (path_text or "").strip().strip('"').strip("'")
    if not text:
        raise UserInputError("type the path of a raster file first (GeoTIFF, JP2, PNG or JPEG)")
    return Path(text).expanduser()


def start_open_path(services: AppServices, path_text: str | None):
    """Start opening a raster by its path on this machine (``tiles.OpenJob``: a big raster's
    map copy is built in the background with progress and cancel). The path is untrusted: only
    safe GDAL formats, and only inside ``--data-dir`` folders when those are set."""
    return services.catalog.start_open(_path_typed(path_text), trusted=False)


def open_raster_path(services: AppServices, path_text: str | None) -> str:
    """Open a raster by its path on this machine; returns its catalog id."""
    return start_open_path(services, path_text).result()


def _keep_upload(services: AppServices, upload_path: str | None) -> Path:
    if not upload_path:
        raise UserInputError("no file was uploaded")
    source = Path(upload_path)
    if source.suffix.lower() not in RASTER_SUFFIXES:
        raise UserInputError(
            f"{source.name!r} is not a supported raster; upload one of: {', '.join(RASTER_SUFFIXES)}"
        )
    services.uploads_dir.mkdir(parents=True, exist_ok=True)
    target = services.uploads_dir / source.name
    n = 1
    while target.exists() and target.stat().st_size != source.stat().st_size:
        target = services.uploads_dir / f"{source.stem}_{n}{source.suffix}"
        n += 1
    if not target.exists():
        shutil.copyfile(source, target)
    return target


def start_open_upload(services: AppServices, upload_path: str | None):
    """Keep an uploaded raster in ``<workspace>/uploads`` and start opening it (untrusted); a
    refused upload is deleted again (a hostile file has no reason to stay on disk)."""
    from tiles import TilesError

    kept = _keep_upload(services, upload_path)
    try:
        return services.catalog.start_open(kept, trusted=False)
    except TilesError:
        kept.unlink(missing_ok=True)
        raise


def open_raster_upload(services: AppServices, upload_path: str | None) -> str:
    """Keep an uploaded raster in ``<workspace>/uploads`` and open it; returns its catalog id."""
    return start_open_upload(services, upload_path).result()


# -- map ---------------------------------------------------------------------------------------
def selected_ids(value: Mapping[str, Any] | None) -> list[str]:
    """Result ids a map value highlights (what Python last sent; the session's selection
    itself is kept by the UI in a ``gr.State``)."""
    if not isinstance(value, Mapping) or not isinstance(value.get("selected"), list):
        return []
    return [str(s) for s in value["selected"]]


def map_update(services: AppServices, active_id: str | None, preset: str | None,
               previous: Mapping[str, Any] | None = None, *, selected: Sequence[str] | None = None,
               fit: bool = False, focus_result: str | None = None,
               pending: Mapping[str, Any] | None = None, before_id: str | None = None) -> dict[str, Any]:
    """The map value for the current rasters; keeps the browser's drawing. Results are not in
    it: the map fetches them from ``/results/features`` when ``results_seq`` changes or it moves.
    ``focus_result`` zooms the map to that answer; ``pending`` carries the boxes of a running
    whole-scene search (:func:`scan_pending`). ``compare`` (two dates, :func:`app.compare.map_compare`)
    keeps the previous "before" raster, suggests one for a newly shown raster, or takes
    ``before_id`` (``""``: no comparison)."""
    rasters = [map_raster(r, preset if r.raster_id == active_id else None)
               for r in services.catalog_list()]
    known = {r.id for r in rasters}
    active = active_id if active_id in known else (rasters[0].id if rasters else None)
    previous = previous if isinstance(previous, Mapping) else {}
    chosen = selected_ids(previous) if selected is None else list(selected)
    known_ids = services.store.known(chosen) if chosen else set()
    chosen = [c for c in chosen if c in known_ids]
    fit_seq = int(previous.get("fit_seq", 0) or 0) + (1 if fit else 0)
    focus = previous.get("focus") if isinstance(previous.get("focus"), Mapping) else None
    if focus_result is not None:
        found = services.store.bounds(focus_result)
        if found is not None:
            space, (x0, y0, x1, y1) = found
            seq = int(focus["seq"]) + 1 if focus else 1
            focus = {"space": space, "bounds": [[y0, x0], [y1, x1]] if space == "lonlat" else [[-y1, x0], [-y0, x1]],
                     "seq": seq}
    value = map_value(rasters, active, results_seq=services.store.version, selected=chosen,
                      basemaps=services.basemaps, point_size_m=services.config.point_size_m,
                      fit_seq=fit_seq, focus=focus, previous=previous, pending=pending)
    value["compare"] = map_compare(services, active, previous, before_id)
    return value


def scan_pending(services: AppServices, raster_id: str, update: ScanUpdate) -> dict[str, Any]:
    """The map's ``pending`` member for a running whole-scene search on ``raster_id``."""
    features = pending_features(update, services.raster(raster_id).name)
    return {"raster": raster_id, "space": update.coordinate_space, "features": features}


def _parse_bbox(text: str) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"bbox must be four numbers x0,y0,x1,y1, got {text[:80]!r}") from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values) or values[0] > values[2] \
            or values[1] > values[3]:
        raise ValueError(f"bbox must be four finite numbers x0,y0,x1,y1 with x0<=x1, y0<=y1, got {text[:80]!r}")
    return values  # type: ignore[return-value]


def map_features(services: AppServices, *, bbox: str, space: str = "lonlat", raster_id: str | None = None,
                 limit: int = MAP_RESULTS_LIMIT, owner: str | None = None) -> dict[str, Any]:
    """What the map draws for a view: a FeatureCollection of the newest answers (at most
    ``limit``) whose boxes meet ``bbox`` (lon/lat, or raster pixels of ``raster_id``), with
    ``shown`` and ``total`` answers in view (``total_is_lower_bound``: at least that many; views
    holding thousands are not counted to the end). Properties name the raster file, not its path."""
    if space not in ("lonlat", "pixel"):
        raise ValueError(f"space must be 'lonlat' or 'pixel', got {space!r}")
    if not 1 <= limit <= 5000:
        raise ValueError(f"limit must be 1..5000, got {limit}")
    box = _parse_bbox(bbox)
    raster_path = None
    if space == "pixel":
        if not raster_id:
            raise ValueError("pixel-space results need the raster id (raster=...)")
        raster_path = str(services.raster(raster_id).path)
    view = services.store.in_view(box, space, raster=raster_path, owner=owner, limit=limit)
    for f in view.features:
        f["properties"]["raster"] = Path(str(f["properties"].get("raster", ""))).name
        f["properties"].pop("evidence", None)
    return {"type": "FeatureCollection", "features": view.features, "shown": view.shown, "total": view.total,
            "total_is_lower_bound": view.total_is_lower_bound}


def region_summary(services: AppServices, raster_id: str | None, value: Mapping[str, Any] | None) -> str:
    """One line about the drawn region: its shape and the raster window it covers."""
    region = drawn_region(value)
    if region is None:
        return "No region drawn: questions are about the whole raster. Draw a rectangle, polygon or point on the map."
    if not raster_id:
        return f"Drawn {region.shape}; open a raster to ask about it."
    from tiles import TilesError

    raster = services.raster(raster_id)
    try:
        window = drawn_window(raster, region, point_size_m=services.config.point_size_m, point_size_px=POINT_SIZE_PX)
    except TilesError as exc:
        return f"Drawn {region.shape}: {exc}"
    size = f"{int(window.width)}×{int(window.height)} px at column {int(window.col_off)}, row {int(window.row_off)}"
    point = f" (a {services.config.point_size_m:g} m square)" if region.shape == "point" and raster.georeferenced else ""
    return f"Drawn {region.shape}{point} on {raster.name}: window {size}."


def toggle_selected(selected: Sequence[str], result_id: str) -> list[str]:
    """The selection with ``result_id`` added or removed."""
    chosen = list(selected)
    return [s for s in chosen if s != result_id] if result_id in chosen else [*chosen, result_id]


@dataclass(frozen=True)
class TablePage:
    """The results table as shown: its rows and a line such as "Results 1–50 of 100,000"."""

    rows: list[list[Any]]
    line: str
    offset: int
    total: int


def results_page(services: AppServices, selected: Sequence[str] = (), *, offset: int = 0,
                 raster_id: str | None = None, task: str | None = None, owner: str | None = None) -> TablePage:
    """One page of the results history, newest first, filtered by raster (catalog id) and task."""
    raster = str(services.raster(raster_id).path) if raster_id else None
    offset = max(0, int(offset))
    page = services.store.page(ResultQuery(owner=owner, raster=raster, task=task or None, offset=offset,
                                           limit=PAGE_SIZE))
    if page.total and offset >= page.total:  # past the end (after deletes): show the last page
        offset = (page.total - 1) // PAGE_SIZE * PAGE_SIZE
        page = services.store.page(ResultQuery(owner=owner, raster=raster, task=task or None,
                                               offset=offset, limit=PAGE_SIZE))
    chosen = set(selected)
    rows = []
    for s in page.rows:
        answer = s.answer if len(s.answer) <= 160 else s.answer[:157] + "…"
        space = "" if s.coordinate_space == "lonlat" else " (pixel)"
        rows.append(["✓" if s.result_id in chosen else "", s.result_id, s.created_at.replace("T", " ").rstrip("Z"),
                     s.task, s.question, answer, s.n_boxes, Path(s.raster).name + space])
    if page.total == 0:
        line = "No results yet." if raster is None and not task else "No results match the filter."
    else:
        line = f"Results {offset + 1:,}–{offset + len(rows):,} of {page.total:,}"
        line += f" · {len(chosen)} selected" if chosen else ""
    return TablePage(rows=rows, line=line, offset=offset, total=page.total)


def results_rows(services: AppServices, selected: Sequence[str] = (), owner: str | None = None) -> list[list[Any]]:
    """Rows of the first page of the results history, newest first (columns: :data:`RESULT_COLUMNS`)."""
    return results_page(services, selected, owner=owner).rows


# -- asking ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AskProgress:
    """One streamed update: the answer so far; ``record`` is set on the last update of a
    finished answer, ``stopped`` on the last update of one the analyst stopped (not stored,
    ``record`` None). A whole-scene search (:mod:`app.scene_search`) sets ``scan`` on every
    update (tiles done/total, objects so far, time left); when it is stopped, what was found is
    stored: its last update has ``record`` and ``stopped`` both set."""

    text: str
    evidence: tuple[dict[str, Any], ...] = ()
    record: ResultRecord | None = None
    stopped: bool = False
    scan: ScanUpdate | None = None


def ask(services: AppServices, request: AskRequest,
        should_stop: Callable[[], bool] | None = None, owner: str | None = None) -> Iterator[AskProgress]:
    """Run one request: crop, stream the engine's answer, store the result (last update).

    ``should_stop`` is polled before the work starts and after every streamed piece; when it
    says so, generation ends at once and the partial answer is not stored. ``owner`` is the
    analyst the result belongs to (several logins), None otherwise.

    "Find objects" and counting questions on a region larger than one model input are searched
    tile by tile instead (:func:`app.scene_search.scene_search_for` has the rule): updates carry
    ``scan``, ``should_stop`` is polled before the work starts and before each batch of tiles,
    and a stopped search stores what it found so far.
    """
    _check_answerable(services, request.question, request.labels,
                      keeps="the map, drawing, results and export keep working")
    stop = should_stop or (lambda: False)
    if stop():
        yield AskProgress(text="", stopped=True)
        return
    raster = services.raster(request.raster_id)
    search = scene_search_for(raster, request, services.engine, max_crop_px=services.config.max_crop_px,
                              point_size_m=services.config.point_size_m, point_size_px=POINT_SIZE_PX,
                              recommended_region_m=services.recommended_region_m)
    if search is not None:
        yield from _search_scene(services, raster, request, search, stop, owner)
        return
    prepared = prepare_crop(raster, request, max_crop_px=services.config.max_crop_px,
                            point_size_m=services.config.point_size_m, point_size_px=POINT_SIZE_PX,
                            source=services.catalog.source(request.raster_id))
    answer = yield from _streamed(stream_answer(services.engine, prepared, request), stop)
    if answer is None:  # stopped: not stored
        return
    status = services.model_status
    demo_on_real = status.is_demo and not services.is_demo_raster(raster)
    record = build_record(raster, request, prepared, answer, model=status.name or "", adapter=status.adapter,
                          demo_on_real=demo_on_real)
    services.store.append(record, owner=owner)
    log.info("stored result %s (%s, %d boxes)", record.result_id, record.task, len(record.boxes))
    yield AskProgress(text=record.answer, evidence=evidence_dicts(answer), record=record)


def _check_answerable(services: AppServices, question: str | None, labels: Sequence[str] = (),
                      *, keeps: str) -> None:
    """Refuse a question over ``--max-question-chars`` or with no model loaded (``keeps``: what
    still works without a model, for the message)."""
    limit = services.config.max_question_chars
    if len(question or "") > limit:
        raise UserInputError(f"the question is {len(question or ''):,} characters long; the limit is "
                             f"{limit:,} (--max-question-chars). Shorten it.")
    if sum(len(label) for label in labels) > limit:
        raise UserInputError(f"the labels are longer than {limit:,} characters together; use fewer or shorter labels")
    if services.engine is None:
        raise NoModelError(f"no model is loaded, so questions cannot be answered; restart with --model PATH ({keeps})")


def _streamed(pieces: Iterator[str | None | Answer],
              stop: Callable[[], bool]) -> Generator[AskProgress, None, Answer | None]:
    """Stream ``pieces`` (:func:`app.asking.stream_answer`) as updates of the answer so far;
    returns the final :class:`Answer`, or None when ``stop()`` said so (its last update has
    ``stopped`` set). ``stop`` is polled after every piece; stopping closes the stream."""
    text, answer = "", None
    try:
        for piece in pieces:
            if isinstance(piece, Answer):
                answer = piece
            else:
                text = "" if piece is None else text + piece
            if stop():
                yield AskProgress(text=text, stopped=True)
                return None
            if answer is None:
                yield AskProgress(text=text)
    finally:
        pieces.close()
    if answer is None:
        raise RuntimeError("the engine's stream ended without a final Answer")
    return answer


def ask_change(services: AppServices, request: ChangeRequest, should_stop: Callable[[], bool] | None = None,
               owner: str | None = None) -> Iterator[AskProgress]:
    """Run one change question (:mod:`app.compare`): read the co-registered pair, stream the
    engine's answer, store the result (last update, as :func:`ask`; a stopped answer is not
    stored)."""
    _check_answerable(services, request.question,
                      keeps="the map, the comparison view, results and export keep working")
    stop = should_stop or (lambda: False)
    if stop():
        yield AskProgress(text="", stopped=True)
        return
    prepared = prepare_pair(services, request)
    answer = yield from _streamed(stream_change(services.engine, prepared, request), stop)
    if answer is None:
        return
    after, before = services.raster(request.after_id), services.raster(request.before_id)
    status = services.model_status
    demo_on_real = status.is_demo and not is_demo_pair(services, before, after)
    record = build_change_record(request, prepared, answer, after, model=status.name or "",
                                 adapter=status.adapter, demo_on_real=demo_on_real)
    services.store.append(record, owner=owner)
    log.info("stored change result %s (%s, %s -> %s, %d boxes)", record.result_id, record.task,
             before.name, after.name, len(record.boxes))
    yield AskProgress(text=record.answer, evidence=evidence_dicts(answer), record=record)


def _search_scene(services: AppServices, raster, request: AskRequest, search: SceneSearch,
                  stop: Callable[[], bool], owner: str | None) -> Iterator[AskProgress]:
    """A whole-scene search: stream its progress, then store one record (also when stopped)."""
    source = services.catalog.source(request.raster_id)
    updates = stream_scene_search(services.engine, raster, search, source=source, should_stop=stop)
    last = None
    try:
        for last in updates:
            if last.result is None:
                yield AskProgress(text=scan_interim_answer(last), scan=last)
    finally:
        updates.close()
    if last is None or last.result is None:
        raise RuntimeError("the whole-scene search ended without a result")
    status = services.model_status
    record = build_scan_record(raster, request, search, last.result, model=status.name or "",
                               adapter=status.adapter, point_size_m=services.config.point_size_m,
                               point_size_px=POINT_SIZE_PX, source=source,
                               demo_on_real=status.is_demo and not services.is_demo_raster(raster))
    services.store.append(record, owner=owner)
    log.info("stored whole-scene search %s (%d of %d tiles, %d objects%s)", record.result_id,
             last.result.tiles_done, last.result.tiles_total, last.result.count,
             ", stopped" if last.result.stopped else "")
    yield AskProgress(text=record.answer, record=record, stopped=last.result.stopped, scan=last)


class AskControl:
    """Per-session stop switch (cooperative cancellation of answers).

    Each click on Ask takes a ticket (:meth:`request`) and gives it back when its answer ends
    (:meth:`finish`); Stop (:meth:`stop`) stops every ticket taken so far, running or still
    queued; :meth:`is_stopped` is what :func:`ask` polls. Thread-safe. A deep copy (Gradio
    copies a ``gr.State`` default per session) is a fresh switch.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requested = 0
        self._stopped_upto = 0
        self._open: set[int] = set()

    def __deepcopy__(self, memo: dict) -> AskControl:
        return AskControl()

    def request(self) -> int:
        with self._lock:
            self._requested += 1
            self._open.add(self._requested)
            return self._requested

    def finish(self, ticket: int | None) -> None:
        """The answer of ``ticket`` ended (answered, stopped or failed)."""
        with self._lock:
            self._open.discard(ticket or 0)

    @property
    def running(self) -> bool:
        """True while an answer of this session is queued or running."""
        with self._lock:
            return any(t > self._stopped_upto for t in self._open)

    def stop(self) -> bool:
        """Stop all tickets so far; True when one was still queued or running."""
        with self._lock:
            outstanding = any(t > self._stopped_upto for t in self._open)
            self._stopped_upto = self._requested
            return outstanding

    def is_stopped(self, ticket: int | None) -> bool:
        with self._lock:
            return bool(ticket) and ticket <= self._stopped_upto


# -- results -----------------------------------------------------------------------------------
def delete_results(services: AppServices, result_ids: Sequence[str], owner: str | None = None) -> str:
    """Delete the given answers (only ``owner``'s own and shared ones); returns a status line."""
    if not result_ids:
        raise UserInputError("nothing is selected: click rows of the results table (or Select in a map popup) first")
    n = services.store.delete(result_ids, owner=owner)
    kept = len(set(result_ids)) - n
    line = f"Deleted {n} result{'s' if n != 1 else ''}."
    return line + (f" {kept} selected result(s) were not yours or no longer exist and were kept." if kept else "")


def export_results(services: AppServices, result_ids: Sequence[str] | None = None,
                   owner: str | None = None, fmt: str = "geojson") -> tuple[Path, ...]:
    """Files of all results (``None``) or of the given answers, in the workspace: GeoJSON
    (``fmt`` "geojson": lon/lat plus a pixel-space file for plain images) or one GeoPackage
    (``fmt`` "geopackage": one layer per task and query, see :mod:`app.export`)."""
    if fmt not in EXPORT_FORMATS:
        raise UserInputError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    if result_ids is not None and not result_ids:
        raise UserInputError("nothing is selected to export: select results, or export all")
    features = services.store.features(result_ids, owner=owner)
    if not features:
        raise UserInputError("there are no results to export yet: ask a question first")
    if fmt == "geopackage":
        return (export_geopackage(features, services.exports_dir),)
    return write_exports(features, services.exports_dir)


def clear_results(services: AppServices, owner: str | None = None) -> str:
    """Remove all (of ``owner``'s) results, kept in a GeoJSON file in the workspace first."""
    archive = services.store.clear(owner=owner)
    if archive is None:
        return "There were no results to clear."
    return f"Cleared all results; they are kept as {archive.name} in the workspace."


def close_raster(services: AppServices, raster_id: str | None) -> str:
    """Remove a raster from the open rasters (its file and its results stay); a status line."""
    if not raster_id:
        raise UserInputError("no raster is selected to close")
    name = services.raster(raster_id).name
    services.catalog.close(raster_id)
    return f"Closed {name}; its results stay in the history."
