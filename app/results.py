"""Results store: every answer becomes GeoJSON Features, kept in a SQLite file in the workspace.

One answer is one :class:`ResultRecord`: the region that was asked about plus any boxes the model
returned. It is stored as Features (``kind`` = ``"region"`` or ``"box"``) that share a
``result_id``. Georeferenced results are stored in lon/lat (EPSG:4326, lon first); results on
plain images stay in raster pixels (``coordinate_space`` = ``"pixel"``, x right, y down).

Storage is ``<workspace>/results.sqlite``: one row per answer (its Features as GeoJSON text, the
columns the table filters and sorts on, its owner) plus an R*-tree of each answer's bounding box,
so the map asks for "the results in this view" and the table for "page 3 of this raster's
answers" without reading the others: 100,000 stored answers cost an Ask what 10 do. Every change
is one SQLite transaction (WAL journal, ``synchronous=FULL``), so a crash or SIGKILL never loses
a saved answer nor leaves half of one.

A ``results.geojson`` of an earlier version found next to it is imported once, Feature by
Feature: Features that are not valid are kept apart in ``results.rejected-<time>.geojson`` while
the rest loads; the imported file is kept as ``results.imported-<time>.geojson``. A database file
that SQLite cannot read is never overwritten: it is moved aside with a timestamp.
:attr:`ResultsStore.recovery_notice` says what happened in both cases.

With several logins (``--auth-file``), each answer has an ``owner``: an analyst lists, maps,
exports, deletes and clears only their own answers (answers without an owner, from before logins
were configured, are shared).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.errors import ResultsStoreError

__all__ = [
    "COORDINATE_SPACES",
    "LEGACY_FILENAME",
    "RESULTS_FILENAME",
    "ResultBox",
    "ResultPage",
    "ResultQuery",
    "ResultRecord",
    "ResultSummary",
    "ResultsStore",
    "ViewFeatures",
    "new_result_id",
    "utc_now_iso",
]

log = logging.getLogger(__name__)

RESULTS_FILENAME = "results.sqlite"
LEGACY_FILENAME = "results.geojson"  # the store of earlier versions, imported once
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
    tiles: str | None = None  # whole-scene search: the tiles that saw it ("3,4", PlannedTile.index)

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
    whole_raster: bool = False  # asked about the whole raster: the map draws it as an outline
    model_output: str | None = None  # the model's raw text when ``answer`` was rewritten for reading
    # Whole-scene search (app.scene_search): {"query", "count", "tiles_done", "tiles_total",
    # "skipped", "stopped", "tile_px", "decimation", "prefiltered" (tiles the CLIP pre-filter
    # left out; absent in results saved before it existed)}; None for an answer about one crop.
    scan: Mapping[str, Any] | None = None
    # Two dates (app.compare): {"before_raster", "after_raster" (file names), "before_date",
    # "after_date" (ISO dates or None), "before_date_from", "after_date_from" (where each date
    # was read)}; copied into the properties of every Feature of the answer. None: one raster.
    change: Mapping[str, Any] | None = None
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
        props = {
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
            "whole_raster": self.whole_raster,
            "created_at": self.created_at,
        }
        if self.change is not None:
            props.update(self.change)
        return props

    def to_features(self) -> list[dict[str, Any]]:
        """The region Feature followed by one Feature per box (ids ``<result_id>-r``, ``-b<i>``)."""
        region_props = self._properties("region", self.label, self.score)
        region_props["evidence"] = [dict(e) for e in self.evidence]
        if self.model_output is not None:
            region_props["model_output"] = self.model_output
        if self.scan is not None:
            region_props["scan"] = dict(self.scan)
        features = [
            {"type": "Feature", "id": f"{self.result_id}-r", "geometry": self.region,
             "properties": region_props}
        ]
        for i, box in enumerate(self.boxes):
            props = self._properties("box", box.label, box.score)
            if box.tiles is not None:
                props["tiles"] = box.tiles
            features.append(
                {"type": "Feature", "id": f"{self.result_id}-b{i}", "geometry": box.geometry,
                 "properties": props}
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
    owner: str | None = None


@dataclass(frozen=True)
class ResultQuery:
    """Which answers a table page shows: ``raster`` (path as stored) and ``task`` filter when
    set; ``owner`` limits to that analyst's answers plus shared ones; newest first."""

    owner: str | None = None
    raster: str | None = None
    task: str | None = None
    offset: int = 0
    limit: int = 50

    def __post_init__(self) -> None:
        if self.offset < 0 or not 1 <= self.limit <= 10_000:
            raise ValueError(f"ResultQuery needs offset >= 0 and 1 <= limit <= 10000, got {self.offset}, {self.limit}")


