"""Two dates: compare a "before" raster with the shown ("after") raster and ask what changed.

Handlers (plain typed functions, no Gradio types; :mod:`app.ui` wires them):

* :func:`before_choices` / :func:`suggest_before`: the other open rasters that overlap the shown
  one on the ground, offered as "before"; the suggestion is the latest one acquired earlier than
  the shown raster (else the first overlapping one), so two overlapping rasters are compared as
  soon as both are open.
* :func:`map_compare`: the map value's ``compare`` member, ``{"after", "before", names, dates}``
  (``before`` None: no comparison). The map shows it as a swipe (the vendored
  ``leaflet-side-by-side``: before on the left of the divider, after on the right). It follows
  the shown raster: when that changes, the suggestion for the new one is taken.
* :func:`app.handlers.ask_change` (with :func:`prepare_pair`, :func:`stream_change` and
  :func:`build_change_record` here): one change question (:data:`CHANGE_TASK_CHOICES`) about the drawn region:

      DrawnRegion ─tiles.read_crop_pair(before, after, grid = the after raster's)→ CropPair
      CropPair ─engine.stream(after crop, task, question, before=before crop)→ Answer
      Answer.boxes_px (after-crop pixels = the common grid) ─tiles.boxes_to_result_space→ lon/lat
      → ResultRecord(raster = the after raster, change = both names and dates)

Acquisition dates (:func:`acquisition_date`) come from the raster's metadata when it has them:
the GDAL metadata items ``ACQUISITIONDATE`` (also ``ACQUISITION_DATE``, ``DATE_ACQUIRED``) or
``TIFFTAG_DATETIME`` (the TIFF DateTime tag; strictly the file's creation time, used only when
no acquisition item exists), else a date written in the file name (``20090818``,
``2009-08-18`` or ``2009_08_18``, as in NAIP's ``m_4709963_se_14_1_20090818.tif``). Each date
says where it was read (``*_date_from``); no date is ever guessed beyond these.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from app.asking import TASK_CHOICES, answer_pieces, evidence_dicts
from app.errors import UserInputError
from app.map_view import DrawnRegion
from app.results import ResultBox, ResultRecord
from engine.types import Answer, Task

if TYPE_CHECKING:
    from app.services import AppServices
    from tiles import CropPair, Raster, RasterSource

__all__ = [
    "ALL_TASK_CHOICES",
    "CHANGE_QUESTION_HINTS",
    "CHANGE_TASK_CHOICES",
    "DATE_ITEMS",
    "NO_BEFORE",
    "AcquisitionDate",
    "ChangeRequest",
    "PreparedPair",
    "acquisition_date",
    "before_choices",
    "build_change_record",
    "compare_line",
    "map_compare",
    "overlapping_rasters",
    "prepare_pair",
    "suggest_before",
]

log = logging.getLogger(__name__)

# UI name -> engine change task (shown after the single-image tasks, in this order).
CHANGE_TASK_CHOICES: dict[str, Task] = {
    "What changed?": Task.CHANGE_CAPTION,
    "Find new …": Task.CHANGE_GROUND,
    "Ask about change": Task.CHANGE_ASK,
}
ALL_TASK_CHOICES: dict[str, Task] = {**TASK_CHOICES, **CHANGE_TASK_CHOICES}
CHANGE_QUESTION_HINTS = {
    Task.CHANGE_CAPTION: "(optional) what to focus on; compares the 'Before' raster with this one",
    Task.CHANGE_GROUND: "what is new, e.g. buildings, storage tanks (boxes on the after raster)",
    Task.CHANGE_ASK: "a question about the change, e.g. Was the pond filled?",
}
NO_BEFORE = ""  # the "Before" selector's value for "no comparison"
NO_BEFORE_LABEL = "No comparison"
# Metadata items read for the acquisition date, in this order (TIFFTAG_DATETIME last: it is the
# file's DateTime tag, often the processing time, so a real acquisition item wins).
DATE_ITEMS = ("ACQUISITIONDATE", "ACQUISITION_DATE", "DATE_ACQUIRED", "TIFFTAG_DATETIME")
_NAME_DATE = re.compile(r"(?<!\d)((?:19|20)\d{2})[-_]?(0[1-9]|1[0-2])[-_]?(0[1-9]|[12]\d|3[01])(?!\d)")
_NEEDS_QUESTION = {Task.CHANGE_GROUND: "what to find (e.g. 'new buildings')",
                   Task.CHANGE_ASK: "a question about the change"}


# -- acquisition dates -------------------------------------------------------------------------
@dataclass(frozen=True)
class AcquisitionDate:
    """A raster's date (ISO ``YYYY-MM-DD``) and where it was read (a metadata item or
    ``"file name"``)."""

    iso: str
    source: str


def _parse_date(text: str) -> str | None:
    text = text.strip()
    for pattern, size in (("%Y:%m:%d", 10), ("%Y-%m-%d", 10), ("%Y/%m/%d", 10), ("%Y%m%d", 8)):
        try:
            return datetime.strptime(text[:size], pattern).date().isoformat()
        except ValueError:
            continue
    return None


def _date_in_name(name: str) -> str | None:
    for match in _NAME_DATE.finditer(name):
        try:
            return date(int(match.group(1)), int(match.group(2)), int(match.group(3))).isoformat()
        except ValueError:
            continue
    return None


def acquisition_date(raster: Raster, source: RasterSource | None = None) -> AcquisitionDate | None:
    """The raster's acquisition date from its metadata (:data:`DATE_ITEMS`) or its file name;
    None when neither has one. ``source``: the catalog's pooled datasets of the raster."""
    from tiles.reading import raster_handle

    try:
        with raster_handle(raster, "metadata", source=source) as (handle, _):
            tags = handle.dataset.tags()
    except Exception:  # a date is optional; an unreadable file fails on its read
        log.warning("metadata of %s could not be read for its date", raster.path, exc_info=True)
        tags = {}
    for item in DATE_ITEMS:
        found = _parse_date(str(tags[item])) if item in tags else None
        if found:
            return AcquisitionDate(found, item)
    found = _date_in_name(raster.name)
    return AcquisitionDate(found, "file name") if found else None


