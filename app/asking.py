"""One question about one region: drawn region -> crop -> engine -> result record.

This is the data flow of DESIGN.md, wired from ``tiles`` and ``engine`` calls; the app does no
raster maths of its own, it only picks which ``tiles`` step to take:

    DrawnRegion ─tiles.region_window→ Window (─tiles.context_window→ Window, "Ask about box")
    Window ─tiles.read_crop(source=the catalog's)→ Crop ─engine.stream→ Answer
    Answer.boxes_px ─tiles.boxes_to_result_space(crop)→ polygons (lon/lat or raster pixels)
    polygons ─tiles.to_feature→ ResultRecord

The region Feature of a result is the shape the analyst drew (exactly, so an export matches the
drawing), the ground square of a clicked point, or the whole raster when nothing was drawn.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.errors import UserInputError
from app.map_view import DrawnRegion
from app.results import ResultBox, ResultRecord
from engine.types import Answer, BoxPx, Task

if TYPE_CHECKING:
    from rasterio.windows import Window

    from engine.engine import Engine
    from tiles import Crop, Raster, RasterSource

__all__ = [
    "DEFAULT_LABELS",
    "REGION_CONTEXT",
    "TASK_CHOICES",
    "AskRequest",
    "PreparedCrop",
    "build_record",
    "drawn_window",
    "evidence_dicts",
    "parse_labels",
    "prepare_crop",
    "readable_answer",
    "stream_answer",
]

# UI name -> engine task (the registry the task selector shows, in this order).
TASK_CHOICES: dict[str, Task] = {
    "Ask": Task.ASK,
    "Describe region": Task.CAPTION,
    "Find objects": Task.GROUND,
    "Classify scene": Task.CLASSIFY,
    "Ask about box": Task.REGION,
}
DEFAULT_LABELS = ("farmland", "forest", "grassland", "residential", "industrial", "river or lake",
                  "parking lot", "airport", "harbor")
REGION_CONTEXT = 2.0  # "Ask about box": the crop shows the box plus this much context (side ratio)
_NEEDS_QUESTION = {Task.ASK: "a question", Task.GROUND: "what to find (e.g. 'storage tanks')",
                   Task.REGION: "a question about the box"}


@dataclass(frozen=True)
class AskRequest:
    """What the analyst asked: on raster ``raster_id`` (catalog id), about ``region`` (None:
    the whole raster), with bands from ``preset``."""

    raster_id: str
    task: Task
    question: str | None = None
    labels: tuple[str, ...] = ()
    preset: str | None = None
    region: DrawnRegion | None = None
    # A whole-scene search runs only this fraction of its tiles, those the retriever's CLIP
    # finds most like the query (app.scene_search; None: every tile).
    search_top: float | None = None

    def __post_init__(self) -> None:
        if not self.raster_id:
            raise UserInputError("no raster is open: open one (path or upload) before asking")
        if self.search_top is not None and (isinstance(self.search_top, bool)
                                            or not 0.0 < float(self.search_top) <= 1.0):
            raise UserInputError(f"the share of tiles to search must be in (0, 1], e.g. 0.25 for the "
                                 f"most likely quarter; got {self.search_top!r}")
        need = _NEEDS_QUESTION.get(self.task)
        if need and not (self.question or "").strip():
            raise UserInputError(f"the task '{self.task.value}' needs {need}: type it in the question box")
        if self.task is Task.CLASSIFY and len(self.labels) < 2:
            raise UserInputError(
                f"'Classify scene' needs at least two labels separated by commas, got {list(self.labels)}"
            )
        if self.task is Task.REGION and self.region is None:
            raise UserInputError("'Ask about box' needs a box: draw a rectangle on the map first")
        if self.region is not None and self.region.raster_id not in (None, self.raster_id):
            raise UserInputError("the drawing was made on another raster than the one selected: "
                                 "draw the region again on this raster (or select the other raster)")


@dataclass(frozen=True)
class PreparedCrop:
    """The model's input for one request and where its result goes on the map."""

    crop: Crop
    region_px: BoxPx | None  # the asked-about box in crop pixels (task "region" only)
    region_geometry: dict[str, Any]  # result region: lon/lat, or raster pixels when not georeferenced
    coordinate_space: str  # "lonlat" or "pixel"


def _geometry_crs(region: DrawnRegion) -> str:
    """The ``tiles`` name of the space a drawing's coordinates are in."""
    return "EPSG:4326" if region.space == "lonlat" else "pixel"


def drawn_window(raster: Raster, region: DrawnRegion, *, point_size_m: float, point_size_px: float) -> Window:
    """The raster window a drawing covers (``tiles.region_window``; a point: its square)."""
    from tiles import region_window

    return region_window(raster, region.geometry, _geometry_crs(region),
                         point_size_m=point_size_m, point_size_px=point_size_px)


def _region_geometry(crop: Crop, region: DrawnRegion | None, space: str,
                     point_size_m: float, point_size_px: float) -> dict[str, Any]:
    from tiles import boxes_to_result_space, point_square, to_feature

    if region is None:  # the whole crop: its exact footprint
        _, (geom,) = boxes_to_result_space(crop, [(0.0, 0.0, crop.width, crop.height)])
    elif region.shape == "point":  # the square the point stands for
        x, y = region.geometry["coordinates"][:2]
        geom = point_square(x, y, _geometry_crs(region), point_size_m=point_size_m,
                            point_size_px=point_size_px)
    else:
        geom = region.geometry
    return to_feature(geom, {}, coordinate_space=space, image=crop.image_name)["geometry"]