@dataclass(frozen=True)
class ResultPage:
    """One page of answers (newest first) and how many match the query in all."""

    rows: tuple[ResultSummary, ...]
    total: int
    offset: int


@dataclass(frozen=True)
class ViewFeatures:
    """The Features of the newest answers whose bounding box meets a map view, at most
    ``limit`` answers; ``total`` answers meet the view in all."""

    features: list[dict[str, Any]]
    shown: int
    total: int
    total_is_lower_bound: bool = False  # more than ``total`` answers are in view (not counted)


def _bbox(geometries: Iterable[Mapping[str, Any]]) -> tuple[float, float, float, float]:
    xs: list[float] = []
    ys: list[float] = []

    def walk(coords: Any) -> None:
        if isinstance(coords, (list, tuple)) and coords and isinstance(coords[0], (int, float)):
            xs.append(float(coords[0]))
            ys.append(float(coords[1]))
        elif isinstance(coords, (list, tuple)):
            for c in coords:
                walk(c)

    for geometry in geometries:
        walk(geometry.get("coordinates"))
    finite = [(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(x) and math.isfinite(y)]
    if not finite:
        raise ValueError("the result has no finite coordinates")
    fx, fy = zip(*finite, strict=True)
    return min(fx), min(fy), max(fx), max(fy)


def _check_feature(feature: Any, where: str) -> dict[str, Any]:
    """``feature`` if it is a stored result Feature; ValueError saying what is wrong."""
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise ValueError(f"{where} is not a GeoJSON Feature")
    props = feature.get("properties")
    if not isinstance(props, dict) or not isinstance(props.get("result_id"), str) or not props["result_id"]:
        raise ValueError(f"{where} has no string properties.result_id")
    _check_geometry(feature.get("geometry"), f"{where}.geometry")
    if props.get("coordinate_space", "lonlat") not in COORDINATE_SPACES:
        raise ValueError(f"{where} has coordinate_space {props.get('coordinate_space')!r}")
    _bbox([feature["geometry"]])
    return feature


_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    result_id TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    owner TEXT,
    raster TEXT NOT NULL,
    task TEXT NOT NULL,
    question TEXT,
    answer TEXT NOT NULL,
    coordinate_space TEXT NOT NULL,
    n_boxes INTEGER NOT NULL,
    features TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_raster ON results (raster, seq);
CREATE INDEX IF NOT EXISTS results_task ON results (task, seq);
CREATE INDEX IF NOT EXISTS results_owner ON results (owner, seq);
CREATE VIRTUAL TABLE IF NOT EXISTS results_bbox USING rtree (seq, min_x, max_x, min_y, max_y);
-- Answers per (owner, raster, task), kept by triggers: a table page's total is a sum over a few
-- rows instead of a count over every stored answer.
CREATE TABLE IF NOT EXISTS result_counts (
    owner TEXT NOT NULL, raster TEXT NOT NULL, task TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (owner, raster, task)
);
CREATE TRIGGER IF NOT EXISTS results_counted AFTER INSERT ON results BEGIN
    INSERT INTO result_counts (owner, raster, task, n) VALUES (COALESCE(NEW.owner, ''), NEW.raster, NEW.task, 1)
    ON CONFLICT (owner, raster, task) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS results_uncounted AFTER DELETE ON results BEGIN
    UPDATE result_counts SET n = n - 1
    WHERE owner = COALESCE(OLD.owner, '') AND raster = OLD.raster AND task = OLD.task;
END;
"""
_VIEW_SCAN_FROM = 5_000  # answers in view from which the newest are found by a newest-first scan
_COLUMNS = "result_id, created_at, task, question, answer, n_boxes, raster, coordinate_space, owner"


def _summary(row: Sequence[Any]) -> ResultSummary:
    rid, created, task, question, answer, n_boxes, raster, space, owner = row
    return ResultSummary(result_id=rid, created_at=created, task=task, question=question or "",
                         answer=answer, n_boxes=int(n_boxes), raster=raster, coordinate_space=space,
                         owner=owner)


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


class ResultsStore:
    """Thread-safe, SQLite-backed store of answers (one store per workspace).

    >>> store = ResultsStore(workspace / "results.sqlite")   # opens, imports a legacy GeoJSON
    >>> store.append(record, owner="ana")                    # one transaction, durable on return
    >>> store.page(ResultQuery(owner="ana", limit=50))       # newest 50 of hers
    >>> store.in_view((w, s, e, n), "lonlat", owner="ana")   # what the map shows
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self.recovery_notice: str | None = None
        self.version = 0  # bumped on every change (the map refetches when it moves)
        self._db = self._connect()
        self._import_legacy(self.path.with_name(LEGACY_FILENAME))
        log.info("results store %s holds %d answers", self.path, len(self))

    # -- opening ---------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return self._open_db()
        except sqlite3.DatabaseError as exc:  # not a database, or a damaged one
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise ResultsStoreError(f"the results database {self.path} is locked by another "
                                        "process; stop the other GeoLens using this workspace") from exc
            aside = self._move_aside(self.path, "corrupt", str(exc))
            self.recovery_notice = (f"The results database was unreadable ({exc}); it was kept as "
                                    f"{aside} and a new, empty one was started.")
            log.warning(self.recovery_notice)
            return self._open_db()
        except OSError as exc:
            raise ResultsStoreError(f"cannot open the results database {self.path}: {exc}; "
                                    "check the workspace's permissions and free space") from exc

    def _open_db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            db.execute("SELECT count(*) FROM results").fetchone()
            db.execute("DELETE FROM result_counts WHERE n <= 0")
        except BaseException:
            db.close()
            raise
        return db

    def _move_aside(self, path: Path, tag: str, reason: str) -> Path:
        aside = path.with_name(f"{path.stem}.{tag}-{_stamp()}{path.suffix}")
        try:
            os.replace(path, aside)
            for extra in ("-wal", "-shm"):
                side = path.with_name(path.name + extra)
                if side.exists():
                    os.replace(side, aside.with_name(aside.name + extra))
        except OSError as exc:
            raise ResultsStoreError(
                f"{path} is unreadable ({reason}) and could not be moved aside ({exc}); "
                "move it away by hand, then restart"
            ) from exc
        return aside

    def _import_legacy(self, legacy: Path) -> None:
        """Load an earlier version's ``results.geojson`` once; invalid Features are set apart."""
        if not legacy.is_file():
            return
        try:
            data = json.loads(legacy.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("type") != "FeatureCollection" \
                    or not isinstance(data.get("features"), list):
                raise ValueError("top level is not a GeoJSON FeatureCollection with a features list")
        except (ValueError, UnicodeDecodeError) as exc:
            aside = self._move_aside(legacy, "corrupt", str(exc))
            self.recovery_notice = (f"The results file was unreadable ({exc}); it was kept as {aside} "
                                    "and a new, empty results store was started.")
            log.warning(self.recovery_notice)
            return
        groups: dict[str, list[dict[str, Any]]] = {}
        rejected: list[Any] = []
        reasons: list[str] = []
        for i, feature in enumerate(data["features"]):
            try:
                _check_feature(feature, f"features[{i}]")
            except ValueError as exc:
                rejected.append(feature)
                reasons.append(str(exc))
                continue
            groups.setdefault(feature["properties"]["result_id"], []).append(feature)
        with self._lock, self._transaction():
            for features in groups.values():
                self._insert(features, owner=None)
        kept = self._move_aside(legacy, "imported", "")
        notice = f"Imported {len(groups)} answers from {legacy.name} (kept as {kept.name})."
        if rejected:
            bad = legacy.with_name(f"results.rejected-{_stamp()}.geojson")
            bad.write_text(json.dumps({"type": "FeatureCollection", "features": rejected}), encoding="utf-8")
            notice += (f" {len(rejected)} Feature(s) were not valid results ({reasons[0]}"
                       f"{'; ...' if len(reasons) > 1 else ''}) and were kept apart in {bad}; the rest loaded.")
        self.recovery_notice = notice
        log.log(logging.WARNING if rejected else logging.INFO, notice)

    # -- writing ---------------------------------------------------------------------------
    def _transaction(self):
        store = self

        class _Tx:
            def __enter__(self) -> None:
                store._db.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type, exc, tb) -> None:
                store._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
                if exc_type is None:
                    store.version += 1

        return _Tx()

    def _insert(self, features: list[dict[str, Any]], owner: str | None) -> None:
        region = next((f for f in features if f["properties"].get("kind") != "box"), features[0])
        p = region["properties"]
        n_boxes = sum(1 for f in features if f["properties"].get("kind") == "box")
        try:
            payload = json.dumps(features, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ResultsStoreError(f"a result cannot be written as JSON: {exc}") from exc
        cur = self._db.execute(
            "INSERT INTO results (result_id, created_at, owner, raster, task, question, answer,"
            " coordinate_space, n_boxes, features) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (result_id) DO NOTHING",
            (p["result_id"], str(p.get("created_at") or utc_now_iso()), owner, str(p.get("raster") or ""),
             str(p.get("task") or ""), p.get("question"), str(p.get("answer") or ""),
             str(p.get("coordinate_space") or "lonlat"), n_boxes, payload),
        )
        if cur.rowcount == 0:
            return  # this answer is stored already (a legacy file imported twice)
        x0, y0, x1, y1 = _bbox(f["geometry"] for f in features)
        self._db.execute("INSERT INTO results_bbox VALUES (?, ?, ?, ?, ?)", (cur.lastrowid, x0, x1, y0, y1))

    def _write(self, fn, *args):
        try:
            with self._lock, self._transaction():
                return fn(*args)
        except sqlite3.Error as exc:
            raise ResultsStoreError(
                f"cannot write the results database {self.path}: {exc}; check free space and "
                "permissions of the workspace"
            ) from exc

    def append(self, record: ResultRecord, owner: str | None = None) -> list[dict[str, Any]]:
        """Add one answer's Features, durably; returns the new Features."""
        new = record.to_features()
        self._write(self._insert, new, owner)
        return new

    def append_many(self, records: Iterable[ResultRecord], owner: str | None = None) -> int:
        """Add many answers in one transaction (imports, batch scans); returns how many."""
        def run() -> int:
            n = 0
            for record in records:
                self._insert(record.to_features(), owner)
                n += 1
            return n

        return self._write(run)

    @staticmethod
    def _owned(owner: str | None, table: str = "") -> tuple[str, tuple]:
        """SQL condition: the answers ``owner`` may see and change (theirs and shared ones)."""
        col = f"{table}owner"
        return (f"({col} IS NULL OR {col} = ?)", (owner,)) if owner is not None else ("1", ())

    def _delete_where(self, where: str, args: tuple) -> int:
        seqs = [r[0] for r in self._db.execute(f"SELECT seq FROM results WHERE {where}", args)]
        for start in range(0, len(seqs), 500):
            chunk = seqs[start:start + 500]
            marks = ",".join("?" * len(chunk))
            self._db.execute(f"DELETE FROM results WHERE seq IN ({marks})", chunk)
            self._db.execute(f"DELETE FROM results_bbox WHERE seq IN ({marks})", chunk)
        return len(seqs)

    def delete(self, result_ids: Iterable[str], owner: str | None = None) -> int:
        """Remove the given answers (only ``owner``'s and shared ones); returns how many."""
        ids = list(dict.fromkeys(result_ids))
        if not ids:
            return 0
        cond, args = self._owned(owner)

        def run() -> int:
            n = 0
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                n += self._delete_where(f"{cond} AND result_id IN ({','.join('?' * len(chunk))})",
                                        (*args, *chunk))
            return n

        return self._write(run)

    def clear(self, owner: str | None = None) -> Path | None:
        """Remove all of ``owner``'s answers (all answers without owner); they are first saved
        to ``results.cleared-<time>.geojson`` beside the database, whose path is returned."""
        from tiles import write_geojson

        with self._lock:
            features = self.features(owner=owner)
            if not features:
                return None
            archive = self.path.with_name(f"results.cleared-{_stamp()}.geojson")
            write_geojson(archive, {"type": "FeatureCollection", "features": features})
            cond, args = self._owned(owner)
            self._write(self._delete_where, cond, args)
        return archive

    # -- reading ---------------------------------------------------------------------------
    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def features(self, result_ids: Iterable[str] | None = None, owner: str | None = None) -> list[dict[str, Any]]:
        """The stored Features (all, or those of the given answers) in order of storing."""
        cond, args = self._owned(owner)
        if result_ids is None:
            rows = self._read(f"SELECT features FROM results WHERE {cond} ORDER BY seq", args)
        else:
            ids = list(dict.fromkeys(result_ids))
            rows = []
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                rows += self._read(f"SELECT features, seq FROM results WHERE {cond} AND result_id IN "
                                   f"({','.join('?' * len(chunk))})", (*args, *chunk))
            rows.sort(key=lambda r: r[1])
        return [f for row in rows for f in json.loads(row[0])]

    def summaries(self, owner: str | None = None) -> list[ResultSummary]:
        """One row per answer, oldest first."""
        cond, args = self._owned(owner)
        return [_summary(r) for r in self._read(f"SELECT {_COLUMNS} FROM results WHERE {cond} ORDER BY seq", args)]

    def page(self, query: ResultQuery) -> ResultPage:
        """One page of the table: answers matching ``query``, newest first, and their count."""
        cond, args = self._owned(query.owner)
        count_cond, count_args = ("(owner = '' OR owner = ?)", (query.owner,)) if query.owner is not None else ("1", ())
        for column in ("raster", "task"):
            value = getattr(query, column)
            if value is not None:
                cond, args = f"{cond} AND {column} = ?", (*args, value)
                count_cond, count_args = f"{count_cond} AND {column} = ?", (*count_args, value)
        total = self._read(f"SELECT COALESCE(SUM(n), 0) FROM result_counts WHERE {count_cond}", count_args)[0][0]
        rows = self._read(f"SELECT {_COLUMNS} FROM results WHERE {cond} ORDER BY seq DESC LIMIT ? OFFSET ?",
                          (*args, query.limit, query.offset))
        return ResultPage(rows=tuple(_summary(r) for r in rows), total=int(total), offset=query.offset)

    def in_view(self, bbox: tuple[float, float, float, float], coordinate_space: str = "lonlat", *,
                raster: str | None = None, owner: str | None = None, limit: int = 1000) -> ViewFeatures:
        """Features of the newest ``limit`` answers in ``coordinate_space`` whose bounding box
        meets ``bbox`` = (min x, min y, max x, max y) (lon/lat, or raster pixels), optionally of
        one raster (path as stored)."""
        x0, y0, x1, y1 = (float(v) for v in bbox)
        cond, args = self._owned(owner, "r.")
        cond = f"{cond} AND r.coordinate_space = ?"
        args = (*args, coordinate_space)
        if raster is not None:
            cond, args = f"{cond} AND r.raster = ?", (*args, raster)
        meets = "b.max_x >= ? AND b.min_x <= ? AND b.max_y >= ? AND b.min_y <= ?"
        join = f"FROM results_bbox b JOIN results r ON r.seq = b.seq WHERE {meets} AND {cond}"
        where_args = (x0, x1, y0, y1, *args)
        # Counting every answer in a view over the whole history costs as much as reading them:
        # count up to a cap and report "at least" beyond it.
        total = self._read(f"SELECT count(*) FROM (SELECT 1 {join} LIMIT ?)", (*where_args, _VIEW_SCAN_FROM + 1))[0][0]
        lower_bound = total > _VIEW_SCAN_FROM
        if lower_bound:
            # Most answers are in view: walking them newest first stops after ``limit`` matches,
            # where the R*-tree would hand back all of them to be sorted.
            rows = self._read(f"SELECT r.features FROM results r CROSS JOIN results_bbox b ON b.seq = r.seq "
                              f"WHERE {meets} AND {cond} ORDER BY r.seq DESC LIMIT ?", (*where_args, limit))
        else:
            rows = self._read(f"SELECT r.features {join} ORDER BY r.seq DESC LIMIT ?", (*where_args, limit))
        features = [f for row in reversed(rows) for f in json.loads(row[0])]
        return ViewFeatures(features=features, shown=len(rows), total=int(min(total, _VIEW_SCAN_FROM)),
                            total_is_lower_bound=lower_bound)

    def bounds(self, result_id: str) -> tuple[str, tuple[float, float, float, float]] | None:
        """(coordinate space, bounding box) of one answer, for "zoom to result"; None if unknown."""
        rows = self._read("SELECT r.coordinate_space, b.min_x, b.min_y, b.max_x, b.max_y FROM results r "
                          "JOIN results_bbox b ON b.seq = r.seq WHERE r.result_id = ?", (result_id,))
        if not rows:
            return None
        space, *box = rows[0]
        return space, tuple(float(v) for v in box)

    def rasters(self, owner: str | None = None) -> list[str]:
        """Rasters (paths as stored) that have answers, for the table's filter."""
        cond, args = self._owned(owner)
        return [r[0] for r in self._read(f"SELECT DISTINCT raster FROM results WHERE {cond} ORDER BY raster", args)]

    def known(self, result_ids: Iterable[str]) -> set[str]:
        """Those of ``result_ids`` that are stored."""
        ids = list(dict.fromkeys(result_ids))
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            found |= {r[0] for r in self._read(f"SELECT result_id FROM results WHERE result_id IN "
                                               f"({','.join('?' * len(chunk))})", chunk)}
        return found

    def owner_of(self, result_id: str) -> str | None:
        rows = self._read("SELECT owner FROM results WHERE result_id = ?", (result_id,))
        return rows[0][0] if rows else None

    def __len__(self) -> int:
        """Number of answers (not Features)."""
        return int(self._read("SELECT count(*) FROM results")[0][0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