def _date_of(services: AppServices, raster: Raster) -> AcquisitionDate | None:
    return acquisition_date(raster, services.catalog.source(raster.raster_id))


# -- which rasters can be compared -------------------------------------------------------------
def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def overlapping_rasters(services: AppServices, after_id: str | None) -> list[Raster]:
    """The other open georeferenced rasters whose lon/lat footprint overlaps ``after_id``'s."""
    if not after_id or after_id not in services.catalog:
        return []
    after = services.raster(after_id)
    if not after.georeferenced:
        return []
    return [r for r in services.catalog_list()
            if r.raster_id != after_id and r.georeferenced
            and _overlap(r.bounds_lonlat, after.bounds_lonlat)]


def suggest_before(services: AppServices, after_id: str | None) -> str:
    """The overlapping raster to compare with by default: the latest one acquired before
    ``after_id`` (dates from :func:`acquisition_date`), else the first overlapping one;
    :data:`NO_BEFORE` when none overlaps."""
    candidates = overlapping_rasters(services, after_id)
    if not candidates:
        return NO_BEFORE
    after_date = _date_of(services, services.raster(after_id))
    if after_date is not None:
        dated = [(d.iso, r.raster_id) for r in candidates
                 if (d := _date_of(services, r)) is not None and d.iso < after_date.iso]
        if dated:
            return max(dated)[1]
    return candidates[0].raster_id


def _label(raster: Raster, found: AcquisitionDate | None) -> str:
    return f"{raster.name} ({found.iso})" if found else raster.name


def before_choices(services: AppServices, after_id: str | None) -> list[tuple[str, str]]:
    """(label, catalog id) for the "Before" selector: "No comparison" and every overlapping
    raster (with its date when known)."""
    return [(NO_BEFORE_LABEL, NO_BEFORE)] + [
        (_label(r, _date_of(services, r)), r.raster_id) for r in overlapping_rasters(services, after_id)
    ]


def _change_props(services: AppServices, before: Raster, after: Raster) -> dict[str, Any]:
    before_date, after_date = _date_of(services, before), _date_of(services, after)
    return {
        "before_raster": before.name, "after_raster": after.name,
        "before_date": before_date.iso if before_date else None,
        "after_date": after_date.iso if after_date else None,
        "before_date_from": before_date.source if before_date else None,
        "after_date_from": after_date.source if after_date else None,
    }


