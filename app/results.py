"""Results store: every answer becomes GeoJSON Features kept in one file in the workspace.

One answer is one :class:`ResultRecord`: the region that was asked about plus any boxes the model
returned. It is stored as Features (``kind`` = ``"region"`` or ``"box"``) that share a
``result_id``. Georeferenced results are stored in lon/lat (EPSG:4326, lon first); results on
plain images stay in raster pixels (``coordinate_space`` = ``"pixel"``, x right, y down).

The file is a FeatureCollection rewritten atomically (temp file in the same folder, fsync,
``os.replace``) after every change, so a crash never leaves half a file. It is loaded again on
start. A file that cannot be parsed is never overwritten: it is moved aside with a timestamp and
:attr:`ResultsStore.recovery_notice` says where it went.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.errors import ResultsStoreError

__all__ = [
    "COORDINATE_SPACES",
    "RESULTS_FILENAME",
    "ResultBox",
    "ResultRecord",
    "ResultSummary",
    "ResultsStore",
    "new_result_id",
    "utc_now_iso",
]

log = logging.getLogger(__name__)

RESULTS_FILENAME = "results.geojson"
COORDINATE_SPACES = ("lonlat", "pixel")
_GEOMETRY_TYPES = ("Point", "Polygon", "MultiPolygon", "LineString", "MultiPoint")


def new_result_id() -> str:
    """A short random id (12 hex digits) shared by the Features of one answer."""
    return uuid.uuid4().hex[:12]


def utc_now_iso() -> str:
    """Now as ISO 8601 in UTC with seconds precision, e.g. ``2025-01-31T12:00:00Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_geometry(geometry: Mapping[str, Any], what: str) -> None:
    if not isinstance(geometry, Mapping) or geometry.get("type") not in _GEOMETRY_TYPES:
        kind = geometry.get("type") if isinstance(geometry, Mapping) else type(geometry).__name__
        raise ValueError(f"{what} must be a GeoJSON geometry ({', '.join(_GEOMETRY_TYPES)}), got {kind!r}")
    if "coordinates" not in geometry:
        raise ValueError(f"{what} has no 'coordinates' member: {dict(geometry)!r:.200}")


@dataclass(frozen=True)
class ResultBox:
    """One detected box as a polygon in the record's coordinate space."""

    geometry: dict[str, Any]
    label: str | None = None
    score: float | None = None

    def __post_init__(self) -> None:
        _check_geometry(self.geometry, "ResultBox.geometry")
        if self.score is not None and not math.isfinite(self.score):
            raise ValueError(f"ResultBox.score must be finite, got {self.score}")


@dataclass(frozen=True)
class ResultRecord:
    """One answer: the asked-about region, the model's reply and its boxes.

    ``window`` is the raster-pixel window that was read, ``{"col_off", "row_off", "width",
    "height"}``; ``region`` and every box geometry are in ``coordinate_space`` ("lonlat" or
    "pixel").
    """

    task: str
    question: str | None
    answer: str
    model: str
    raster: str
    window: dict[str, int]
    region: dict[str, Any]
    coordinate_space: str = "lonlat"
    crs: str | None = None
    adapter: str | None = None
    label: str | None = None
    score: float | None = None
    boxes: tuple[ResultBox, ...] = ()
    evidence: tuple[dict[str, Any], ...] = ()
    result_id: str = field(default_factory=new_result_id)
    created_at: str = field(default_factory=utc_now_iso)

    def __post_init__(self) -> None:
        if self.coordinate_space not in COORDINATE_SPACES:
            raise ValueError(
                f"coordinate_space must be one of {COORDINATE_SPACES}, got {self.coordinate_space!r}"
            )
        _check_geometry(self.region, "ResultRecord.region")
        missing = {"col_off", "row_off", "width", "height"} - set(self.window)
        if missing:
            raise ValueError(f"ResultRecord.window lacks {sorted(missing)}: {self.window!r}")
        if self.score is not None and not math.isfinite(self.score):
            raise ValueError(f"ResultRecord.score must be finite, got {self.score}")

    def _properties(self, kind: str, label: str | None, score: float | None) -> dict[str, Any]:
        return {
            "result_id": self.result_id,
            "kind": kind,
            "task": self.task,
            "question": self.question,
            "answer": self.answer,
            "label": label,
            "score": score,
            "model": self.model,
            "adapter": self.adapter,
            "raster": self.raster,
            "crs": self.crs,
            "window": dict(self.window),
            "coordinate_space": self.coordinate_space,
            "created_at": self.created_at,
        }

    def to_features(self) -> list[dict[str, Any]]:
        """The region Feature followed by one Feature per box (ids ``<result_id>-r``, ``-b<i>``)."""
        region_props = self._properties("region", self.label, self.score)
        region_props["evidence"] = [dict(e) for e in self.evidence]
        features = [
            {"type": "Feature", "id": f"{self.result_id}-r", "geometry": self.region,
             "properties": region_props}
        ]
        for i, box in enumerate(self.boxes):
            features.append(
                {"type": "Feature", "id": f"{self.result_id}-b{i}", "geometry": box.geometry,
                 "properties": self._properties("box", box.label, box.score)}
            )
        return features