def prepare_crop(raster: Raster, request: AskRequest, *, max_crop_px: int, point_size_m: float,
                 point_size_px: float, source: RasterSource | None = None) -> PreparedCrop:
    """Window for the request, the crop the model sees, and the result's region geometry.
    ``source``: the raster's open datasets in the catalog (None: the file is opened for this call)."""
    from tiles import context_window, full_window, read_crop, window_box_in_crop

    space = "lonlat" if raster.georeferenced else "pixel"
    region = request.region
    if region is not None and region.space == "lonlat" and not raster.georeferenced:
        raise UserInputError(f"{raster.name!r} is a plain image without map coordinates: draw the region again on it")
    window = (drawn_window(raster, region, point_size_m=point_size_m, point_size_px=point_size_px)
              if region is not None else full_window(raster))
    read_window = context_window(raster, window, REGION_CONTEXT) if request.task is Task.REGION else window
    crop = read_crop(raster, read_window, max_crop_px, preset=request.preset, source=source)
    region_px = BoxPx(*window_box_in_crop(crop, window)) if request.task is Task.REGION else None
    geometry = _region_geometry(crop, region, space, point_size_m, point_size_px)
    return PreparedCrop(crop=crop, region_px=region_px, region_geometry=geometry, coordinate_space=space)


def stream_answer(engine: Engine, prepared: PreparedCrop, request: AskRequest) -> Iterator[str | None | Answer]:
    """The answer as it is generated: text pieces (``str``), ``None`` when the engine restarts
    the answer (a retry after running out of GPU memory: drop the text so far), and finally the
    :class:`Answer`."""
    return answer_pieces(engine.stream(
        prepared.crop.image, request.task, question=request.question or None,
        region_px=prepared.region_px.xyxy if prepared.region_px is not None else None,
        labels=list(request.labels) or None,
    ))


def answer_pieces(events: Iterator) -> Iterator[str | None | Answer]:
    """An engine's stream events as :func:`stream_answer`'s pieces; closing the pieces closes the
    events (stopping early ends generation now and frees the engine)."""
    from engine.generation import Final, Reset, TextDelta

    try:
        for event in events:
            if isinstance(event, TextDelta):
                yield event.text
            elif isinstance(event, Reset):
                yield None
            elif isinstance(event, Final):
                yield event.answer
    finally:
        events.close()


def _boxes(prepared: PreparedCrop, answer: Answer) -> tuple[ResultBox, ...]:
    from tiles import boxes_to_result_space, to_feature

    if not answer.boxes_px:
        return ()
    space, polygons = boxes_to_result_space(prepared.crop, answer.boxes_px)
    return tuple(
        ResultBox(geometry=to_feature(poly, {}, coordinate_space=space,
                                      image=prepared.crop.image_name)["geometry"],
                  label=box.label, score=box.score)
        for poly, box in zip(polygons, answer.boxes_px, strict=True)
    )


def evidence_dicts(answer: Answer) -> tuple[dict[str, Any], ...]:
    """The answer's retrieved descriptions as plain dicts (text, score, source, level)."""
    return tuple({"text": e.text, "score": round(float(e.score), 4), "source": e.source, "level": e.level}
                 for e in answer.evidence)


def _count_phrase(n: int, phrase: str) -> str:
    """``3 storage tanks`` / ``1 storage tank`` / ``no storage tanks`` for what was asked for."""
    phrase = " ".join(phrase.strip().rstrip("?.!").split())
    for article in ("the ", "a ", "an ", "all ", "any "):
        if phrase.lower().startswith(article):
            phrase = phrase[len(article):]
            break
    if n == 1 and phrase.endswith("s") and not phrase.endswith("ss"):
        phrase = phrase[:-1]
    return f"{n if n else 'No'} {phrase}"


DEMO_REAL_NOTE = ("Note: this is GeoLens's demo model, trained only on synthetic scenes; its answers "
                  "about real imagery are not reliable. Start GeoLens with --model for a real model.")


def readable_answer(task: Task, question: str | None, answer: Answer, *, demo_on_real: bool = False) -> str:
    """The answer as the analyst reads it: a grounding answer says what was found ("2 storage
    tanks (boxes on the map)") instead of raw box coordinates; ``demo_on_real`` adds the note that
    the demo model does not know real imagery."""
    text = answer.text.strip()
    if task is Task.GROUND:
        n = len(answer.boxes_px)
        what = _count_phrase(n, question or "objects")
        text = f"{what} found (boxes on the map)." if n else f"{what} found in this region."
    if demo_on_real:
        text = f"{text}\n\n{DEMO_REAL_NOTE}"
    return text


def build_record(raster: Raster, request: AskRequest, prepared: PreparedCrop, answer: Answer,
                 model: str, adapter: str | None, *, demo_on_real: bool = False) -> ResultRecord:
    """The stored result of one answer (region + boxes)."""
    w = prepared.crop.window
    window = {"col_off": int(w.col_off), "row_off": int(w.row_off),
              "width": int(w.width), "height": int(w.height)}
    return ResultRecord(
        task=request.task.value, question=request.question or None,
        answer=readable_answer(request.task, request.question, answer, demo_on_real=demo_on_real),
        model=answer.model or model, adapter=answer.adapter or adapter, raster=str(raster.path),
        window=window, region=prepared.region_geometry, coordinate_space=prepared.coordinate_space,
        crs=raster.crs_label, label=answer.label, boxes=_boxes(prepared, answer),
        evidence=evidence_dicts(answer), whole_raster=request.region is None,
        model_output=answer.text if request.task is Task.GROUND or demo_on_real else None,
    )


def parse_labels(text: str | None) -> tuple[str, ...]:
    """Comma- or newline-separated class labels, stripped, empty ones dropped, order kept."""
    parts = [p.strip() for p in (text or "").replace("\n", ",").split(",")]
    return tuple(dict.fromkeys(p for p in parts if p))