def map_compare(services: AppServices, active_id: str | None, previous: Mapping[str, Any] | None,
                before_id: str | None = None) -> dict[str, Any] | None:
    """The map value's ``compare`` member for the shown raster ``active_id``.

    ``before_id``: the analyst's choice (:data:`NO_BEFORE`: no comparison); None keeps the
    previous choice while the shown raster is the same, and takes :func:`suggest_before` for a
    newly shown raster. Returns None when nothing is shown."""
    if not active_id or active_id not in services.catalog:
        return None
    if before_id is None:
        prev = previous.get("compare") if isinstance(previous, Mapping) else None
        if isinstance(prev, Mapping) and prev.get("after") == active_id:
            before_id = prev.get("before") or NO_BEFORE
        else:
            before_id = suggest_before(services, active_id)
    if before_id and before_id not in {r.raster_id for r in overlapping_rasters(services, active_id)}:
        before_id = NO_BEFORE  # closed, or not over the same ground
    if not before_id:
        return {"after": active_id, "before": None}
    before, after = services.raster(before_id), services.raster(active_id)
    return {"after": active_id, "before": before_id, **_change_props(services, before, after)}


def compare_line(compare: Mapping[str, Any] | None) -> str:
    """One line about the comparison shown (for the line under the selectors)."""
    if not compare or not compare.get("before"):
        return ("No comparison. To compare two dates, open a second raster of the same place "
                "and choose it as 'Before'.")

    def dated(name: str, when: str | None, source: str | None) -> str:
        return f"{name} ({when}, from {source})" if when else f"{name} (date unknown)"

    line = (f"Comparing before {dated(compare['before_raster'], compare['before_date'], compare['before_date_from'])}"
            f" with after {dated(compare['after_raster'], compare['after_date'], compare['after_date_from'])}: "
            "drag the divider on the map; 'What changed?' and 'Find new …' ask about both dates.")
    if compare.get("before_date") and compare.get("after_date") and compare["before_date"] > compare["after_date"]:
        line += " Note: the 'before' raster is the later one; pick the other raster to swap them."
    return line


# -- asking about change -----------------------------------------------------------------------
@dataclass(frozen=True)
class ChangeRequest:
    """A change question: ``after_id`` (the shown raster) against ``before_id`` about
    ``region`` (None: their whole shared ground), bands from ``preset``."""

    after_id: str
    before_id: str | None
    task: Task
    question: str | None = None
    preset: str | None = None
    region: DrawnRegion | None = None

    def __post_init__(self) -> None:
        if not self.after_id:
            raise UserInputError("no raster is open: open two rasters of the same place to compare them")
        if not self.task.is_change:
            raise UserInputError(f"task {self.task.value!r} is not a change task; use one of "
                                 f"{', '.join(CHANGE_TASK_CHOICES)}")
        if not self.before_id:
            raise UserInputError(
                "this task compares two dates: choose a 'Before' raster (open a second raster of the "
                "same place first; overlapping rasters are offered there)")
        if self.before_id == self.after_id:
            raise UserInputError("'Before' is the raster shown; choose another raster as 'Before'")
        need = _NEEDS_QUESTION.get(self.task)
        if need and not (self.question or "").strip():
            raise UserInputError(f"the task '{self.task.value}' needs {need}: type it in the question box")
        if self.region is not None and self.region.raster_id not in (None, self.after_id):
            raise UserInputError("the drawing was made on another raster than the one shown: draw the "
                                 "region again")


@dataclass(frozen=True)
class PreparedPair:
    """The model's two inputs on one grid and where the result goes on the map."""

    pair: CropPair
    region_geometry: dict[str, Any]  # the result's region, lon/lat
    change: dict[str, Any]  # names and dates (ResultRecord.change)


