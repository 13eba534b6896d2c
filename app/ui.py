"""The Gradio layout and event wiring. Layout only: every action is a function in
:mod:`app.handlers`; here they are adapted to components and their errors become ``gr.Error``.

Model work is one queue: every event that runs the engine shares ``concurrency_id="engine"``
with ``concurrency_limit=1``, so requests run one at a time in arrival order, while map tiles
(FastAPI routes, not the queue) and light events keep flowing. "Stop" cancels a running answer.
"""

from __future__ import annotations

import functools
import html
import inspect
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import gradio as gr

from app import compare, handlers
from app.asking import DEFAULT_LABELS, TASK_CHOICES, AskRequest, parse_labels
from app.compare import ALL_TASK_CHOICES, CHANGE_QUESTION_HINTS, CHANGE_TASK_CHOICES, ChangeRequest
from app.demo import demo_labels
from app.errors import AppError
from app.map_view import build_map, drawn_region
from app.scene_search import SEARCH_TILE_CHOICES, scan_progress_text
from app.services import AppServices
from engine.errors import EngineError
from engine.types import Task

__all__ = ["ENGINE_CONCURRENCY_ID", "build_blocks", "plain_markdown", "readable_errors", "reported"]

log = logging.getLogger(__name__)

ENGINE_CONCURRENCY_ID = "engine"
# A running whole-scene search sends its boxes to the map at most this often (each map value
# update costs the browser a re-render; progress lines go out after every batch regardless).
PENDING_MAP_INTERVAL_S = 1.0
EVIDENCE_COLUMNS = ["description", "score", "source", "level"]
_QUESTION_HINTS = {
    Task.ASK: "e.g. Is there a river in this area? How many buildings are there?",
    Task.CAPTION: "(optional) what to focus on",
    Task.GROUND: "what to find, e.g. buildings, storage tanks, ships",
    Task.CLASSIFY: "(optional) extra instructions",
    Task.REGION: "a question about the drawn box, e.g. What is inside the box?",
    **CHANGE_QUESTION_HINTS,
}


def _user_message(exc: Exception) -> str:
    """The analyst's message for ``exc``: expected errors (ours, with their advice) are logged as
    one line; anything else logs its traceback and says so."""
    from tiles import TilesError

    if isinstance(exc, (AppError, TilesError, EngineError)):
        log.info("%s: %s", type(exc).__name__, exc)
        return str(exc)
    log.exception("unexpected error in a UI action")
    return f"Unexpected error ({type(exc).__name__}: {exc}). Details are in the server log."


def plain_markdown(text: str) -> str:
    """``text`` shown literally by a Markdown component: HTML and Markdown syntax escaped, so a
    file name like ``<a href=...>`` or ``[x](y)`` is shown as typed, never rendered."""
    escaped = html.escape(str(text), quote=False)
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|~>])", r"\\\1", escaped)


