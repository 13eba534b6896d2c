"""The results store: append, reload, delete, clear, concurrency, paging, views, owners,
legacy GeoJSON import (a bad Feature kept apart), corrupt files."""

from __future__ import annotations

import json
import threading

import pytest

from app.results import (
    LEGACY_FILENAME,
    RESULTS_FILENAME,
    ResultBox,
    ResultQuery,
    ResultRecord,
    ResultsStore,
)

SQUARE = {"type": "Polygon", "coordinates": [[[15.0, 45.0], [15.01, 45.0], [15.01, 45.01], [15.0, 45.01], [15.0, 45.0]]]}
WINDOW = {"col_off": 1, "row_off": 2, "width": 30, "height": 40}


def record(answer: str = "a river", boxes: int = 2, **kw) -> ResultRecord:
    box = {"type": "Polygon", "coordinates": [[[15.001, 45.001], [15.002, 45.001], [15.002, 45.002],
                                               [15.001, 45.002], [15.001, 45.001]]]}
    fields = dict(task="ground", question="where are the tanks?", answer=answer, model="tiny",
                  raster="/data/scene.tif", window=WINDOW, region=SQUARE, crs="EPSG:32633",
                  boxes=tuple(ResultBox(box, label="tank", score=0.5 + i / 10) for i in range(boxes)))
    fields.update(kw)
    return ResultRecord(**fields)


def test_append_writes_features_and_reloads(tmp_path):
    path = tmp_path / RESULTS_FILENAME
    store = ResultsStore(path)
    rec = record()
    new = store.append(rec)
    assert [f["properties"]["kind"] for f in new] == ["region", "box", "box"]
    assert {f["properties"]["result_id"] for f in new} == {rec.result_id}
    props = new[0]["properties"]
    for key in ("task", "question", "answer", "label", "score", "model", "adapter", "raster", "crs",
                "window", "created_at"):
        assert key in props
    assert props["window"] == WINDOW and props["crs"] == "EPSG:32633"
    assert new[1]["properties"]["label"] == "tank" and new[2]["properties"]["score"] == pytest.approx(0.6)
    store.close()
    again = ResultsStore(path)  # a new process: everything is on disk
    assert again.features() == new
    assert len(again) == 1 and again.recovery_notice is None
    assert {p.name for p in tmp_path.iterdir()} <= {RESULTS_FILENAME, RESULTS_FILENAME + "-wal",
                                                    RESULTS_FILENAME + "-shm"}


def test_summaries_delete_and_clear(tmp_path):
    store = ResultsStore(tmp_path / RESULTS_FILENAME)
    a, b = record("first"), record("second", boxes=0)
    store.append(a)
    store.append(b)
    rows = store.summaries()
    assert [(r.answer, r.n_boxes) for r in rows] == [("first", 2), ("second", 0)]
    assert store.delete([a.result_id, "unknown"]) == 1
    assert [f["properties"]["result_id"] for f in ResultsStore(store.path).features()] == [b.result_id]
    archive = store.clear()
    assert archive is not None and archive.exists()
    assert json.loads(archive.read_text())["features"][0]["properties"]["answer"] == "second"
    assert archive.name.startswith("results.cleared-")
    assert ResultsStore(store.path).features() == []
    assert store.clear() is None


def test_concurrent_appends_are_all_kept(tmp_path):
    store = ResultsStore(tmp_path / RESULTS_FILENAME)
    records = [record(f"answer {i}", boxes=1) for i in range(40)]
    threads = [threading.Thread(target=store.append, args=(r,)) for r in records]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reloaded = ResultsStore(store.path)
    assert len(reloaded) == 40
    assert {s.answer for s in reloaded.summaries()} == {f"answer {i}" for i in range(40)}


