"""Synthetic change pairs (lab.synthetic.change): true change is in the truth and in the pixels,
nuisance (season, brightness, 1 px shift, noise) is in the pixels and never in the truth, the
pairs are deterministic per seed, and the records round-trip through the box parser."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.boxes import box_convention
from engine.data.instructions import read_jsonl
from engine.types import BoxPx
from lab.synthetic.change import (
    CHANGE_TYPES,
    NO_CHANGE,
    ChangeBox,
    Nuisance,
    apply_photometric,
    build_change_dataset,
    change_caption,
    location_word,
    make_pair,
    pair_records,
    read_change_records,
)
from lab.synthetic.layouts import generate_scene
from lab.synthetic.scene import SceneEdits

SEEDS = range(7_700_000, 7_700_036)  # 36 (+ 14 clean) pairs: every change type appears


@pytest.fixture(scope="module")
def pairs():
    return [make_pair(s) for s in SEEDS]


@pytest.fixture(scope="module")
def clean_pairs():
    """Change pairs without nuisance: every pixel difference is true change."""
    return [make_pair(s, no_change_p=0.0, nuisance=False) for s in SEEDS[:14]]


def test_pairs_are_deterministic_per_seed(pairs):
    again = make_pair(SEEDS[3])
    assert np.array_equal(again.before, pairs[3].before)
    assert np.array_equal(again.after, pairs[3].after)
    assert again.changes == pairs[3].changes and again.nuisance == pairs[3].nuisance
    other = pairs[4]
    assert not np.array_equal(other.after, pairs[3].after)


def test_mix_of_change_and_no_change_and_every_change_type(pairs, clean_pairs):
    no_change = sum(not p.changed for p in pairs)
    assert 0.15 * len(pairs) <= no_change <= 0.45 * len(pairs)
    seen = {(c.kind, c.status) for p in pairs + clean_pairs for c in p.changes}
    assert seen == set(CHANGE_TYPES)
    assert sum(p.nuisance.shift_px != (0, 0) for p in pairs) >= 5
    assert sum(p.nuisance.season != 0 for p in pairs) >= 5


def test_nuisance_only_pairs_have_no_truth_change():
    for seed in SEEDS[:8]:
        pair = make_pair(seed, no_change_p=1.0)
        assert pair.changes == () and not pair.changed and pair.caption == NO_CHANGE
        assert pair.nuisance.any
        # the images differ (nuisance) though nothing changed on the ground
        assert not np.array_equal(pair.before, pair.after)
        records = pair_records(pair, "x", "b.png", "a.png")
        assert [r["task"] for r in records] == ["change_caption", "change_ask"]
        assert records[1]["answer"] == "no" and all(r["boxes_px"] == [] for r in records)
        # without nuisance the two renders of a no-change pair are the same pixels
        clean = make_pair(seed, no_change_p=1.0, nuisance=False)
        assert np.array_equal(clean.before, clean.after)


def test_change_footprints_differ_in_pixels_and_nothing_else_does(clean_pairs):
    checked = 0
    for pair in clean_pairs:
        diff = np.abs(pair.before.astype(int) - pair.after.astype(int)).sum(axis=2)
        if not pair.changed:  # nothing in the window could change (bare yard): same pixels
            assert not diff.any()
            continue
        near = np.zeros(diff.shape, dtype=bool)
        for change in pair.changes:
            b = change.box
            x0, y0, x1, y1 = (round(v) for v in (b.x0, b.y0, b.x1, b.y1))
            assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128
            inside = diff[y0:y1, x0:x1]
            # the footprint itself changed: much of its box differs clearly (a field's or a
            # clearing's visible part need not fill its box)
            least = 0.3 if change.kind in ("building", "storage_tank", "water") else 0.15
            assert (inside > 30).mean() > least, (pair.seed, change)
            # shadows of 20 m buildings reach 22 px north-west of the footprint
            near[max(0, y0 - 25) : y1 + 3, max(0, x0 - 25) : x1 + 3] = True
            checked += 1
        assert not diff[~near].any(), f"pair {pair.seed}: pixels changed outside every change"
    assert checked >= 12


def test_misregistration_reads_the_before_window_one_pixel_off():
    seed = next(
        s
        for s in range(7_800_000, 7_800_300)
        if (n := make_pair(s, no_change_p=1.0).nuisance).shift_px != (0, 0) and n.side == "after"
    )
    pair = make_pair(seed, no_change_p=1.0)
    dx, dy = pair.nuisance.shift_px
    col, row, size = pair.window_px  # the after window; boxes are in its pixels
    scene = generate_scene(seed, 2 * size, pair.scene_class)
    read_before = scene.image[row - dy : row - dy + size, col - dx : col - dx + size].astype(int)
    read_after = scene.image[row : row + size, col : col + size].astype(int)
    # the before crop is the scene one pixel off (plus sensor noise only: side is "after")
    assert np.abs(pair.before.astype(int) - read_before).mean() < 3
    assert (
        np.abs(pair.before.astype(int) - read_after).mean()
        > np.abs(pair.before.astype(int) - read_before).mean() + 1
    )


def test_photometric_nuisance_shifts_vegetation_more_than_built_up():
    green = np.full((4, 4, 3), (80, 140, 60), dtype=np.uint8)
    grey = np.full((4, 4, 3), (150, 150, 150), dtype=np.uint8)
    autumn = Nuisance(season=1.0)
    g = apply_photometric(green, autumn).astype(int) - green
    assert g[..., 0].mean() > 10 and g[..., 2].mean() < 0  # redder, less blue: yellowed
    assert np.array_equal(apply_photometric(grey, autumn), grey)
    brighter = apply_photometric(grey, Nuisance(gain=1.2))
    assert brighter.mean() == pytest.approx(180, abs=1)


def test_captions_and_locations():
    size = (128, 128)
    assert location_word([BoxPx(100, 5, 120, 20)], size) == "north-east"
    assert location_word([BoxPx(50, 50, 70, 70)], size) == "centre"
    assert location_word([BoxPx(0, 90, 20, 120)], size) == "south-west"
    changes = [
        ChangeBox("water", "removed", BoxPx(50, 100, 70, 120), 3),
        ChangeBox("building", "new", BoxPx(90, 5, 110, 20), 1),
        ChangeBox("building", "new", BoxPx(100, 20, 120, 35), 2),
    ]
    assert (
        change_caption(changes, size)
        == "2 new buildings in the north-east; pond filled in the south"
    )
    assert change_caption([], size) == "no change"
    with pytest.raises(ValueError, match="unknown change"):
        ChangeBox("road", "new", BoxPx(0, 0, 1, 1), 1)


def test_ground_records_parse_back_to_the_truth_boxes(pairs):
    paper = box_convention("paper")
    n = 0
    for pair in pairs:
        for rec in pair_records(pair, str(pair.seed), "b.png", "a.png"):
            if rec["task"] != "change_ground":
                continue
            parsed = paper.parse(rec["answer"], (128, 128), (128, 128))
            truth = sorted((b["y0"], b["x0"], b["x1"], b["y1"]) for b in rec["boxes_px"])
            got = sorted((b.y0, b.x0, b.x1, b.y1) for b in parsed)
            assert len(got) == len(truth)
            assert np.allclose(got, truth, atol=0.2), (rec["id"], got, truth)
            n += 1
    assert n >= 20


def test_scene_edits_keep_everything_else_identical():
    base = generate_scene(31, 256, "urban")
    assert np.array_equal(generate_scene(31, 256, "urban", edits=SceneEdits()).image, base.image)
    house = next(o for o in base.objects if o.kind == "building")
    edited = generate_scene(31, 256, "urban", edits=SceneEdits(omit=frozenset({house.id})))
    assert [o.id for o in edited.objects] == [o.id for o in base.objects]  # ids unchanged
    assert not (edited.object_ids_px == house.id).any()
    changed = np.abs(edited.image.astype(int) - base.image.astype(int)).sum(axis=2) > 0
    b = house.box_px
    rows, cols = np.nonzero(changed)
    assert cols.min() >= b.x0 - 25 and cols.max() <= b.x1 + 2
    assert rows.min() >= b.y0 - 25 and rows.max() <= b.y1 + 2
    with pytest.raises(ValueError, match="field colour"):
        SceneEdits(recolour=((3, "purple"),))


def test_dataset_on_disk_and_reader(tmp_path):
    manifest = build_change_dataset(tmp_path / "pairs", 6, seed=9, box_grid_step=10)
    assert manifest["pairs"] == 6
    records = read_change_records(tmp_path / "pairs" / "pairs.jsonl")
    assert {r["task"] for r in records} >= {"change_caption", "change_ask"}
    samples = read_jsonl(tmp_path / "pairs" / "pairs.jsonl")  # the engine reads the same rows
    assert len(samples) == len(records)
    for sample in samples:
        before, after = sample.load_images()
        assert before.shape == after.shape == (128, 128, 3)
    for rec in records:
        for key in ("image_path", "before_image_path"):
            assert rec[key].endswith(".png") and Path(rec[key]).is_file()
        if rec["task"] == "change_ground":
            values = [
                int(v)
                for v in rec["answer"].replace("[", " ").replace("]", " ").replace(",", " ").split()
            ]
            assert all(v % 10 == 0 for v in values)  # snapped for training
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"id": "x", "task": "change_caption", "answer": "a", "image_path": "a.png"})
        + "\n",
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match=r"bad.jsonl:1: not a change record"):
        read_change_records(bad)