def readable_errors(fn: Callable) -> Callable:
    """Turn exceptions of ``fn`` (plain or generator) into ``gr.Error`` with a readable, plain
    text message, never a stack trace. ``gr.Error`` raised inside passes through unchanged."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any):
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:
                raise gr.Error(html.escape(_user_message(exc))) from exc
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:
            raise gr.Error(html.escape(_user_message(exc))) from exc
    return wrapper


def reported(status: gr.components.Component) -> Callable[[Callable], Callable]:
    """Like :func:`readable_errors`, but a failure only writes its message (plain text) to
    ``status`` and a warning toast: the event's other outputs keep their values, and no red
    "Error" badge is left over the dropdowns or the map."""

    def report(exc: Exception) -> dict:
        message = _user_message(exc)
        gr.Warning(html.escape(message))
        return {status: "⚠️ " + plain_markdown(message)}

    def deco(fn: Callable) -> Callable:
        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def gen_wrapper(*args: Any, **kwargs: Any):
                try:
                    yield from fn(*args, **kwargs)
                except Exception as exc:  # noqa: BLE001 - every failure becomes the status message
                    yield report(exc)
            return gen_wrapper

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - every failure becomes the status message
                return report(exc)
        return wrapper

    return deco


def _saved_line(progress: handlers.AskProgress) -> str:
    """The status line once an answer is stored (a whole-scene search says how far it got)."""
    record = progress.record
    n_boxes = len(record.boxes)
    boxes = f" with {n_boxes} box{'es' if n_boxes != 1 else ''}" if n_boxes else ""
    scan = record.scan
    if scan is not None:
        left_out = scan.get("prefiltered") or 0
        run = scan["tiles_total"] - left_out
        kept = f" (the most likely of {scan['tiles_total']})" if left_out else ""
        if scan.get("stopped"):
            return (f"Stopped after {scan['tiles_done']} of {run} tiles{kept}; what was found is "
                    f"saved as result {record.result_id}{boxes}.")
        return f"Searched {run} tiles{kept}; result {record.result_id} saved{boxes}."
    return f"Answered ({record.task}); result {record.result_id} saved{boxes}."


def _evidence_rows(evidence: tuple[dict[str, Any], ...]) -> list[list[Any]]:
    return [[e["text"], e["score"], e["source"], e["level"] or ""] for e in evidence]


def _filter_task(name: str | None) -> str | None:
    return None if name in (None, "", ALL_TASKS) else ALL_TASK_CHOICES[name].value


def _filter_raster(value: str | None) -> str | None:
    return None if value in (None, "", ALL_RASTERS) else value


ALL_RASTERS = "All rasters"
ALL_TASKS = "All tasks"
# Export format choices (UI name -> app.export format).
EXPORT_FORMAT_CHOICES = {"GeoJSON": "geojson", "GeoPackage": "geopackage"}


def _export_format(name: str | None) -> str:
    return EXPORT_FORMAT_CHOICES.get(name or "GeoJSON", "geojson")


class _Actions:
    """Event functions bound to one :class:`AppServices` (adapters around app.handlers).

    ``owner`` of every result action is the logged-in analyst when several logins keep their
    results apart (``services.owner_of``), else None.
    """

    def __init__(self, services: AppServices) -> None:
        self.s = services
        self._controls: weakref.WeakValueDictionary[str, handlers.AskControl] = weakref.WeakValueDictionary()
        self._jobs: dict[str, Any] = {}
        self._jobs_lock = threading.Lock()

    def _owner(self, request: gr.Request | None) -> str | None:
        return self.s.owner_of(request.headers) if request is not None else None

    def _table(self, selection, offset=0, raster_filter=None, task_filter=None, request=None):
        page = handlers.results_page(self.s, selection or [], offset=offset,
                                     raster_id=_filter_raster(raster_filter), task=_filter_task(task_filter),
                                     owner=self._owner(request))
        return page.rows, page.line, page.offset

    def _raster_filter_choices(self) -> list[tuple[str, str]]:
        return [(ALL_RASTERS, ALL_RASTERS)] + handlers.raster_choices(self.s)

    def load(self, request: gr.Request):
        ids = self.s.opened_ids or [r.raster_id for r in self.s.catalog_list()]
        ids = [i for i in ids if i in self.s.catalog] or [r.raster_id for r in self.s.catalog_list()]
        active = ids[0] if ids else None
        value = handlers.map_update(self.s, active, "auto", fit=True)
        notice = " ".join(n for n in (self.s.store.recovery_notice, *self.s.notices) if n)
        status = ("⚠️ " + plain_markdown(notice)) if notice else \
            "Ready. Draw a region on the map (or ask about the whole raster)."
        rows, line, _ = self._table([], request=request)
        return (gr.Dropdown(choices=handlers.raster_choices(self.s), value=active), value, rows, status,
                gr.Dropdown(choices=self._raster_filter_choices(), value=ALL_RASTERS), line)

    def raster_changed(self, raster_id, preset, value):
        from tiles import BandPresetError, select_bands

        note = gr.skip()
        if raster_id and preset not in (None, "auto"):
            try:
                select_bands(self.s.raster(raster_id), preset)
            except BandPresetError:
                note = f"Band preset {plain_markdown(preset)} does not fit this raster; using auto."
                preset = "auto"
        return handlers.map_update(self.s, raster_id, preset, value, fit=True), preset, note

    def preset_changed(self, raster_id, preset, value):
        from tiles import BandPresetError, select_bands

        if raster_id and preset not in (None, "auto"):
            try:
                select_bands(self.s.raster(raster_id), preset)
            except BandPresetError as exc:  # reset, so later Asks do not all fail on it
                gr.Warning(html.escape(str(exc)))
                return (handlers.map_update(self.s, raster_id, "auto", value), "auto",
                        "⚠️ " + plain_markdown(f"{exc} The preset was reset to auto."))
        return handlers.map_update(self.s, raster_id, preset, value), preset, gr.skip()

    def _opened(self, raster_id: str, value):
        name = self.s.raster(raster_id).name
        new_value = handlers.map_update(self.s, raster_id, "auto", value, fit=True)
        return {self.c["raster_dd"]: gr.Dropdown(choices=handlers.raster_choices(self.s), value=raster_id),
                self.c["preset_dd"]: "auto", self.c["map"]: new_value,
                self.c["status"]: "Opened " + plain_markdown(name) + ".",
                self.c["open_acc"]: gr.Accordion(open=False),
                self.c["filter_raster"]: gr.Dropdown(choices=self._raster_filter_choices()),
                self.c["cancel_open"]: gr.Button(visible=False)}

    def _follow(self, job, value, request: gr.Request | None):
        """Yield progress while ``job`` (a catalog open) runs; then the opened raster."""
        key = request.session_hash if request is not None else ""
        with self._jobs_lock:
            self._jobs[key] = job
        try:
            shown = False
            while not job.wait(0.5):
                pct = round(100 * job.progress)
                yield {self.c["status"]: plain_markdown(f"Preparing {job.path.name} for the map: {job.message} "
                                                        f"{pct} % (Cancel stops it)."),
                       self.c["cancel_open"]: gr.Button(visible=True) if not shown else gr.skip()}
                shown = True
            yield self._opened(job.result(), value)
        finally:
            with self._jobs_lock:
                self._jobs.pop(key, None)

    def open_path(self, path_text, value, request: gr.Request = None):
        yield from self._follow(handlers.start_open_path(self.s, path_text), value, request)

    def open_upload(self, upload_path, value, request: gr.Request = None):
        yield from self._follow(handlers.start_open_upload(self.s, upload_path), value, request)

    def cancel_open(self, request: gr.Request = None):
        with self._jobs_lock:
            job = self._jobs.get(request.session_hash if request is not None else "")
        if job is None:
            return "Nothing is being opened.", gr.Button(visible=False)
        job.cancel()
        return "Cancelling the open…", gr.Button(visible=False)

    def close_raster(self, raster_id, value, selection, request: gr.Request = None):
        message = handlers.close_raster(self.s, raster_id)
        rest = self.s.catalog_list()
        active = rest[0].raster_id if rest else None
        new_value = handlers.map_update(self.s, active, "auto", value, selected=selection or [], fit=True)
        return (gr.Dropdown(choices=handlers.raster_choices(self.s), value=active), "auto", new_value,
                plain_markdown(message), gr.Dropdown(choices=self._raster_filter_choices(), value=ALL_RASTERS))

    def map_changed(self, raster_id, value):
        return plain_markdown(handlers.region_summary(self.s, raster_id, value))

    def task_changed(self, task_name):
        task = ALL_TASK_CHOICES[task_name]
        return (gr.Textbox(visible=task is Task.CLASSIFY),
                gr.Textbox(placeholder=_QUESTION_HINTS[task]),
                gr.Dropdown(visible=task in (Task.GROUND, Task.ASK)))  # searches tile by tile

    def take_ticket(self, control: handlers.AskControl, request: gr.Request = None) -> tuple[int, str]:
        if request is not None and request.session_hash:
            self._controls[request.session_hash] = control
        return control.request(), ""

    def stop(self, control: handlers.AskControl) -> str:
        # Stop writes its own note, not the status line: the stopped answer reports "Stopped"
        # there itself, and two writers to one component would race.
        return "Stopping the current answer…" if control.stop() else "Nothing is running: there is no answer to stop."

    def page_closed(self, request: gr.Request = None) -> None:
        """The analyst's tab went away: stop its queued or running answer, free the model."""
        control = self._controls.pop(request.session_hash, None) if request is not None else None
        if control is not None and control.stop():
            log.info("a client left; its answer was stopped")

    def ask(self, raster_id, preset, task_name, question, labels_text, search_tiles, value,
            control: handlers.AskControl | None = None, ticket: int | None = None,
            selection: list[str] | None = None, offset=0, raster_filter=None, task_filter=None,
            request: gr.Request = None):
        if task_name in CHANGE_TASK_CHOICES:  # two dates: app.compare
            yield from self.ask_change(raster_id, preset, task_name, question, value, control, ticket,
                                       selection, raster_filter, task_filter, request)
            return
        try:
            request_ = AskRequest(
                raster_id=raster_id or "", task=TASK_CHOICES[task_name], question=(question or "").strip() or None,
                labels=parse_labels(labels_text) if TASK_CHOICES[task_name] is Task.CLASSIFY else (),
                preset=None if preset in (None, "auto") else preset, region=drawn_region(value),
                search_top=SEARCH_TILE_CHOICES.get(search_tiles),
            )
            should_stop = (lambda: control.is_stopped(ticket)) if control is not None else None
            yield "", [], gr.skip(), gr.skip(), "Answering… (queued behind other requests if any)", gr.skip()
            owner = self._owner(request)
            shown, shown_at = None, -PENDING_MAP_INTERVAL_S  # the pending boxes on the map, and when sent
            try:
                for progress in handlers.ask(self.s, request_, should_stop, owner=owner):
                    if progress.record is not None or progress.stopped:
                        yield self._ended(progress, raster_id, preset, value, selection, raster_filter,
                                          task_filter, request)
                    elif progress.scan is not None:  # a whole-scene search: progress + boxes so far
                        scan = progress.scan
                        new_value = gr.skip()
                        if scan.objects != shown and time.monotonic() - shown_at >= PENDING_MAP_INTERVAL_S:
                            shown, shown_at = scan.objects, time.monotonic()
                            new_value = handlers.map_update(self.s, raster_id, preset, value, selected=selection or [],
                                                            pending=handlers.scan_pending(self.s, raster_id, scan))
                        yield (progress.text, gr.skip(), new_value, gr.skip(),
                               plain_markdown(scan_progress_text(scan)), gr.skip())
                    else:
                        yield progress.text, gr.skip(), gr.skip(), gr.skip(), "Answering…", gr.skip()
            except Exception:
                if shown is not None:  # a failed search: take its unsaved boxes off the map
                    yield (gr.skip(), gr.skip(), handlers.map_update(self.s, raster_id, preset, value,
                                                                     selected=selection or []),
                           gr.skip(), gr.skip(), gr.skip())
                raise
        finally:
            if control is not None:
                control.finish(ticket)

    def _ended(self, progress: handlers.AskProgress, raster_id, preset, value, selection, raster_filter,
               task_filter, request):
        """The Ask outputs of a finished answer (stored: new map value, table page, saved line) or of
        one the analyst stopped (not stored)."""
        if progress.record is None:
            return progress.text, gr.skip(), gr.skip(), gr.skip(), "Stopped: this answer was not saved.", gr.skip()
        new_value = handlers.map_update(self.s, raster_id, preset, value, selected=selection or [])
        rows, line, _ = self._table(selection, 0, raster_filter, task_filter, request)
        return progress.text, _evidence_rows(progress.evidence), new_value, rows, _saved_line(progress), line

    # -- two dates (app.compare) ---------------------------------------------------------------
    def offer_before(self, raster_id, preset, value):
        """The shown raster changed: offer the overlapping rasters as "before" (the map value
        already carries the suggested one, see handlers.map_update)."""
        new_value = handlers.map_update(self.s, raster_id, preset, value)
        chosen = (new_value.get("compare") or {}).get("before") or compare.NO_BEFORE
        return (gr.Dropdown(choices=compare.before_choices(self.s, raster_id), value=chosen), new_value,
                plain_markdown(compare.compare_line(new_value.get("compare"))))

    def compare_changed(self, raster_id, before_id, preset, value):
        new_value = handlers.map_update(self.s, raster_id, preset, value, before_id=before_id or compare.NO_BEFORE)
        return new_value, plain_markdown(compare.compare_line(new_value.get("compare")))

    def ask_change(self, raster_id, preset, task_name, question, value, control, ticket, selection,
                   raster_filter, task_filter, request):
        try:
            chosen = value.get("compare") if isinstance(value, dict) else None
            before_id = chosen.get("before") if isinstance(chosen, dict) and chosen.get("after") == raster_id else None
            request_ = ChangeRequest(after_id=raster_id or "", before_id=before_id, task=CHANGE_TASK_CHOICES[task_name],
                                     question=(question or "").strip() or None,
                                     preset=None if preset in (None, "auto") else preset, region=drawn_region(value))
            should_stop = (lambda: control.is_stopped(ticket)) if control is not None else None
            yield "", [], gr.skip(), gr.skip(), "Comparing the two dates… (queued behind other requests if any)", gr.skip()
            for progress in handlers.ask_change(self.s, request_, should_stop, owner=self._owner(request)):
                if progress.record is not None or progress.stopped:
                    yield self._ended(progress, raster_id, preset, value, selection, raster_filter, task_filter,
                                      request)
                else:
                    yield progress.text, gr.skip(), gr.skip(), gr.skip(), "Answering…", gr.skip()
        finally:
            if control is not None:
                control.finish(ticket)

    def _toggled(self, raster_id, preset, value, selection, result_id: str, offset, raster_filter, task_filter,
                 request, focus: bool):
        chosen = handlers.toggle_selected(selection or [], result_id)
        new_value = handlers.map_update(self.s, raster_id, preset, value, selected=chosen,
                                        focus_result=result_id if focus and result_id in chosen else None)
        rows, line, _ = self._table(chosen, offset, raster_filter, task_filter, request)
        return new_value, rows, chosen, line

    def select_row(self, raster_id, preset, value, selection, offset, raster_filter, task_filter,
                   evt: gr.SelectData, request: gr.Request = None):
        row = evt.row_value or []
        if len(row) < 2 or not row[1]:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return self._toggled(raster_id, preset, value, selection, str(row[1]), offset, raster_filter, task_filter,
                             request, focus=True)

    def popup_toggle(self, raster_id, preset, value, selection, offset, raster_filter, task_filter,
                     evt: gr.EventData, request: gr.Request = None):
        return self._toggled(raster_id, preset, value, selection, str(evt.result_id), offset, raster_filter,
                             task_filter, request, focus=False)

    def page(self, selection, offset, raster_filter, task_filter, step: int, request: gr.Request = None):
        offset = max(0, int(offset or 0) + step * handlers.PAGE_SIZE)
        rows, line, offset = self._table(selection, offset, raster_filter, task_filter, request)
        return rows, line, offset

    def delete(self, raster_id, preset, value, selection, offset, raster_filter, task_filter,
               request: gr.Request = None):
        message = handlers.delete_results(self.s, selection or [], owner=self._owner(request))
        new_value = handlers.map_update(self.s, raster_id, preset, value, selected=[])
        rows, line, offset = self._table([], offset, raster_filter, task_filter, request)
        return new_value, rows, plain_markdown(message), [], line, offset

    def export_all(self, fmt=None, request: gr.Request = None):
        paths = handlers.export_results(self.s, None, owner=self._owner(request), fmt=_export_format(fmt))
        return [str(p) for p in paths], plain_markdown("Exported all results: " + ", ".join(p.name for p in paths))

    def export_selected(self, selection, fmt=None, request: gr.Request = None):
        chosen = list(selection or [])
        paths = handlers.export_results(self.s, chosen, owner=self._owner(request), fmt=_export_format(fmt))
        return [str(p) for p in paths], plain_markdown(
            f"Exported {len(chosen)} selected result(s): " + ", ".join(p.name for p in paths))

    def clear(self, raster_id, preset, value, request: gr.Request = None):
        message = handlers.clear_results(self.s, owner=self._owner(request))
        new_value = handlers.map_update(self.s, raster_id, preset, value, selected=[])
        rows, line, offset = self._table([], 0, None, None, request)
        return new_value, rows, plain_markdown(message), None, [], line, offset


