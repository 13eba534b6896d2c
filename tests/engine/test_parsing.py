"""Box conventions, the strict parser (with hypothesis fuzzing) and label matching."""

from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from engine.boxes import BOX_CONVENTIONS
from engine.errors import ConfigError
from engine.parsing import box_format, match_label, normalise_label
from engine.types import BoxPx
from tests.engine.tiny import cached_tiny_model_dir, random_image

GRID = box_format("grid1000")
QWEN = box_format("qwen_pixels")
CROP = (500, 333)


def test_grid1000_boxes_labels_and_angles():
    text = "storage tank: [100, 200, 300, 400]\nship: [0, 0, 1000, 1000, 30]\n[500, 500, 600, 600]"
    boxes = GRID.parse(text, CROP, (384, 384), default_label="thing")
    assert [b.label for b in boxes] == ["storage tank", "ship", "thing"]
    assert boxes[0].xyxy == pytest.approx((50.0, 66.6, 150.0, 133.2))
    assert boxes[1].xyxy == (0.0, 0.0, 500.0, 333.0) and boxes[1].angle_deg == 30.0
    assert boxes[2].angle_deg is None


def test_grid1000_clips_and_drops_bad_boxes_with_warnings(caplog):
    text = "a: [-50, 100, 1200, 500]; b: [300, 300, 300, 900]; c: [1, 2, 3]; "
    text += "d: [9, 9, 1, 1]; e: [x, y]"
    with caplog.at_level(logging.WARNING, logger="engine.boxes"):
        boxes = GRID.parse(text, CROP, CROP)
    assert [(b.label, b.xyxy) for b in boxes] == [("a", (0.0, 33.3, 500.0, 166.5))]
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "degenerate" in messages and "malformed" in messages and "[1, 2, 3]" in messages


def test_qwen_json_boxes_are_rescaled_from_the_resized_image():
    text = (
        '```json\n[{"bbox_2d": [56, 28, 112, 84], "label": "tank"}, '
        '{"bbox_2d": [0, 0, 10, 10], "label": "car", "score": 0.5}]\n```'
    )
    boxes = QWEN.parse(text, crop_size=(500, 333), model_input_size=(224, 140))
    assert boxes[0].label == "tank"
    assert boxes[0].xyxy == pytest.approx(
        (56 * 500 / 224, 28 * 333 / 140, 112 * 500 / 224, 84 * 333 / 140)
    )
    assert boxes[1].score == 0.5 and boxes[1].label == "car"


def test_qwen_broken_json_and_bare_lists():
    broken = (
        '[{"bbox_2d": [10, 10, 50, 50], "label": "roof"}, {"bbox_2d": [1, 2], "label": "x"}, '
        '{"label": "y"'
    )
    boxes = QWEN.parse(broken, (100, 100), (100, 100))
    assert [(b.label, b.xyxy) for b in boxes] == [("roof", (10.0, 10.0, 50.0, 50.0))]
    bare = QWEN.parse(
        "The tank is at [10, 20, 30, 40].", (100, 100), (200, 200), default_label="tank"
    )
    assert [(b.label, b.xyxy) for b in bare] == [("tank", (5.0, 10.0, 15.0, 20.0))]


