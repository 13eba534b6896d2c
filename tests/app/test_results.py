"""The results store: append, reload, delete, clear, concurrency, corrupt files."""

from __future__ import annotations

import json
import threading

import pytest

from app.results import RESULTS_FILENAME, ResultBox, ResultRecord, ResultsStore

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
    on_disk = json.loads(path.read_text())
    assert on_disk["type"] == "FeatureCollection" and len(on_disk["features"]) == 3
    again = ResultsStore(path)
    assert again.features() == store.features()
    assert len(again) == 1 and again.recovery_notice is None
    assert [p.name for p in tmp_path.iterdir()] == [RESULTS_FILENAME]  # no temp files left


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


@pytest.mark.parametrize("content", ["{not json", '{"type": "Feature"}', '{"type": "FeatureCollection", "features": [1]}',
                                     b"\xff\xfe\x00garbage"])
def test_corrupt_file_is_moved_aside_not_overwritten(tmp_path, content):
    path = tmp_path / RESULTS_FILENAME
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    store = ResultsStore(path)
    assert store.features() == []
    assert store.recovery_notice and "kept as" in store.recovery_notice
    asides = list(tmp_path.glob("results.corrupt-*.geojson"))
    assert len(asides) == 1
    assert asides[0].read_bytes() == (content if isinstance(content, bytes) else content.encode())
    store.append(record())
    assert len(ResultsStore(path)) == 1 and asides[0].exists()


def test_record_validation_messages():
    with pytest.raises(ValueError, match="coordinate_space"):
        record(coordinate_space="degrees")
    with pytest.raises(ValueError, match="GeoJSON geometry"):
        record(region={"type": "Circle", "coordinates": [0, 0]})
    with pytest.raises(ValueError, match="window lacks"):
        record(window={"col_off": 0})
    with pytest.raises(ValueError, match="finite"):
        ResultBox(SQUARE, score=float("nan"))
