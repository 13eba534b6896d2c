"""Per-axis box-centre errors and grounding-miss outcomes of the demo scores, against
hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from engine.types import BoxPx
from lab.demo.synthetic_eval import (
    centre_axis_errors,
    fresh_test_samples,
    fresh_test_set,
    grounding_outcome,
    grounding_outcomes,
)


def _box(cx: float, cy: float, half: float = 5.0) -> BoxPx:
    return BoxPx(cx - half, cy - half, cx + half, cy + half)


def test_rows_found_and_columns_not_shows_in_the_axis_errors():
    truth = [_box(10, 20), _box(60, 40), _box(90, 100), _box(30, 80)]
    # y right everywhere, x always the crop centre (what a model that cannot see columns does)
    predicted = [_box(64, 20), _box(64, 40), _box(64, 100), None]
    axes = centre_axis_errors(predicted, truth, [(128, 128)] * 4)
    assert axes["n"] == 3  # the sample without a box is left out
    assert axes["median_abs_dx"] == pytest.approx(np.median([54, 4, 26]) / 128)
    assert axes["median_abs_dy"] == 0.0
    assert axes["corr_y"] == pytest.approx(1.0)
    assert axes["corr_x"] is None  # constant prediction: no correlation defined


def test_axis_errors_are_fractions_of_each_crop_side():
    truth = [_box(50, 50), _box(100, 20)]
    predicted = [_box(60, 55), _box(80, 30)]
    axes = centre_axis_errors(predicted, truth, [(200, 100), (200, 100)])
    assert axes["median_abs_dx"] == pytest.approx(np.median([10, 20]) / 200)
    assert axes["median_abs_dy"] == pytest.approx(np.median([5, 10]) / 100)
    assert axes["corr_x"] == pytest.approx(1.0) and axes["corr_y"] == pytest.approx(1.0)
    assert centre_axis_errors([None, _box(1, 1)], truth, [(200, 100)] * 2) is None


def _labelled(x0: float, y0: float, x1: float, y1: float, label: str) -> BoxPx:
    return BoxPx(x0, y0, x1, y1, label=label)


def test_grounding_outcome_names_what_a_miss_landed_on():
    target = _labelled(10, 10, 30, 30, "building")
    others = (
        _labelled(50, 10, 70, 30, "building"),  # the next building along the row
        _labelled(0, 60, 128, 80, "road"),
    )
    assert grounding_outcome(_labelled(11, 10, 30, 30, "x"), target, others) == "hit"
    # the right row, one building to the east: IoU 1 with the neighbour, 0 with the target
    assert grounding_outcome(BoxPx(50, 10, 70, 30), target, others) == "other_same_kind"
    assert grounding_outcome(BoxPx(0, 60, 120, 80), target, others) == "other_kind"
    # IoU with the target = 200 / 600 = 1/3: found, box too loose
    assert grounding_outcome(BoxPx(20, 10, 40, 30), target, others) == "near"
    # between the two buildings: IoU 0.25 with the target is "near", just below it is not
    assert grounding_outcome(BoxPx(22, 10, 42, 30), target, others) == "near"  # 160/640
    assert grounding_outcome(BoxPx(23, 10, 43, 30), target, others) == "elsewhere"  # 140/660
    assert grounding_outcome(None, target, others) == "no_box"
    assert grounding_outcome(BoxPx(90, 90, 100, 100), target, ()) == "elsewhere"


def test_grounding_outcomes_counts_kinds_and_miss_axes():
    a, b = _labelled(10, 10, 30, 30, "building"), _labelled(50, 10, 70, 30, "building")
    road = _labelled(0, 60, 128, 80, "road")
    truth = [a, b, road, a]
    others = [(b, road), (a, road), (a, b), (b, road)]
    predicted = [a, a, BoxPx(0, 62, 128, 80), None]  # hit, wrong building, hit, nothing
    out = grounding_outcomes(predicted, truth, others, [(128, 128)] * 4)
    assert out["counts"] == {
        "hit": 2,
        "near": 0,
        "other_same_kind": 1,
        "other_kind": 0,
        "elsewhere": 0,
        "no_box": 1,
    }
    assert out["by_kind"]["building"]["other_same_kind"] == 1
    assert out["by_kind"]["road"]["hit"] == 1
    assert out["miss_axes"] is None  # a single miss: no correlation to report


def test_fresh_test_set_lists_the_other_objects_of_each_grounding_crop():
    samples, others = fresh_test_set(5, 3, types=("ground", "presence"))
    assert samples == fresh_test_samples(5, 3, types=("ground", "presence"))
    ground = [s for s in samples if s.question_type == "ground"]
    assert ground and set(others) == {s.id for s in ground}
    for s in ground:
        target = s.boxes_px[0]
        assert target not in others[s.id]  # the target itself is not a distractor
        for box in others[s.id]:
            assert box.label and 0 <= box.x0 < box.x1 <= 128 and 0 <= box.y0 < box.y1 <= 128
    assert any(len(v) > 1 for v in others.values())
