"""Per-axis box-centre errors of the demo scores, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from engine.demo.synthetic_eval import centre_axis_errors
from engine.types import BoxPx


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
