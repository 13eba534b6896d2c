"""What each UI action does, as plain typed functions (no Gradio types in or out).

``app.ui`` wires these to components; tests call them directly with real rasters and a real
engine. Every function takes the process's :class:`app.services.AppServices` first. Errors are
raised as the package's own exceptions (``AppError``, ``tiles.TilesError``,
``engine.EngineError``) with messages meant for the analyst; the UI shows them verbatim.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.asking import AskRequest, build_record, evidence_dicts, prepare_crop, stream_answer
from app.errors import NoModelError, UserInputError
from app.export import export_results as write_exports
from app.map_view import drawn_region, map_raster, map_value
from app.results import ResultRecord
from app.services import AppServices
from engine.types import Answer

__all__ = [
    "RASTER_SUFFIXES",
    "RESULT_COLUMNS",
    "AskControl",
    "AskProgress",
    "ask",
    "clear_results",
    "delete_results",
    "export_results",
    "map_update",
    "open_raster_path",
    "open_raster_upload",
    "raster_choices",
    "region_summary",
    "results_rows",
    "selected_ids",
    "toggle_selected",
]

log = logging.getLogger(__name__)

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".png", ".jpg", ".jpeg")
RESULT_COLUMNS = ["✓", "id", "created (UTC)", "task", "question", "answer", "boxes", "raster"]
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


def open_raster_path(services: AppServices, path_text: str | None) -> str:
    """Open a raster by its path on this machine; returns its catalog id."""
    text = (path_text or "").strip().strip('"').strip("'")
    if not text:
        raise UserInputError("type the path of a raster file first (GeoTIFF, JP2, PNG or JPEG)")
    return services.catalog.open(Path(text).expanduser())


def open_raster_upload(services: AppServices, upload_path: str | None) -> str:
    """Keep an uploaded raster in ``<workspace>/uploads`` and open it; returns its catalog id."""
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
    return services.catalog.open(target)


# -- map ---------------------------------------------------------------------------------------
def selected_ids(value: Mapping[str, Any] | None) -> list[str]:
    """Result ids a map value highlights (what Python last sent; the session's selection
    itself is kept by the UI in a ``gr.State``)."""
    if not isinstance(value, Mapping) or not isinstance(value.get("selected"), list):
        return []
    return [str(s) for s in value["selected"]]


def map_update(services: AppServices, active_id: str | None, preset: str | None,
               previous: Mapping[str, Any] | None = None, *, selected: Sequence[str] | None = None,
               fit: bool = False) -> dict[str, Any]:
    """The map value for the current rasters and results; keeps the browser's drawing."""
    rasters = [map_raster(r, preset if r.raster_id == active_id else None)
               for r in services.catalog_list()]
    known = {r.id for r in rasters}
    active = active_id if active_id in known else (rasters[0].id if rasters else None)
    previous = previous if isinstance(previous, Mapping) else {}
    chosen = selected_ids(previous) if selected is None else list(selected)
    stored = services.store.features()
    existing = {f["properties"]["result_id"] for f in stored}
    fit_seq = int(previous.get("fit_seq", 0) or 0) + (1 if fit else 0)
    return map_value(rasters, active, stored, selected=[s for s in chosen if s in existing],
                     basemaps=services.basemaps, point_size_m=services.config.point_size_m,
                     fit_seq=fit_seq, previous=previous)


def region_summary(services: AppServices, raster_id: str | None, value: Mapping[str, Any] | None) -> str:
    """One line about the drawn region: its shape and the raster window it covers."""
    region = drawn_region(value)
    if region is None:
        return "No region drawn: questions are about the whole raster. Draw a rectangle, polygon or point on the map."
    if not raster_id:
        return f"Drawn {region.shape}; open a raster to ask about it."
    from tiles import TilesError, region_window

    raster = services.raster(raster_id)
    space = "EPSG:4326" if region.space == "lonlat" else "pixel"
    try:
        window = region_window(raster, region.geometry, space, point_size_m=services.config.point_size_m,
                               point_size_px=POINT_SIZE_PX)
    except TilesError as exc:
        return f"Drawn {region.shape}: {exc}"
    size = f"{int(window.width)}×{int(window.height)} px at column {int(window.col_off)}, row {int(window.row_off)}"
    point = f" (a {services.config.point_size_m:g} m square)" if region.shape == "point" and raster.georeferenced else ""
    return f"Drawn {region.shape}{point} on {raster.name}: window {size}."


def toggle_selected(selected: Sequence[str], result_id: str) -> list[str]:
    """The selection with ``result_id`` added or removed."""
    chosen = list(selected)
    return [s for s in chosen if s != result_id] if result_id in chosen else [*chosen, result_id]


