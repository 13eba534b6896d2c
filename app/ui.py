"""The Gradio layout and event wiring. Layout only: every action is a function in
:mod:`app.handlers`; here they are adapted to components and their errors become ``gr.Error``.

Model work is one queue: every event that runs the engine shares ``concurrency_id="engine"``
with ``concurrency_limit=1``, so requests run one at a time in arrival order, while map tiles
(FastAPI routes, not the queue) and light events keep flowing. "Stop" cancels a running answer.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

import gradio as gr

from app import handlers
from app.asking import DEFAULT_LABELS, DEMO_LABELS, TASK_CHOICES, AskRequest, parse_labels
from app.errors import AppError
from app.map_view import build_map, drawn_region
from app.services import AppServices
from engine.errors import EngineError
from engine.types import Task

__all__ = ["ENGINE_CONCURRENCY_ID", "build_blocks", "readable_errors"]

log = logging.getLogger(__name__)

ENGINE_CONCURRENCY_ID = "engine"
EVIDENCE_COLUMNS = ["description", "score", "source", "level"]
_QUESTION_HINTS = {
    Task.ASK: "e.g. Is there a river in this area? How many buildings are there?",
    Task.CAPTION: "(optional) what to focus on",
    Task.GROUND: "what to find, e.g. buildings, storage tanks, ships",
    Task.CLASSIFY: "(optional) extra instructions",
    Task.REGION: "a question about the drawn box, e.g. What is inside the box?",
}


def _user_message(exc: Exception) -> str:
    from tiles import TilesError

    if isinstance(exc, (AppError, TilesError, EngineError)):
        return str(exc)
    log.exception("unexpected error in a UI action")
    return f"Unexpected error ({type(exc).__name__}: {exc}). Details are in the server log."


def readable_errors(fn: Callable) -> Callable:
    """Turn exceptions of ``fn`` (plain or generator) into ``gr.Error`` with a readable message,
    never a stack trace. ``gr.Error`` raised inside passes through unchanged."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any):
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:
                raise gr.Error(_user_message(exc)) from exc
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:
            raise gr.Error(_user_message(exc)) from exc
    return wrapper


def _evidence_rows(evidence: tuple[dict[str, Any], ...]) -> list[list[Any]]:
    return [[e["text"], e["score"], e["source"], e["level"] or ""] for e in evidence]