@pytest.mark.parametrize("content", ["{not json", '{"type": "Feature"}', b"\xff\xfe\x00garbage"])
def test_unreadable_legacy_file_is_moved_aside_not_overwritten(tmp_path, content):
    path = tmp_path / LEGACY_FILENAME
    data = content if isinstance(content, bytes) else content.encode()
    path.write_bytes(data)
    store = ResultsStore(tmp_path / RESULTS_FILENAME)
    assert store.features() == []
    assert store.recovery_notice and "kept as" in store.recovery_notice
    asides = list(tmp_path.glob("results.corrupt-*.geojson"))
    assert len(asides) == 1 and asides[0].read_bytes() == data
    store.append(record())
    assert len(ResultsStore(store.path)) == 1 and asides[0].exists()


def test_legacy_file_imports_and_one_bad_feature_is_kept_apart(tmp_path):
    good_a, good_b = record("first"), record("second", boxes=0)
    bad = [1, {"type": "Feature", "geometry": {"type": "Circle"}, "properties": {"result_id": "zz"}},
           {"type": "Feature", "geometry": SQUARE, "properties": {}}]
    features = good_a.to_features() + bad + good_b.to_features()
    (tmp_path / LEGACY_FILENAME).write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    store = ResultsStore(tmp_path / RESULTS_FILENAME)
    assert [s.answer for s in store.summaries()] == ["first", "second"]
    assert store.features() == good_a.to_features() + good_b.to_features()
    notice = store.recovery_notice
    assert "Imported 2 answers" in notice and "3 Feature(s) were not valid" in notice
    rejected = list(tmp_path.glob("results.rejected-*.geojson"))
    assert len(rejected) == 1 and json.loads(rejected[0].read_text())["features"] == bad
    assert not (tmp_path / LEGACY_FILENAME).exists() and list(tmp_path.glob("results.imported-*.geojson"))
    store.close()
    assert ResultsStore(tmp_path / RESULTS_FILENAME).recovery_notice is None  # imported once


def test_corrupt_database_is_moved_aside(tmp_path):
    path = tmp_path / RESULTS_FILENAME
    path.write_bytes(b"this is not a SQLite database" * 100)
    store = ResultsStore(path)
    assert len(store) == 0 and "kept as" in store.recovery_notice
    asides = list(tmp_path.glob("results.corrupt-*.sqlite"))
    assert len(asides) == 1 and asides[0].read_bytes().startswith(b"this is not")
    store.append(record())
    assert len(store) == 1


