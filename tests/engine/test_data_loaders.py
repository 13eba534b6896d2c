"""Benchmark loaders on the real samples in ../shared/data (counts checked against the files)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from engine.data.captions import load_captions
from engine.data.dior import load_dior_obb, load_dior_rsvg
from engine.data.dota import load_dota, read_dota_labels
from engine.data.formats import FORMATS, get_loader, load_dataset
from engine.data.images import read_rgb
from engine.data.instructions import read_jsonl, write_jsonl
from engine.data.rsvqa import load_rsvqa
from engine.data.scenes import load_scene_folders
from engine.errors import ConfigError, DataFormatError
from engine.parsing import box_format
from engine.types import Level, Task


@pytest.mark.parametrize(
    "folder, prefix, types",
    [
        ("rsvqa_lr", "LR_split_subset", {"rural_urban", "presence", "count", "comp"}),
        ("rsvqa_hr", "USGS_split_subset", {"presence", "count", "area", "comp"}),
    ],
)
def test_rsvqa_matches_the_json_files(shared_data, folder, prefix, types):
    root = shared_data / folder
    questions = json.loads((root / f"{prefix}_questions.json").read_text())["questions"]
    answers = {
        a["id"]: a["answer"]
        for a in json.loads((root / f"{prefix}_answers.json").read_text())["answers"]
    }
    samples = load_rsvqa(root)
    assert len(samples) == len([q for q in questions if q["active"]]) == 600
    assert Counter(s.question_type for s in samples) == Counter(q["type"] for q in questions)
    assert set(Counter(s.question_type for s in samples)) == types
    by_id = {s.id.split(":")[1]: s for s in samples}
    for q in questions:
        s = by_id[str(q["id"])]
        assert s.task is Task.ASK and s.question == q["question"]
        assert s.answer == answers[q["answers_ids"][0]]
        assert s.image_path.endswith(f"images/{q['img_id']}.tif")
        assert s.level is (Level.SCENE if q["type"] == "rural_urban" else Level.OBJECT)
    assert {s.source for s in samples} == {folder}


def test_rsvqa_images_open_with_pil(shared_data):
    for folder, side in (("rsvqa_lr", 256), ("rsvqa_hr", 512)):
        paths = {s.image_path for s in load_rsvqa(shared_data / folder)}
        assert len(paths) == 6
        for path in paths:
            img = read_rgb(path)
            assert img.shape == (side, side, 3) and img.dtype == np.uint8 and img.std() > 5


def test_dior_rsvg_expression_and_box(shared_data):
    g = shared_data / "grounding"
    [s] = load_dior_rsvg(g / "dior_rsvg_00001.xml", image_path=g / "dior_00001.jpg")
    assert s.task is Task.GROUND and s.question == "A green and brown golf field"
    assert s.boxes_px[0].xyxy == (133, 237, 684, 672) and s.boxes_px[0].label == "golffield"
    assert s.image_size_px == (800, 800) == s.load_image().shape[1::-1]
    assert s.answer == "[166, 296, 855, 840]"


def test_dior_obb_gives_oriented_box(shared_data):
    g = shared_data / "grounding"
    [s] = load_dior_obb(g / "dior_00001_obb.xml", image_path=g / "dior_00001.jpg")
    [box] = s.boxes_px
    assert s.question == "golf field"
    assert box.angle_deg == pytest.approx(0.0)
    assert box.xyxy == pytest.approx((133, 237, 684, 672))


def test_dota_planes_scaled_to_the_thumbnail(shared_data):
    label = shared_data / "detection" / "P2805__1024__0___0.txt"
    scale = 170 / 1024
    objects = read_dota_labels(label, scale)
    raw_lines = [ln for ln in label.read_text().splitlines() if ln.strip()]
    assert len(objects) == len(raw_lines) == 4
    assert {o.label for o in objects} == {"plane"} and not any(o.difficult for o in objects)
    first = [float(v) * scale for v in raw_lines[0].split()[:8]]
    assert objects[0].polygon_px[0] == pytest.approx((first[0], first[1]))
    [s] = load_dota(label, scale=scale)
    assert s.image_size_px == (170, 170) and len(s.boxes_px) == 4 and s.question == "plane"
    for obj, box in zip(objects, s.boxes_px):
        aabb = obj.aabb_px
        assert aabb.x0 >= 0 and aabb.x1 <= 170  # scaled into the 170 px image
        # the minimum-area rectangle is at most a little larger than the labelled quadrilateral
        quad = np.array(obj.polygon_px)
        quad_area = 0.5 * abs(
            np.dot(quad[:, 0], np.roll(quad[:, 1], -1))
            - np.dot(quad[:, 1], np.roll(quad[:, 0], -1))
        )
        assert quad_area <= box.area <= 1.1 * quad_area
        assert -45 <= box.angle_deg < 45
    axis = load_dota(label, scale=scale, oriented=False)[0]
    assert all(b.angle_deg is None for b in axis.boxes_px)
    assert read_rgb(s.image_path).shape == (170, 170, 3)  # RGBA png -> RGB


def test_scene_folders(shared_data):
    samples = load_scene_folders(shared_data / "scenes")
    folders = sorted(p.name for p in (shared_data / "scenes").iterdir() if p.is_dir())
    assert len(samples) == 21 and len(folders) == 7
    assert Counter(s.answer for s in samples) == {f: 3 for f in folders}
    assert all(s.labels == tuple(folders) and s.task is Task.CLASSIFY for s in samples)
    assert samples[0].load_image().shape == (400, 400, 3)


@pytest.mark.parametrize("name", ["rsicd", "rsitmd", "ucm", "sydney"])
def test_caption_sets_match_the_files(shared_data, name):
    set_dir = shared_data / "captions" / name
    caps = (set_dir / "train_caps.txt").read_text().splitlines()
    files = (set_dir / "train_filename.txt").read_text().splitlines()
    per = len(caps) // len(files)
    with_caption = [
        f for i, f in enumerate(files) if any(c.strip() for c in caps[i * per : (i + 1) * per])
    ]
    samples = load_captions(set_dir)
    assert len(samples) == len(with_caption)
    assert sum(len(s.references) for s in samples) == sum(1 for c in caps if c.strip())
    assert [s.image_path.rsplit("/", 1)[1] for s in samples] == with_caption
    assert samples[0].answer == samples[0].references[0] == caps[0].strip()
    assert all(s.task is Task.CAPTION and s.source == name for s in samples[:50])


def test_caption_images_absent_is_reported_on_use(shared_data, tmp_path):
    [first, *_] = load_captions(
        shared_data / "captions" / "ucm", image_root=tmp_path / "ucm_images"
    )
    assert first.image_path == str(tmp_path / "ucm_images" / "1.tif")
    with pytest.raises(DataFormatError, match="image_root"):
        first.load_image()


def test_real_samples_survive_a_jsonl_round_trip(shared_data, tmp_path):
    g = shared_data / "grounding"
    samples = (
        load_rsvqa(shared_data / "rsvqa_lr")[:20]
        + load_dior_rsvg(g / "dior_rsvg_00001.xml", image_path=g / "dior_00001.jpg")
        + load_dota(shared_data / "detection" / "P2805__1024__0___0.txt", scale=170 / 1024)
        + load_scene_folders(shared_data / "scenes")[:3]
    )
    write_jsonl(samples, tmp_path / "mixed.jsonl")
    assert read_jsonl(tmp_path / "mixed.jsonl") == samples


def test_registry(shared_data):
    assert get_loader("rsvqa") is load_rsvqa
    assert set(FORMATS) >= {
        "rsvqa",
        "dior_rsvg",
        "dior_obb",
        "dota",
        "scene_folders",
        "captions",
        "jsonl",
    }
    with pytest.raises(ConfigError, match="unknown dataset format 'coco'.*captions.*rsvqa"):
        get_loader("coco")
    with pytest.raises(ConfigError, match="no option.*'scale'"):
        load_dataset("rsvqa", shared_data / "rsvqa_lr", scale=2.0)
    assert len(load_dataset("dota", shared_data / "detection", scale=170 / 1024)) == 1


def test_malformed_inputs_raise_clear_errors(tmp_path):
    (tmp_path / "d.txt").write_text("gsd:0.1\n1 2 3 4 5 6 plane 0\n")
    with pytest.raises(DataFormatError, match=r"d\.txt:2: expected 'x1 y1"):
        read_dota_labels(tmp_path / "d.txt")
    (tmp_path / "d.txt").write_text("1 2 3 4 5 6 7 plane 0\n")
    with pytest.raises(DataFormatError, match=r"d\.txt:1: non-numeric"):
        read_dota_labels(tmp_path / "d.txt")
    (tmp_path / "x.xml").write_text("<annotation><object>")
    with pytest.raises(DataFormatError, match="malformed XML"):
        load_dior_rsvg(tmp_path / "x.xml")
    caps = tmp_path / "caps"
    caps.mkdir()
    (caps / "train_caps.txt").write_text("a\nb\nc\n")
    (caps / "train_filename.txt").write_text("1.tif\n2.tif\n")
    with pytest.raises(DataFormatError, match="do not split evenly"):
        load_captions(caps)
    with pytest.raises(DataFormatError, match="exactly one \\*_questions.json"):
        load_rsvqa(tmp_path)
    with pytest.raises(DataFormatError, match="no class folders"):
        load_scene_folders(tmp_path)


def test_oriented_answers_read_back_with_the_engine_box_parser(shared_data):
    [s] = load_dota(shared_data / "detection" / "P2805__1024__0___0.txt", scale=170 / 1024)
    parsed = box_format("grid1000").parse(s.answer, (170, 170), (170, 170))
    assert len(parsed) == len(s.boxes_px) == 4
    for got, want in zip(parsed, s.boxes_px):
        assert got.xyxy == pytest.approx(want.xyxy, abs=0.2) and got.angle_deg == round(
            want.angle_deg
        )