def prepare_pair(services: AppServices, request: ChangeRequest) -> PreparedPair:
    """Read the before and after rasters over the request's region onto the after raster's
    grid (``tiles.read_crop_pair``, bilinear, at most ``max_crop_px`` per side)."""
    from rasterio.windows import Window

    from tiles import boxes_to_result_space, point_square, read_crop_pair, to_feature

    after, before = services.raster(request.after_id), services.raster(request.before_id)
    for role, raster in (("after (shown)", after), ("before", before)):
        if not raster.georeferenced:
            raise UserInputError(f"the {role} raster {raster.name!r} is a plain image without map "
                                 "coordinates; two dates can be compared only on georeferenced rasters")
    region = request.region
    if region is not None and region.space != "lonlat":
        raise UserInputError("the drawing is in pixel coordinates; draw the region again on the map")
    config = services.config
    if region is None:
        geometry, crs = Window(0, 0, after.width, after.height), "pixel"
    else:
        geometry, crs = region.geometry, "EPSG:4326"
    pair = read_crop_pair(before, after, geometry, crs, region_raster="after",
                          max_side=config.max_crop_px, preset=request.preset,
                          before_source=services.catalog.source(before.raster_id),
                          after_source=services.catalog.source(after.raster_id),
                          point_size_m=config.point_size_m)
    if region is None:
        _, (geom,) = boxes_to_result_space(pair.after, [(0.0, 0.0, pair.width, pair.height)])
    elif region.shape == "point":
        x, y = region.geometry["coordinates"][:2]
        geom = point_square(x, y, "EPSG:4326", point_size_m=config.point_size_m)
    else:
        geom = region.geometry
    geometry_out = to_feature(geom, {}, coordinate_space="lonlat")["geometry"]
    return PreparedPair(pair=pair, region_geometry=geometry_out,
                        change=_change_props(services, before, after))


def stream_change(engine, prepared: PreparedPair, request: ChangeRequest) -> Iterator[str | None | Answer]:
    """The change answer as it is generated (pieces as :func:`app.asking.stream_answer`)."""
    return answer_pieces(engine.stream(prepared.pair.after.image, request.task,
                                       question=request.question or None,
                                       before=prepared.pair.before.image))


def _readable(task: Task, question: str | None, answer: Answer, demo_on_real: bool) -> str:
    from app.asking import DEMO_REAL_NOTE

    text = answer.text.strip()
    if task is Task.CHANGE_GROUND:
        n = len(answer.boxes_px)
        what = " ".join((question or "changes").strip().rstrip("?.!").split())
        text = (f"{n} found: {what} (boxes on the after raster)." if n
                else f"None found: {what} (no change boxes in this region).")
    if demo_on_real:
        text = f"{text}\n\n{DEMO_REAL_NOTE}"
    return text


def build_change_record(request: ChangeRequest, prepared: PreparedPair, answer: Answer, after: Raster,
                        model: str, adapter: str | None, *, demo_on_real: bool = False) -> ResultRecord:
    """The stored result of one change answer: region and boxes in lon/lat (boxes are in the
    after crop's pixels, which is the pair's common grid), both rasters' names and dates."""
    from tiles import boxes_to_result_space, to_feature

    pair = prepared.pair
    boxes: tuple[ResultBox, ...] = ()
    if answer.boxes_px:
        space, polygons = boxes_to_result_space(pair.after, answer.boxes_px)
        boxes = tuple(ResultBox(geometry=to_feature(poly, {}, coordinate_space=space)["geometry"],
                                label=box.label, score=box.score)
                      for poly, box in zip(polygons, answer.boxes_px, strict=True))
    w = pair.grid_window
    return ResultRecord(
        task=request.task.value, question=request.question or None,
        answer=_readable(request.task, request.question, answer, demo_on_real),
        model=answer.model or model, adapter=answer.adapter or adapter, raster=str(after.path),
        window={"col_off": int(w.col_off), "row_off": int(w.row_off), "width": int(w.width),
                "height": int(w.height)},
        region=prepared.region_geometry, coordinate_space="lonlat", crs=after.crs_label,
        label=answer.label, boxes=boxes, evidence=evidence_dicts(answer),
        whole_raster=request.region is None,
        model_output=answer.text if request.task is Task.CHANGE_GROUND or demo_on_real else None,
        change=prepared.change,
    )


def is_demo_pair(services: AppServices, before: Raster, after: Raster) -> bool:
    from app.demo import demo_before_raster

    twin = demo_before_raster()
    return services.is_demo_raster(after) and twin is not None and before.path.resolve() == twin.resolve()