def test_qwen_rescale_uses_the_processors_real_resize():
    """A 500x333 crop is resized by the real Qwen2VLImageProcessor; boxes map back exactly."""
    from engine.config import EngineConfig
    from engine.model import load_backbone, resolve_placement

    cfg = EngineConfig(
        backbone="qwen2.5-vl", model_path=cached_tiny_model_dir("qwen2.5-vl"), device="cpu"
    )
    backbone = load_backbone(cfg, resolve_placement("cpu", cfg.quant))
    images = backbone.preprocess([random_image(333, 500)])
    model_w, model_h = images.model_sizes_px[0]
    grid = images.image_grid_thw[0].tolist()
    assert (model_w, model_h) == (grid[2] * 14, grid[1] * 14) != (500, 333)  # really resized
    full = QWEN.parse(
        f'[{{"bbox_2d": [0, 0, {model_w}, {model_h}], "label": "all"}}]',
        images.crop_sizes_px[0],
        (model_w, model_h),
    )
    assert full[0].xyxy == (0.0, 0.0, 500.0, 333.0)
    half = QWEN.parse(
        f'[{{"bbox_2d": [{model_w // 2}, 0, {model_w}, {model_h // 2}]}}]',
        (500, 333),
        (model_w, model_h),
    )
    assert half[0].xyxy == pytest.approx(
        (500 * (model_w // 2) / model_w, 0, 500, 333 * (model_h // 2) / model_h)
    )
    # The region given to the model uses the same resize.
    assert (
        QWEN.encode((0, 0, 500, 333), (500, 333), (model_w, model_h))
        == f"[0, 0, {model_w}, {model_h}]"
    )


def test_unknown_box_format():
    with pytest.raises(ConfigError, match="grid1000"):
        box_format("xyxy")


boxes_px = st.builds(
    lambda x0, y0, w, h: (x0, y0, x0 + w, y0 + h),
    st.floats(0, 400),
    st.floats(0, 250),
    st.floats(5, 100),
    st.floats(5, 83),
)


@given(box=boxes_px, model_w=st.integers(28, 1400), model_h=st.integers(28, 1400))
@settings(max_examples=200, deadline=None)
def test_encode_then_parse_round_trips(box, model_w, model_h):
    for fmt, model_size in ((GRID, (384, 384)), (QWEN, (model_w, model_h))):
        step_x = CROP[0] / (1000 if fmt is GRID else model_size[0])
        step_y = CROP[1] / (1000 if fmt is GRID else model_size[1])
        assume(
            box[2] - box[0] > 2 * step_x and box[3] - box[1] > 2 * step_y
        )  # wider than the model's pixels
        parsed = fmt.parse(fmt.encode(box, CROP, model_size), CROP, model_size)
        assert len(parsed) == 1
        for a, b, step in zip(parsed[0].xyxy, box, (step_x, step_y, step_x, step_y)):
            assert abs(a - b) <= step / 2 + 1e-6


@given(
    boxes=st.lists(boxes_px, min_size=1, max_size=5),
    labels=st.lists(st.sampled_from(["tank", "ship", "storage tank"]), min_size=5, max_size=5),
)
@settings(max_examples=100, deadline=None)
def test_format_answer_then_parse_keeps_boxes_and_labels(boxes, labels):
    given_boxes = [BoxPx(*b, label=label) for b, label in zip(boxes, labels)]
    for fmt in BOX_CONVENTIONS.values():
        parsed = fmt.parse(fmt.format_answer(given_boxes, CROP, (448, 308)), CROP, (448, 308))
        assert [p.label for p in parsed] == [b.label for b in given_boxes]


junk = st.one_of(
    st.text(max_size=300),
    st.lists(
        st.one_of(
            st.text(alphabet="[]{},:\"' -.0123456789bboxlabel_2d\n", max_size=40),
            st.builds(
                lambda v: str(v),
                st.lists(
                    st.one_of(
                        st.integers(-5000, 5000), st.floats(allow_nan=True, allow_infinity=True)
                    ),
                    max_size=6,
                ),
            ),
            st.just('{"bbox_2d": ['),
            st.just("]}"),
            st.just("label: "),
        ),
        max_size=20,
    ).map("".join),
)


@given(
    text=junk,
    crop_w=st.integers(1, 4000),
    crop_h=st.integers(1, 4000),
    model_w=st.integers(1, 4000),
    model_h=st.integers(1, 4000),
)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_parser_never_raises_and_returns_valid_boxes(text, crop_w, crop_h, model_w, model_h):
    for fmt in BOX_CONVENTIONS.values():
        for box in fmt.parse(text, (crop_w, crop_h), (model_w, model_h)):
            assert 0 <= box.x0 < box.x1 <= crop_w and 0 <= box.y0 < box.y1 <= crop_h


@pytest.mark.parametrize(
    "answer,expected",
    [
        ("Harbor", "harbor"),
        ("harbor.", "harbor"),
        ("The scene is a harbor.", "harbor"),
        ("dense residential", "dense_residential"),
        ("It looks like dense residential area", "dense_residential"),
        ("Storage-Tanks", "storage tanks"),
        ("farmland or harbor", None),
        ("a desert", None),
        ("", None),
    ],
)
def test_match_label(answer, expected):
    labels = ["harbor", "farmland", "dense_residential", "residential", "storage tanks"]
    assert match_label(answer, labels) == expected


def test_normalise_label():
    assert normalise_label("  Château_Vineyard!! ") == "chateau vineyard"