def results_rows(services: AppServices, selected: Sequence[str] = ()) -> list[list[Any]]:
    """Rows of the results history table, newest first (columns: :data:`RESULT_COLUMNS`)."""
    chosen = set(selected)
    rows = []
    for s in reversed(services.store.summaries()):
        answer = s.answer if len(s.answer) <= 160 else s.answer[:157] + "…"
        space = "" if s.coordinate_space == "lonlat" else " (pixel)"
        rows.append(["✓" if s.result_id in chosen else "", s.result_id, s.created_at.replace("T", " ").rstrip("Z"),
                     s.task, s.question, answer, s.n_boxes, Path(s.raster).name + space])
    return rows


# -- asking ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AskProgress:
    """One streamed update: the answer so far; ``record`` is set on the last update of a
    finished answer, ``stopped`` on the last update of one the analyst stopped (not stored)."""

    text: str
    evidence: tuple[dict[str, Any], ...] = ()
    record: ResultRecord | None = None
    stopped: bool = False


def ask(services: AppServices, request: AskRequest,
        should_stop: Callable[[], bool] | None = None) -> Iterator[AskProgress]:
    """Run one request: crop, stream the engine's answer, store the result (last update).

    ``should_stop`` is polled before the work starts and after every streamed piece; when it
    says so, generation ends at once and the partial answer is not stored.
    """
    if services.engine is None:
        raise NoModelError(
            "no model is loaded, so questions cannot be answered; restart with --model PATH "
            "(the map, drawing, results and export keep working)"
        )
    stop = should_stop or (lambda: False)
    if stop():
        yield AskProgress(text="", stopped=True)
        return
    raster = services.raster(request.raster_id)
    prepared = prepare_crop(raster, request, max_crop_px=services.config.max_crop_px,
                            point_size_m=services.config.point_size_m, point_size_px=POINT_SIZE_PX)
    text = ""
    answer: Answer | None = None
    pieces = stream_answer(services.engine, prepared, request)
    try:
        for piece in pieces:
            if isinstance(piece, Answer):
                answer = piece
            else:
                text = "" if piece is None else text + piece
            if stop():
                yield AskProgress(text=text, stopped=True)
                return
            if answer is None:
                yield AskProgress(text=text)
    finally:
        pieces.close()
    if answer is None:
        raise RuntimeError("the engine's stream ended without a final Answer")
    status = services.model_status
    record = build_record(raster, request, prepared, answer, model=status.name or "", adapter=status.adapter)
    services.store.append(record)
    log.info("stored result %s (%s, %d boxes)", record.result_id, record.task, len(record.boxes))
    yield AskProgress(text=answer.text, evidence=evidence_dicts(answer), record=record)


class AskControl:
    """Per-session stop switch (cooperative cancellation of answers).

    Each click on Ask takes a ticket (:meth:`request`); Stop (:meth:`stop`) stops every ticket
    taken so far, running or still queued; :meth:`is_stopped` is what :func:`ask` polls.
    Thread-safe. A deep copy (Gradio copies a ``gr.State`` default per session) is a fresh switch.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requested = 0
        self._stopped_upto = 0

    def __deepcopy__(self, memo: dict) -> AskControl:
        return AskControl()

    def request(self) -> int:
        with self._lock:
            self._requested += 1
            return self._requested

    def stop(self) -> bool:
        """Stop all tickets so far; True when one was still outstanding."""
        with self._lock:
            outstanding = self._stopped_upto < self._requested
            self._stopped_upto = self._requested
            return outstanding

    def is_stopped(self, ticket: int | None) -> bool:
        with self._lock:
            return bool(ticket) and ticket <= self._stopped_upto


# -- results -----------------------------------------------------------------------------------
def delete_results(services: AppServices, result_ids: Sequence[str]) -> str:
    """Delete the given answers; returns a status line."""
    if not result_ids:
        raise UserInputError("nothing is selected: click rows of the results table (or Select in a map popup) first")
    n = services.store.delete(result_ids)
    return f"Deleted {n} result{'s' if n != 1 else ''}."


def export_results(services: AppServices, result_ids: Sequence[str] | None = None) -> tuple[Path, ...]:
    """GeoJSON file(s) of all results (``None``) or of the given answers, in the workspace."""
    if result_ids is not None and not result_ids:
        raise UserInputError("nothing is selected to export: select results, or export all")
    features = services.store.features(result_ids)
    if not features:
        raise UserInputError("there are no results to export yet: ask a question first")
    return write_exports(features, services.exports_dir)


def clear_results(services: AppServices) -> str:
    """Remove all results (the old file is kept in the workspace); returns a status line."""
    archive = services.store.clear()
    if archive is None:
        return "There were no results to clear."
    return f"Cleared all results; the previous file is kept as {archive}."