@dataclass(frozen=True)
class ResultSummary:
    """One row of the results history table (one answer)."""

    result_id: str
    created_at: str
    task: str
    question: str
    answer: str
    n_boxes: int
    raster: str
    coordinate_space: str


def _summaries(features: Iterable[Mapping[str, Any]]) -> list[ResultSummary]:
    rows: dict[str, dict[str, Any]] = {}
    for feature in features:
        props = feature["properties"]
        row = rows.setdefault(props["result_id"], {"n_boxes": 0})
        if props.get("kind") == "box":
            row["n_boxes"] += 1
        else:
            row["props"] = props
    out = []
    for result_id, row in rows.items():
        props = row.get("props", {})
        out.append(
            ResultSummary(
                result_id=result_id,
                created_at=str(props.get("created_at", "")),
                task=str(props.get("task", "")),
                question=str(props.get("question") or ""),
                answer=str(props.get("answer", "")),
                n_boxes=row["n_boxes"],
                raster=str(props.get("raster", "")),
                coordinate_space=str(props.get("coordinate_space", "lonlat")),
            )
        )
    return out


def _validate_collection(data: Any) -> list[dict[str, Any]]:
    """The features of a stored FeatureCollection; ValueError saying what is wrong."""
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        raise ValueError("top level is not a GeoJSON FeatureCollection")
    features = data.get("features")
    if not isinstance(features, list):
        raise ValueError("'features' is not a list")
    for i, feature in enumerate(features):
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            raise ValueError(f"features[{i}] is not a Feature")
        props = feature.get("properties")
        if not isinstance(props, dict) or not isinstance(props.get("result_id"), str):
            raise ValueError(f"features[{i}] has no string properties.result_id")
        _check_geometry(feature.get("geometry"), f"features[{i}].geometry")
    return features


class ResultsStore:
    """Thread-safe, file-backed list of result Features (one store per workspace).

    >>> store = ResultsStore(workspace / "results.geojson")   # loads what is there
    >>> store.append(record)                                   # rewrites the file atomically
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._features: list[dict[str, Any]] = []
        self.recovery_notice: str | None = None
        self._load()

    # -- loading ---------------------------------------------------------------------------
    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            text = self.path.read_text(encoding="utf-8")
            self._features = _validate_collection(json.loads(text))
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            self._move_aside(reason=str(exc))
        except OSError as exc:
            raise ResultsStoreError(
                f"cannot read the results file {self.path}: {exc}; check its permissions"
            ) from exc
        log.info("loaded %d result features from %s", len(self._features), self.path)

    def _move_aside(self, reason: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        aside = self.path.with_name(f"{self.path.stem}.corrupt-{stamp}{self.path.suffix}")
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            raise ResultsStoreError(
                f"the results file {self.path} is corrupt ({reason}) and could not be moved "
                f"aside ({exc}); move it away by hand, then restart"
            ) from exc
        self._features = []
        self.recovery_notice = (
            f"The results file was unreadable ({reason}); it was kept as {aside} and a new, "
            f"empty results file was started."
        )
        log.warning(self.recovery_notice)

    # -- writing ---------------------------------------------------------------------------
    def _write(self, features: list[dict[str, Any]]) -> None:
        collection = {"type": "FeatureCollection", "features": features}
        try:
            payload = json.dumps(collection, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ResultsStoreError(f"a result cannot be written as JSON: {exc}") from exc
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp",
                                       dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(payload)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise ResultsStoreError(
                f"cannot write the results file {self.path}: {exc}; check free space and "
                f"permissions of the workspace"
            ) from exc
        self._features = features

    def append(self, record: ResultRecord) -> list[dict[str, Any]]:
        """Add one answer's Features and persist; returns the new Features."""
        new = record.to_features()
        with self._lock:
            self._write(self._features + new)
        return new

    def delete(self, result_ids: Iterable[str]) -> int:
        """Remove every Feature of the given answers; returns how many answers were removed."""
        doomed = set(result_ids)
        with self._lock:
            kept = [f for f in self._features if f["properties"]["result_id"] not in doomed]
            removed = {f["properties"]["result_id"] for f in self._features} & doomed
            if removed:
                self._write(kept)
        return len(removed)

    def clear(self) -> Path | None:
        """Remove all results; the previous file is kept as ``results.cleared-<time>.geojson``."""
        with self._lock:
            if not self._features:
                return None
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            archive = self.path.with_name(f"{self.path.stem}.cleared-{stamp}{self.path.suffix}")
            try:
                os.replace(self.path, archive)
            except OSError as exc:
                raise ResultsStoreError(f"cannot archive {self.path} before clearing: {exc}") from exc
            self._write([])
        return archive

    # -- reading ---------------------------------------------------------------------------
    def features(self, result_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Copies of the stored Features (all, or those of the given answers), in order."""
        with self._lock:
            features = self._features
            if result_ids is not None:
                wanted = set(result_ids)
                features = [f for f in features if f["properties"]["result_id"] in wanted]
            return json.loads(json.dumps(features))

    def summaries(self) -> list[ResultSummary]:
        """One row per answer, oldest first."""
        with self._lock:
            return _summaries(self._features)

    def __len__(self) -> int:
        """Number of answers (not Features)."""
        with self._lock:
            return len({f["properties"]["result_id"] for f in self._features})