def _at(lon: float, lat: float, **kw) -> ResultRecord:
    d = 0.001
    ring = [[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]
    return record(region={"type": "Polygon", "coordinates": [ring]}, boxes=0, **kw)


def test_pages_filters_and_views(tmp_path):
    store = ResultsStore(tmp_path / RESULTS_FILENAME)
    for i in range(120):
        store.append(_at(10 + i * 0.01, 45.0, answer=f"a{i}", task="ask" if i % 2 else "caption",
                         raster="/data/one.tif" if i < 100 else "/data/two.tif"))
    page = store.page(ResultQuery(limit=50))
    assert page.total == 120 and [r.answer for r in page.rows[:2]] == ["a119", "a118"]  # newest first
    page3 = store.page(ResultQuery(offset=100, limit=50))
    assert [r.answer for r in page3.rows] == [f"a{i}" for i in range(19, -1, -1)]
    assert store.page(ResultQuery(raster="/data/two.tif")).total == 20
    assert store.page(ResultQuery(raster="/data/one.tif", task="ask")).total == 50
    view = store.in_view((10.0, 44.9, 10.105, 45.1), "lonlat", limit=1000)
    assert view.total == 11 and {f["properties"]["answer"] for f in view.features} == {f"a{i}" for i in range(11)}
    capped = store.in_view((0.0, 0.0, 20.0, 50.0), "lonlat", limit=5)
    assert capped.total == 120 and capped.shown == 5
    assert [f["properties"]["answer"] for f in capped.features] == [f"a{i}" for i in range(115, 120)]
    assert store.in_view((0.0, 0.0, 20.0, 50.0), "pixel").total == 0
    assert not capped.total_is_lower_bound
    space, (x0, _, _, y1) = store.bounds(page.rows[0].result_id)
    assert space == "lonlat" and x0 == pytest.approx(11.19) and y1 == pytest.approx(45.001)


def test_owners_see_and_change_only_their_own(tmp_path):
    store = ResultsStore(tmp_path / RESULTS_FILENAME)
    shared = store.append(record("shared"))[0]["properties"]["result_id"]
    ana = store.append(record("ana's"), owner="ana")[0]["properties"]["result_id"]
    bob = store.append(record("bob's"), owner="bob")[0]["properties"]["result_id"]
    assert {s.answer for s in store.summaries(owner="ana")} == {"shared", "ana's"}
    assert store.page(ResultQuery(owner="bob")).total == 2
    assert store.delete([bob], owner="ana") == 0 and store.owner_of(bob) == "bob"
    archive = store.clear(owner="ana")
    assert {f["properties"]["answer"] for f in json.loads(archive.read_text())["features"]} == {"shared", "ana's"}
    assert [s.answer for s in store.summaries()] == ["bob's"]
    assert store.owner_of(ana) is None and store.owner_of(shared) is None


def test_record_validation_messages():
    with pytest.raises(ValueError, match="coordinate_space"):
        record(coordinate_space="degrees")
    with pytest.raises(ValueError, match="GeoJSON geometry"):
        record(region={"type": "Circle", "coordinates": [0, 0]})
    with pytest.raises(ValueError, match="window lacks"):
        record(window={"col_off": 0})
    with pytest.raises(ValueError, match="finite"):
        ResultBox(SQUARE, score=float("nan"))


def test_a_view_over_thousands_counts_to_a_cap_and_shows_the_newest(tmp_path, monkeypatch):
    from app import results

    monkeypatch.setattr(results, "_VIEW_SCAN_FROM", 30)
    store = ResultsStore(tmp_path / RESULTS_FILENAME)
    store.append_many(_at(10 + i * 0.001, 45.0, answer=f"a{i}") for i in range(100))
    view = store.in_view((0.0, 0.0, 20.0, 50.0), "lonlat", limit=7)
    assert view.total == 30 and view.total_is_lower_bound and view.shown == 7
    assert [f["properties"]["answer"] for f in view.features] == [f"a{i}" for i in range(93, 100)]
    assert store.page(ResultQuery()).total == 100  # the table's count stays exact
    store.delete([store.summaries()[0].result_id])
    assert store.page(ResultQuery()).total == 99 == len(store)


_WRITER = r"""
import sys
sys.path.insert(0, sys.argv[2])
from app.results import ResultsStore
from tests.app.test_results import record
store = ResultsStore(sys.argv[1])
i = 0
while True:
    rec = record(f"answer {i}", boxes=3)
    store.append(rec)
    print(rec.result_id, flush=True)  # printed only after the answer is committed
    i += 1
"""


def test_sigkill_mid_write_never_loses_a_saved_answer(tmp_path):
    """Six SIGKILLs of a process that stores answers as fast as it can: every answer it reported
    saved is there after each kill, and the database stays readable."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    repo = str(Path(__file__).resolve().parents[2])
    path = tmp_path / RESULTS_FILENAME
    saved: list[str] = []
    for kill in range(6):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), repo], stdout=subprocess.PIPE, text=True)
        reported = [proc.stdout.readline().strip() for _ in range(5 + 3 * kill)]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        saved += reported
        store = ResultsStore(path)
        assert store.recovery_notice is None
        stored = {s.result_id for s in store.summaries()}
        assert set(saved) <= stored, f"kill {kill}: lost {set(saved) - stored}"
        assert store._read("PRAGMA integrity_check")[0][0] == "ok"
        store.close()