class _Actions:
    """Event functions bound to one :class:`AppServices` (adapters around app.handlers)."""

    def __init__(self, services: AppServices) -> None:
        self.s = services

    def load(self):
        ids = self.s.opened_ids or [r.raster_id for r in self.s.catalog_list()]
        active = ids[0] if ids else None
        value = handlers.map_update(self.s, active, "auto", fit=True)
        notice = self.s.store.recovery_notice
        status = f"⚠️ {notice}" if notice else "Ready. Draw a region on the map (or ask about the whole raster)."
        return (gr.Dropdown(choices=handlers.raster_choices(self.s), value=active), value,
                handlers.results_rows(self.s, value["selected"]), status)

    def raster_changed(self, raster_id, preset, value):
        from tiles import BandPresetError, select_bands

        if raster_id and preset not in (None, "auto"):
            try:
                select_bands(self.s.raster(raster_id), preset)
            except BandPresetError:
                preset = "auto"
        return handlers.map_update(self.s, raster_id, preset, value, fit=True), preset

    def preset_changed(self, raster_id, preset, value):
        from tiles import select_bands

        if raster_id and preset not in (None, "auto"):
            select_bands(self.s.raster(raster_id), preset)  # BandPresetError explains the mismatch
        return handlers.map_update(self.s, raster_id, preset, value)

    def _opened(self, raster_id: str, value):
        name = self.s.raster(raster_id).name
        new_value = handlers.map_update(self.s, raster_id, "auto", value, fit=True)
        return (gr.Dropdown(choices=handlers.raster_choices(self.s), value=raster_id), "auto", new_value,
                f"Opened {name}.")

    def open_path(self, path_text, value):
        return self._opened(handlers.open_raster_path(self.s, path_text), value)

    def open_upload(self, upload_path, value):
        return self._opened(handlers.open_raster_upload(self.s, upload_path), value)

    def map_changed(self, raster_id, value):
        return handlers.region_summary(self.s, raster_id, value)

    def task_changed(self, task_name):
        task = TASK_CHOICES[task_name]
        return (gr.Textbox(visible=task is Task.CLASSIFY),
                gr.Textbox(placeholder=_QUESTION_HINTS[task]))

    def take_ticket(self, control: handlers.AskControl) -> tuple[int, str]:
        return control.request(), ""

    def stop(self, control: handlers.AskControl) -> str:
        # Stop writes its own note, not the status line: the stopped answer reports "Stopped"
        # there itself, and two writers to one component would race.
        return "Stopping the current answer…" if control.stop() else "Nothing is running."

    def ask(self, raster_id, preset, task_name, question, labels_text, value,
            control: handlers.AskControl | None = None, ticket: int | None = None,
            selection: list[str] | None = None):
        request = AskRequest(
            raster_id=raster_id or "", task=TASK_CHOICES[task_name], question=(question or "").strip() or None,
            labels=parse_labels(labels_text) if TASK_CHOICES[task_name] is Task.CLASSIFY else (),
            preset=None if preset in (None, "auto") else preset, region=drawn_region(value),
        )
        should_stop = (lambda: control.is_stopped(ticket)) if control is not None else None
        yield "", [], gr.skip(), gr.skip(), "Answering… (queued behind other requests if any)"
        for progress in handlers.ask(self.s, request, should_stop):
            if progress.stopped:
                yield progress.text, gr.skip(), gr.skip(), gr.skip(), "Stopped: this answer was not saved."
            elif progress.record is None:
                yield progress.text, gr.skip(), gr.skip(), gr.skip(), "Answering…"
            else:
                new_value = handlers.map_update(self.s, raster_id, preset, value, selected=selection or [])
                n_boxes = len(progress.record.boxes)
                done = f"Answered ({progress.record.task}); result {progress.record.result_id} saved"
                done += f" with {n_boxes} box{'es' if n_boxes != 1 else ''}." if n_boxes else "."
                yield (progress.text, _evidence_rows(progress.evidence), new_value,
                       handlers.results_rows(self.s, new_value["selected"]), done)

    def _toggled(self, raster_id, preset, value, selection, result_id: str):
        chosen = handlers.toggle_selected(selection or [], result_id)
        new_value = handlers.map_update(self.s, raster_id, preset, value, selected=chosen)
        return new_value, handlers.results_rows(self.s, new_value["selected"]), new_value["selected"]

    def select_row(self, raster_id, preset, value, selection, evt: gr.SelectData):
        row = evt.row_value or []
        if len(row) < 2 or not row[1]:
            return gr.skip(), gr.skip(), gr.skip()
        return self._toggled(raster_id, preset, value, selection, str(row[1]))

    def popup_toggle(self, raster_id, preset, value, selection, evt: gr.EventData):
        return self._toggled(raster_id, preset, value, selection, str(evt.result_id))

    def delete(self, raster_id, preset, value, selection):
        message = handlers.delete_results(self.s, selection or [])
        new_value = handlers.map_update(self.s, raster_id, preset, value, selected=[])
        return new_value, handlers.results_rows(self.s, []), message, []

    def export_all(self):
        paths = handlers.export_results(self.s, None)
        return [str(p) for p in paths], f"Exported {len(self.s.store)} result(s): " + ", ".join(p.name for p in paths)

    def export_selected(self, selection):
        chosen = list(selection or [])
        paths = handlers.export_results(self.s, chosen)
        return [str(p) for p in paths], f"Exported {len(chosen)} selected result(s): " + ", ".join(p.name for p in paths)

    def clear(self, raster_id, preset, value):
        message = handlers.clear_results(self.s)
        new_value = handlers.map_update(self.s, raster_id, preset, value, selected=[])
        return new_value, handlers.results_rows(self.s, []), message, None, []


def _preset_choices() -> list[str]:
    from tiles.presets import known_preset_names

    return known_preset_names()