def _preset_choices() -> list[str]:
    from tiles.presets import known_preset_names

    return known_preset_names()


def build_blocks(services: AppServices) -> gr.Blocks:
    """The GeoLens UI for ``services`` (mount it with :func:`app.server.create_server_app`).

    Laid out for a 1366 x 768 laptop: the map on the left, and on the right the raster, the task,
    the question, Ask/Stop, the answer and the status line, all without scrolling; evidence and
    the results history below.
    """
    act = _Actions(services)
    ok = services.model_status.loaded
    with gr.Blocks(title="GeoLens", fill_width=True) as blocks:
        with gr.Row(elem_classes="gl-title", equal_height=True):
            gr.Markdown("# GeoLens", elem_classes="gl-title-name")
            gr.Markdown(("" if ok else "⚠️ ") + plain_markdown(services.model_status.line),
                        elem_id="geolens-model-status", elem_classes=None if ok else "no-model")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=480):
                the_map = build_map()
                region_md = gr.Markdown(elem_id="geolens-region")
                compare_md = gr.Markdown(elem_id="geolens-compare")
            with gr.Column(scale=2, min_width=360, elem_classes="gl-side"):
                with gr.Row(equal_height=True):
                    # Choices are refreshed per page load; ids are checked by the catalog, so values
                    # from API clients (rasters opened after this page was built) are accepted.
                    raster_dd = gr.Dropdown(label="Raster", choices=handlers.raster_choices(services),
                                            allow_custom_value=True, interactive=True, elem_id="geolens-raster",
                                            scale=5, min_width=160)
                    preset_dd = gr.Dropdown(label="Bands", choices=_preset_choices(), value="auto",
                                            interactive=True, elem_id="geolens-preset", scale=2, min_width=100)
                    close_btn = gr.Button("Close", size="sm", scale=1, min_width=56,
                                          elem_id="geolens-close-raster")
                    before_dd = gr.Dropdown(label="Before (compare)", choices=compare.before_choices(services, None),
                                            value=compare.NO_BEFORE, interactive=True, elem_id="geolens-before",
                                            scale=4, min_width=140)
                with gr.Accordion("Open a raster", open=False, elem_id="geolens-open-panel") as open_acc:
                    with gr.Row():
                        path_tb = gr.Textbox(label="Path on this machine", placeholder="/data/scene.tif",
                                             scale=4, elem_id="geolens-path")
                        open_btn = gr.Button("Open", scale=1, elem_id="geolens-open")
                    upload = gr.File(label="Upload (GeoTIFF, JP2, PNG, JPEG)", type="filepath",
                                     file_types=list(handlers.RASTER_SUFFIXES), elem_id="geolens-upload", height=90)
                    cancel_open_btn = gr.Button("Cancel opening", visible=False, size="sm",
                                                elem_id="geolens-cancel-open")
                task_radio = gr.Radio(list(ALL_TASK_CHOICES), value="Ask", label="Task", elem_id="geolens-task")
                question_tb = gr.Textbox(label="Question", lines=2, placeholder=_QUESTION_HINTS[Task.ASK],
                                         max_length=services.config.max_question_chars, elem_id="geolens-question")
                labels = demo_labels() if services.model_status.is_demo else DEFAULT_LABELS
                labels_tb = gr.Textbox(label="Labels (comma-separated)", value=", ".join(labels),
                                       visible=False, elem_id="geolens-labels")
                # Find objects / counting questions on a region larger than one model input run
                # tile by tile; CLIP can rank the tiles first so only the most likely run (faster,
                # may miss some). No label: the choices say it (a laptop screen keeps Ask, the
                # answer and the status line in view).
                search_dd = gr.Dropdown(choices=list(SEARCH_TILE_CHOICES), value=next(iter(SEARCH_TILE_CHOICES)),
                                        show_label=False, container=False, elem_id="geolens-search-tiles")
                with gr.Row():
                    ask_btn = gr.Button("Ask" if ok else "Ask (no model loaded)", variant="primary",
                                        interactive=ok, elem_id="geolens-ask")
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="geolens-stop")
                stop_note = gr.Markdown(elem_id="geolens-stop-note")
                answer_tb = gr.Textbox(label="Answer", lines=3, max_lines=8, interactive=False,
                                       elem_id="geolens-answer")
                status_md = gr.Markdown(elem_id="geolens-status")
                evidence_df = gr.Dataframe(headers=EVIDENCE_COLUMNS, label="Evidence (retrieved descriptions)",
                                           interactive=False, wrap=True, max_height=220, elem_id="geolens-evidence")
        gr.Markdown("### Results  \nClick a row to select it and zoom the map to it (or use Select in a map popup).")
        with gr.Row(equal_height=True):
            filter_raster = gr.Dropdown(label="Raster", choices=[ALL_RASTERS], value=ALL_RASTERS,
                                        interactive=True, scale=3, elem_id="geolens-filter-raster")
            filter_task = gr.Dropdown(label="Task", choices=[ALL_TASKS, *ALL_TASK_CHOICES], value=ALL_TASKS,
                                      interactive=True, scale=2, elem_id="geolens-filter-task")
            prev_btn = gr.Button("◀ Newer", size="sm", scale=1, elem_id="geolens-page-prev")
            next_btn = gr.Button("Older ▶", size="sm", scale=1, elem_id="geolens-page-next")
            page_md = gr.Markdown(elem_id="geolens-page")
        results_df = gr.Dataframe(headers=handlers.RESULT_COLUMNS, interactive=False, wrap=True,
                                  elem_id="geolens-results")
        with gr.Row():
            delete_btn = gr.Button("Delete selected", elem_id="geolens-delete")
            export_fmt = gr.Radio(list(EXPORT_FORMAT_CHOICES), value="GeoJSON", label="Export as", scale=1,
                                  elem_id="geolens-export-format")
            export_sel_btn = gr.Button("Export selected", elem_id="geolens-export-selected")
            export_all_btn = gr.Button("Export all", elem_id="geolens-export-all")
            clear_btn = gr.Button("Clear all", variant="stop", elem_id="geolens-clear")
        export_file = gr.File(label="Exported files", file_count="multiple", interactive=False,
                              elem_id="geolens-export-file")
        selection = gr.State([])  # result ids this session selected
        offset = gr.State(0)  # first row of the table page shown
        act.c = {"raster_dd": raster_dd, "preset_dd": preset_dd, "map": the_map, "status": status_md,
                 "open_acc": open_acc, "filter_raster": filter_raster, "cancel_open": cancel_open_btn}

        light = {"show_progress": "hidden"}
        # Two dates: after every event that changes the shown raster (page load, choice, open, close)
        # the overlapping rasters are offered as "before" (app.compare).
        offer = {"fn": reported(compare_md)(act.offer_before), "inputs": [raster_dd, preset_dd, the_map],
                 "outputs": [before_dd, the_map, compare_md], **light}
        blocks.load(reported(status_md)(act.load), None,
                    [raster_dd, the_map, results_df, status_md, filter_raster, page_md]).then(**offer)
        # Only the analyst's own choices trigger these (.input, not .change): programmatic updates
        # (page load, opening a raster) send the map value themselves, so nothing races them.
        raster_dd.input(reported(status_md)(act.raster_changed), [raster_dd, preset_dd, the_map],
                        [the_map, preset_dd, status_md], **light).then(**offer)
        preset_dd.input(reported(status_md)(act.preset_changed), [raster_dd, preset_dd, the_map],
                        [the_map, preset_dd, status_md], **light)
        opened = [raster_dd, preset_dd, the_map, status_md, open_acc, filter_raster, cancel_open_btn]
        # Opens run side by side (a big raster's COG copy must not block another analyst's open).
        for trigger in (open_btn.click, path_tb.submit):
            trigger(reported(status_md)(act.open_path), [path_tb, the_map], opened, concurrency_limit=8,
                    concurrency_id="open").then(**offer)
        upload.upload(reported(status_md)(act.open_upload), [upload, the_map], opened, concurrency_limit=8,
                      concurrency_id="open").then(**offer)
        cancel_open_btn.click(act.cancel_open, None, [status_md, cancel_open_btn], queue=False, **light)
        close_btn.click(reported(status_md)(act.close_raster), [raster_dd, the_map, selection],
                        [raster_dd, preset_dd, the_map, status_md, filter_raster]).then(**offer)
        # The analyst's own "before" choice redraws the comparison.
        before_dd.input(reported(compare_md)(act.compare_changed), [raster_dd, before_dd, preset_dd, the_map],
                        [the_map, compare_md], **light)
        the_map.change(reported(region_md)(act.map_changed), [raster_dd, the_map], [region_md],
                       trigger_mode="always_last", **light)
        task_radio.change(readable_errors(act.task_changed), [task_radio], [labels_tb, question_tb, search_dd],
                          **light)

        # Ask: take a stop ticket at once (not queued), then queue the model work. Stop flips the
        # session's switch; the running (or still queued) answer ends at its next token. A tab
        # that closes stops its answer too.
        control, ticket = gr.State(handlers.AskControl()), gr.State(0)
        table_inputs = [offset, filter_raster, filter_task]
        ask_inputs = [raster_dd, preset_dd, task_radio, question_tb, labels_tb, search_dd, the_map, control,
                      ticket, selection, *table_inputs]
        ask_outputs = [answer_tb, evidence_df, the_map, results_df, status_md, page_md]
        for trigger, name in ((ask_btn.click, "ask"), (question_tb.submit, "ask_submit")):
            trigger(act.take_ticket, [control], [ticket, stop_note], queue=False, api_visibility="private",
                    **light).then(
                reported(status_md)(act.ask), ask_inputs, ask_outputs, concurrency_limit=1,
                concurrency_id=ENGINE_CONCURRENCY_ID, api_name=name)
        stop_btn.click(act.stop, [control], [stop_note], queue=False, **light)
        blocks.unload(act.page_closed)

        # The selection lives in this session's state; the map only shows it. Rows and map popups
        # ("result_toggle", sent by assets/map/map.js) toggle it; a row click also zooms to it.
        toggled = [the_map, results_df, selection, page_md]
        results_df.select(reported(page_md)(act.select_row),
                          [raster_dd, preset_dd, the_map, selection, *table_inputs], toggled, **light)
        the_map.result_toggle(reported(page_md)(act.popup_toggle),
                              [raster_dd, preset_dd, the_map, selection, *table_inputs], toggled, **light)
        paged = [results_df, page_md, offset]
        prev_btn.click(reported(page_md)(functools.partial(act.page, step=-1)),
                       [selection, *table_inputs], paged, **light)
        next_btn.click(reported(page_md)(functools.partial(act.page, step=1)),
                       [selection, *table_inputs], paged, **light)
        for flt in (filter_raster, filter_task):
            flt.input(reported(page_md)(functools.partial(act.page, step=0)),
                      [selection, gr.State(0), filter_raster, filter_task], paged, **light)
        delete_btn.click(reported(status_md)(act.delete), [raster_dd, preset_dd, the_map, selection, *table_inputs],
                         [the_map, results_df, status_md, selection, page_md, offset])
        export_all_btn.click(reported(status_md)(act.export_all), [export_fmt], [export_file, status_md])
        export_sel_btn.click(reported(status_md)(act.export_selected), [selection, export_fmt],
                             [export_file, status_md])
        clear_btn.click(reported(status_md)(act.clear), [raster_dd, preset_dd, the_map],
                        [the_map, results_df, status_md, export_file, selection, page_md, offset])
    return blocks
