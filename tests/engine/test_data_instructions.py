"""The JSONL instruction format and the box conversions it relies on."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from engine.data.boxes import (
    GridBox,
    aabb_px,
    box_corners_px,
    box_to_grid,
    grid_to_box,
    min_area_box_px,
    oriented_box_px,
)
from engine.data.instructions import Sample, read_jsonl, write_jsonl
from engine.errors import DataFormatError, InputError
from engine.types import BoxPx, Level, Task


def _ground(tmp_path, **kw) -> Sample:
    fields = {
        "id": "g1",
        "task": "ground",
        "question": "the lake",
        "answer": "[100, 200, 300, 400]",
        "image_path": str(tmp_path / "a.png"),
        "image_size_px": (200, 100),
        "boxes_px": (BoxPx(20.0, 20.0, 60.0, 40.0, label="water"),),
        "level": "object",
        "source": "test",
    }
    fields.update(kw)
    return Sample(**fields)


def test_grid_conversion_round_trip_and_clamping():
    box = BoxPx(20.0, 10.0, 60.0, 45.0)
    grid = box_to_grid(box, (200, 100))
    assert grid == GridBox(100, 100, 300, 450)
    assert grid.text() == "[100, 100, 300, 450]"
    back = grid_to_box(grid, (200, 100))
    assert back.xyxy == pytest.approx(box.xyxy)
    assert box_to_grid(BoxPx(-5.0, -5.0, 250.0, 50.0), (200, 100)) == GridBox(0, 0, 1000, 500)
    assert grid_to_box(GridBox(1000, 0, 1000, 10), (200, 100)).x0 < 200  # zero width widened inside


def test_grid_box_validation():
    with pytest.raises(ValueError, match="integers in"):
        GridBox(0, 0, 1001, 5)
    with pytest.raises(ValueError, match="x0 <= x1"):
        GridBox(10, 0, 5, 5)
    assert GridBox(1, 2, 3, 4, angle_deg=-30).text() == "[1, 2, 3, 4, -30]"


def test_min_area_box_of_a_rotated_rectangle():
    # 40 x 20 rectangle centred at (50, 50) rotated 30 degrees counter-clockwise on screen
    corners = box_corners_px(oriented_box_px(50, 50, 40, 20, 30.0))
    box = min_area_box_px(corners[[2, 0, 3, 1]], label="plane")  # any point order
    assert box.angle_deg == pytest.approx(30.0)
    assert (box.x1 - box.x0, box.y1 - box.y0) == pytest.approx((40, 20))
    assert ((box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2) == pytest.approx((50, 50))
    # on screen (y down) counter-clockwise means the +x side of the box moves up (y decreases)
    right_mid = (corners[1] + corners[2]) / 2
    assert right_mid[0] > 50 and right_mid[1] < 50


def test_min_area_box_keeps_axis_aligned_boxes_and_normalises_angle():
    box = min_area_box_px(np.array([[10, 10], [30, 10], [30, 15], [10, 15]]))
    assert box.angle_deg == pytest.approx(0.0) and box.xyxy == pytest.approx((10, 10, 30, 15))
    tall = min_area_box_px(np.array([[0, 0], [5, 0], [5, 30], [0, 30]]))
    assert -45 <= tall.angle_deg < 45


def test_aabb_of_an_oriented_box():
    diamond = oriented_box_px(10, 10, 10, 10, 45.0)
    box = aabb_px(diamond)
    assert box.x1 - box.x0 == pytest.approx(10 * math.sqrt(2))
    assert box.y1 - box.y0 == pytest.approx(10 * math.sqrt(2)) and box.angle_deg is None


def test_sample_validation_messages(tmp_path):
    with pytest.raises(ValueError, match="exactly one of image_path and image"):
        Sample(id="a", task=Task.ASK, question="q?", answer="yes")
    with pytest.raises(InputError, match="unknown task 'detect'"):
        Sample(id="a", task="detect", question="q?", answer="yes", image_path="x.png")
    with pytest.raises(ValueError, match="needs a question"):
        Sample(id="a", task=Task.ASK, question=" ", answer="yes", image_path="x.png")
    with pytest.raises(ValueError, match="not one of labels"):
        Sample(
            id="a",
            task=Task.CLASSIFY,
            question="",
            answer="forest",
            image_path="x.png",
            labels=("urban",),
        )
    with pytest.raises(ValueError, match="needs at least one box"):
        Sample(
            id="a", task=Task.GROUND, question="the lake", answer="[1, 2, 3, 4]", image_path="x.png"
        )
    with pytest.raises(ValueError, match="boxes need image_size_px"):
        _ground(tmp_path, image_size_px=None)
    with pytest.raises(ValueError, match=r"uint8 \(H, W, 3\)"):
        Sample(id="a", task=Task.ASK, question="q?", answer="no", image=np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="unknown level"):
        Sample(id="a", task=Task.ASK, question="q?", answer="no", image_path="x.png", level="pixel")


def test_in_memory_image_sets_size_and_converts_to_grid():
    img = np.zeros((50, 100, 3), np.uint8)
    s = Sample(
        id="m",
        task=Task.GROUND,
        question="the tank",
        answer="x",
        image=img,
        boxes_px=(BoxPx(10.0, 5.0, 20.0, 25.0),),
    )
    assert s.image_size_px == (100, 50)
    assert s.boxes_grid() == (GridBox(100, 100, 200, 500),)
    assert s.load_image() is img


def test_jsonl_round_trip(tmp_path):
    samples = [
        _ground(tmp_path),
        Sample(
            id="r1",
            task=Task.REGION,
            question="What is in this box?",
            answer="a pond",
            image_path=str(tmp_path / "sub" / "b.png"),
            image_size_px=(64, 64),
            region_px=BoxPx(1.5, 2.5, 30.0, 40.0),
            level=Level.OBJECT,
            source="s",
        ),
        Sample(
            id="c1",
            task=Task.CAPTION,
            question="",
            answer="A lake.",
            image_path="/elsewhere/c.tif",
            references=("A lake.", "Water."),
            question_type="caption",
        ),
        Sample(
            id="k1",
            task=Task.CLASSIFY,
            question="",
            answer="urban",
            image_path=str(tmp_path / "d.jpg"),
            labels=("rural", "urban"),
            question_type="scene",
        ),
        _ground(
            tmp_path, id="o1", boxes_px=(BoxPx(1.0, 2.0, 9.0, 5.0, label="plane", angle_deg=-12.5),)
        ),
    ]
    path = tmp_path / "set.jsonl"
    assert write_jsonl(samples, path) == len(samples)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows[1]["image_path"] == "sub/b.png"  # relative to the JSONL folder
    assert rows[2]["image_path"] == "/elsewhere/c.tif"
    assert read_jsonl(path) == samples
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_write_refuses_in_memory_images_and_leaves_no_file(tmp_path):
    s = Sample(
        id="m", task=Task.ASK, question="q?", answer="no", image=np.zeros((4, 4, 3), np.uint8)
    )
    with pytest.raises(DataFormatError, match="in-memory image"):
        write_jsonl([s], tmp_path / "out.jsonl")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "bad sample"),
        ('{"id": "a", "task": "ask", "answer": "yes"}', "missing required keys"),
        (
            '{"id": "a", "task": "fly", "answer": "yes", "question": "q", "image_path": "x"}',
            "unknown task",
        ),
        (
            (
                '{"id": "a", "task": "ask", "answer": "y", "question": "q", "image_path": "x", '
                '"colour": 1}'
            ),
            "unknown keys",
        ),
        (
            (
                '{"id": "a", "task": "ground", "answer": "y", "question": "q", "image_path": "x", '
                '"image_size_px": [9, 9], "boxes_px": [{"x0": 5, "y0": 1, "x1": 2, "y1": 3}]}'
            ),
            "x0 < x1",
        ),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, line, message):
    good = '{"id": "ok", "task": "ask", "question": "q?", "answer": "no", "image_path": "a.png"}'
    path = tmp_path / "bad.jsonl"
    path.write_text(good + "\n\n" + line + "\n")
    with pytest.raises(DataFormatError, match=rf"bad\.jsonl:3: .*{message}"):
        read_jsonl(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataFormatError, match="instruction file not found"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_load_image_of_missing_file_names_it(tmp_path):
    s = Sample(
        id="c", task=Task.CAPTION, question="", answer="x", image_path=str(tmp_path / "gone.tif")
    )
    with pytest.raises(DataFormatError, match="gone.tif"):
        s.load_image()