def build_blocks(services: AppServices) -> gr.Blocks:
    """The GeoLens UI for ``services`` (mount it with :func:`app.server.create_server_app`)."""
    act = _Actions(services)
    ok = services.model_status.loaded
    with gr.Blocks(title="GeoLens", fill_width=True) as blocks:
        with gr.Row(elem_classes="gl-title"):
            gr.Markdown("# GeoLens")
        gr.Markdown(("" if ok else "⚠️ ") + services.model_status.line, elem_id="geolens-model-status",
                    elem_classes=None if ok else "no-model")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=480):
                the_map = build_map()
                region_md = gr.Markdown(elem_id="geolens-region")
            with gr.Column(scale=2, min_width=360):
                with gr.Group():
                    # Choices are refreshed per page load; ids are checked by the catalog, so values
                    # from API clients (rasters opened after this page was built) are accepted.
                    raster_dd = gr.Dropdown(label="Raster", choices=handlers.raster_choices(services),
                                            allow_custom_value=True, interactive=True, elem_id="geolens-raster")
                    preset_dd = gr.Dropdown(label="Band preset (multispectral)", choices=_preset_choices(),
                                            value="auto", interactive=True, elem_id="geolens-preset")
                with gr.Accordion("Open a raster", open=False):
                    with gr.Row():
                        path_tb = gr.Textbox(label="Path on this machine", placeholder="/data/scene.tif",
                                             scale=4, elem_id="geolens-path")
                        open_btn = gr.Button("Open", scale=1, elem_id="geolens-open")
                    upload = gr.File(label="Upload (GeoTIFF, JP2, PNG, JPEG)", type="filepath",
                                     file_types=list(handlers.RASTER_SUFFIXES), elem_id="geolens-upload")
                task_radio = gr.Radio(list(TASK_CHOICES), value="Ask", label="Task", elem_id="geolens-task")
                question_tb = gr.Textbox(label="Question", lines=2, placeholder=_QUESTION_HINTS[Task.ASK],
                                         elem_id="geolens-question")
                labels = DEMO_LABELS if services.model_status.is_demo else DEFAULT_LABELS
                labels_tb = gr.Textbox(label="Labels (comma-separated)", value=", ".join(labels),
                                       visible=False, elem_id="geolens-labels")
                with gr.Row():
                    ask_btn = gr.Button("Ask" if ok else "Ask (no model loaded)", variant="primary",
                                        interactive=ok, elem_id="geolens-ask")
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="geolens-stop")
                stop_note = gr.Markdown(elem_id="geolens-stop-note")
                answer_tb = gr.Textbox(label="Answer", lines=6, interactive=False, elem_id="geolens-answer")
                status_md = gr.Markdown(elem_id="geolens-status")
                evidence_df = gr.Dataframe(headers=EVIDENCE_COLUMNS, label="Evidence (retrieved descriptions)",
                                           interactive=False, wrap=True, elem_id="geolens-evidence")
        gr.Markdown("### Results  \nClick rows to select them (or use Select in a map popup).")
        results_df = gr.Dataframe(headers=handlers.RESULT_COLUMNS, interactive=False, wrap=True,
                                  elem_id="geolens-results")
        with gr.Row():
            delete_btn = gr.Button("Delete selected", elem_id="geolens-delete")
            export_sel_btn = gr.Button("Export selected (GeoJSON)", elem_id="geolens-export-selected")
            export_all_btn = gr.Button("Export all (GeoJSON)", elem_id="geolens-export-all")
            clear_btn = gr.Button("Clear all", variant="stop", elem_id="geolens-clear")
        export_file = gr.File(label="Exported GeoJSON", file_count="multiple", interactive=False,
                              elem_id="geolens-export-file")
        selection = gr.State([])  # result ids this session selected

        light = {"show_progress": "hidden"}
        blocks.load(readable_errors(act.load), None, [raster_dd, the_map, results_df, status_md])
        # Only the analyst's own choices trigger these (.input, not .change): programmatic updates
        # (page load, opening a raster) send the map value themselves, so nothing races them.
        raster_dd.input(readable_errors(act.raster_changed), [raster_dd, preset_dd, the_map],
                        [the_map, preset_dd], **light)
        preset_dd.input(readable_errors(act.preset_changed), [raster_dd, preset_dd, the_map], [the_map], **light)
        opened = [raster_dd, preset_dd, the_map, status_md]
        for trigger in (open_btn.click, path_tb.submit):
            trigger(readable_errors(act.open_path), [path_tb, the_map], opened)
        upload.upload(readable_errors(act.open_upload), [upload, the_map], opened)
        the_map.change(readable_errors(act.map_changed), [raster_dd, the_map], [region_md],
                       trigger_mode="always_last", **light)
        task_radio.change(readable_errors(act.task_changed), [task_radio], [labels_tb, question_tb], **light)

        # Ask: take a stop ticket at once (not queued), then queue the model work. Stop flips the
        # session's switch; the running (or still queued) answer ends at its next token.
        control, ticket = gr.State(handlers.AskControl()), gr.State(0)
        ask_inputs = [raster_dd, preset_dd, task_radio, question_tb, labels_tb, the_map, control, ticket,
                      selection]
        ask_outputs = [answer_tb, evidence_df, the_map, results_df, status_md]
        for trigger, name in ((ask_btn.click, "ask"), (question_tb.submit, "ask_submit")):
            trigger(act.take_ticket, [control], [ticket, stop_note], queue=False, api_visibility="private",
                    **light).then(
                readable_errors(act.ask), ask_inputs, ask_outputs, concurrency_limit=1,
                concurrency_id=ENGINE_CONCURRENCY_ID, api_name=name)
        stop_btn.click(act.stop, [control], [stop_note], queue=False, **light)

        # The selection lives in this session's state; the map only shows it. Rows and map popups
        # ("result_toggle", sent by assets/map/map.js) toggle it.
        toggled = [the_map, results_df, selection]
        results_df.select(readable_errors(act.select_row), [raster_dd, preset_dd, the_map, selection], toggled,
                          **light)
        the_map.result_toggle(readable_errors(act.popup_toggle), [raster_dd, preset_dd, the_map, selection],
                              toggled, **light)
        delete_btn.click(readable_errors(act.delete), [raster_dd, preset_dd, the_map, selection],
                         [the_map, results_df, status_md, selection])
        export_all_btn.click(readable_errors(act.export_all), None, [export_file, status_md])
        export_sel_btn.click(readable_errors(act.export_selected), [selection], [export_file, status_md])
        clear_btn.click(readable_errors(act.clear), [raster_dd, preset_dd, the_map],
                        [the_map, results_df, status_md, export_file, selection])
    return blocks
