"""The registry of box conventions: one per model family, each round-tripping on non-square crops."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from engine.boxes import ALIASES, BOX_CONVENTIONS, CoordSpace, box_convention
from engine.errors import ConfigError
from engine.types import BoxPx

CROPS = ((500, 333), (120, 640), (1023, 77))  # (width, height), none of them square
MODEL_INPUT = {(500, 333): (504, 336), (120, 640): (112, 644), (1023, 77): (1036, 84)}


def test_registry_names_and_aliases():
    assert set(BOX_CONVENTIONS) == {"paper", "qwen2.5-vl", "qwen3-vl"}
    for name, convention in BOX_CONVENTIONS.items():
        assert convention.name == name and box_convention(name) is convention
    assert box_convention("qwen3.5") is box_convention("glm-v") is BOX_CONVENTIONS["qwen3-vl"]
    assert box_convention("grid1000") is BOX_CONVENTIONS["paper"]
    assert box_convention("qwen_pixels") is BOX_CONVENTIONS["qwen2.5-vl"]
    assert all(target in BOX_CONVENTIONS for target in ALIASES.values())


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="paper, qwen2.5-vl, qwen3-vl"):
        box_convention("yolo")


def test_conventions_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        BOX_CONVENTIONS["paper"].name = "x"


def test_each_family_maps_its_own_numbers():
    crop, model = (500, 333), (504, 336)
    full = {
        "paper": (0, 0, 1000, 1000),
        "qwen3-vl": (0, 0, 1000, 1000),
        "qwen2.5-vl": (0, 0, 504, 336),  # pixels of the resized image
    }
    for name, values in full.items():
        box = BOX_CONVENTIONS[name].to_crop_px(values, crop, model)
        assert box.xyxy == (0.0, 0.0, 500.0, 333.0), name
    half = BOX_CONVENTIONS["qwen3-vl"].to_crop_px((500, 0, 1000, 500), crop, model)
    assert half.xyxy == pytest.approx((250.0, 0.0, 500.0, 166.5))
    assert BOX_CONVENTIONS["qwen2.5-vl"].to_crop_px((252, 0, 504, 168), crop, model).xyxy == (
        pytest.approx((250.0, 0.0, 500.0, 166.5))
    )


def test_qwen3_json_is_relative_not_pixels():
    text = '```json\n[{"bbox_2d": [100, 200, 300, 400], "label": "tank"}]\n```'
    (box,) = BOX_CONVENTIONS["qwen3-vl"].parse(text, (200, 100), (224, 112))
    assert box.label == "tank" and box.xyxy == pytest.approx((20.0, 20.0, 60.0, 40.0))
    glm = "<|begin_of_box|>[100, 200, 300, 400]<|end_of_box|>"  # GLM-V's bare list
    assert BOX_CONVENTIONS["qwen3-vl"].parse(glm, (200, 100), (224, 112))[0].xyxy == box.xyxy


def test_angles_only_where_the_convention_has_them():
    oriented = BoxPx(10, 20, 110, 70, label="ship", angle_deg=30.4)
    assert BOX_CONVENTIONS["paper"].from_crop_px(oriented, (200, 100), (200, 100)) == (
        50,
        200,
        550,
        700,
        30,
    )
    assert len(BOX_CONVENTIONS["qwen3-vl"].from_crop_px(oriented, (200, 100), (200, 100))) == 4
    with pytest.raises(ValueError, match="4 finite numbers"):
        BOX_CONVENTIONS["qwen2.5-vl"].to_crop_px((1, 2, 3, 4, 5), (200, 100), (200, 100))
    assert (
        BOX_CONVENTIONS["paper"].to_crop_px((0, 0, 500, 500, 15), (200, 100), (1, 1)).angle_deg
        == 15
    )


def test_to_crop_px_clips_and_refuses_empty_boxes():
    paper = BOX_CONVENTIONS["paper"]
    assert paper.to_crop_px((-50, 0, 1200, 500), (200, 100), (1, 1)).xyxy == (0.0, 0.0, 200.0, 50.0)
    with pytest.raises(ValueError, match="empty"):
        paper.to_crop_px((300, 300, 300, 900), (200, 100), (1, 1))
    with pytest.raises(ValueError, match="finite"):
        paper.to_crop_px((0, 0, float("nan"), 10), (200, 100), (1, 1))


boxes = st.tuples(st.floats(0, 0.8), st.floats(0, 0.8), st.floats(0.05, 0.2), st.floats(0.05, 0.2))


@pytest.mark.parametrize("name", sorted(BOX_CONVENTIONS))
@pytest.mark.parametrize("crop", CROPS)
@given(rel=boxes, angle=st.floats(-89, 89))
@settings(max_examples=60, deadline=None)
def test_round_trip_on_non_square_crops(name, crop, rel, angle):
    """crop px -> convention numbers -> crop px, within half a step of the convention's grid;
    and the text the model writes parses back to the same boxes."""
    convention, model = BOX_CONVENTIONS[name], MODEL_INPUT[crop]
    w, h = crop
    x0, y0 = rel[0] * w, rel[1] * h
    box = BoxPx(
        x0,
        y0,
        x0 + rel[2] * w,
        y0 + rel[3] * h,
        label="tank",
        angle_deg=angle if convention.angle else None,
    )
    if convention.space is CoordSpace.GRID_1000:
        step = (w / 1000, h / 1000)
    else:
        step = (w / model[0], h / model[1])
    assume(box.x1 - box.x0 > 2 * step[0] and box.y1 - box.y0 > 2 * step[1])
    back = convention.to_crop_px(convention.from_crop_px(box, crop, model), crop, model)
    for a, b, s in zip(back.xyxy, box.xyxy, step * 2):
        assert abs(a - b) <= s / 2 + 1e-6
    if convention.angle:
        assert back.angle_deg == round(angle)
    (parsed,) = convention.parse(convention.format_answer([box], crop, model), crop, model)
    assert parsed.xyxy == back.xyxy and parsed.label == "tank"
    assert parsed.angle_deg == back.angle_deg
