"""Synthetic scenes: determinism, georeferencing, ground truth consistent with pixels, tasks."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from engine.data.instructions import read_jsonl
from engine.metrics import box_iou
from engine.parsing import box_format
from engine.types import Task
from lab.synthetic.canvas import polygon_mask
from lab.synthetic.dataset import build_dataset, scene_seed
from lab.synthetic.layouts import generate_scene
from lab.synthetic.scene import OBJECT_KINDS, ROOF_COLOURS, SCENE_CLASSES, TANK_COLOURS
from lab.synthetic.tasks import PRESENCE_MIN_M2, exact_count, make_samples
from lab.synthetic.views import crop_views, referring_expressions, resolve


@pytest.fixture(scope="module")
def scenes():
    return {cls: generate_scene(21, 448, cls) for cls in SCENE_CLASSES}


def _totals(scene) -> np.ndarray:
    return np.bincount(scene.object_ids_px.ravel(), minlength=len(scene.objects) + 1)


def test_deterministic_by_seed():
    a, b, c = generate_scene(3, 256), generate_scene(3, 256), generate_scene(4, 256)
    assert (
        np.array_equal(a.image, b.image) and a.objects == b.objects and a.transform == b.transform
    )
    assert not np.array_equal(a.image, c.image)
    assert a.image.dtype == np.uint8 and a.image.shape == (256, 256, 3)


def test_scene_classes_and_object_kinds(scenes):
    kinds = {cls: Counter(o.kind for o in s.objects) for cls, s in scenes.items()}
    assert kinds["rural"]["field"] >= 2
    assert kinds["urban"]["building"] >= 10 and kinds["urban"]["road"] >= 2
    assert kinds["industrial"]["building"] + kinds["industrial"]["storage_tank"] >= 2
    assert set().union(*kinds.values()) <= set(OBJECT_KINDS)
    with pytest.raises(ValueError, match="unknown scene class 'desert'"):
        generate_scene(1, 256, "desert")


def test_georeferencing_is_utm_and_consistent(scenes):
    for scene in scenes.values():
        a, b, c, d, e, f = scene.transform
        assert scene.crs == "EPSG:32633" and (a, b, d, e) == (0.5, 0.0, 0.0, -0.5)
        assert 300_000 <= c <= 700_000 and 4_600_000 <= f <= 5_600_000
        for obj in scene.objects[:25]:
            px = np.array(obj.footprint_px)
            x, y = scene.pixel_to_map(px[:, 0], px[:, 1])
            assert np.allclose(np.stack([x, y], 1), obj.footprint_crs)
            assert np.allclose(np.stack(scene.map_to_pixel(x, y), 1), px)
            # x = a*col + b*row + c, y = d*col + e*row + f, written out for one vertex
            col, row = px[0]
            assert obj.footprint_crs[0] == pytest.approx(
                (a * col + b * row + c, d * col + e * row + f)
            )
            assert obj.area_m2 == pytest.approx(_shoelace(px) * 0.25)


def _shoelace(p: np.ndarray) -> float:
    return 0.5 * abs(np.dot(p[:, 0], np.roll(p[:, 1], -1)) - np.dot(p[:, 1], np.roll(p[:, 0], -1)))


def test_visible_pixels_lie_inside_their_footprints(scenes):
    for scene in scenes.values():
        h, w = scene.object_ids_px.shape
        for obj in scene.objects:
            own = scene.object_ids_px == obj.id
            found = polygon_mask(np.array(obj.footprint_px), h, w)
            inside = np.zeros((h, w), bool)
            if found is not None:
                inside[found[0], found[1]] = found[2]
            assert not (own & ~inside).any(), (
                f"object {obj.id} ({obj.kind}) drawn outside its footprint"
            )


def _erode(mask: np.ndarray, steps: int) -> np.ndarray:
    """Binary erosion with the 4-neighbourhood (edges count as outside)."""
    for _ in range(steps):
        m = np.pad(mask, 1)
        mask = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return mask


def _nearest(colour: np.ndarray, palette: dict) -> str:
    return min(palette, key=lambda name: np.linalg.norm(colour - np.array(palette[name], float)))


def test_roofs_and_tanks_show_their_colour(scenes):
    checked = 0
    for scene in scenes.values():
        for obj in scene.objects:
            if obj.kind not in ("building", "storage_tank"):
                continue
            core = _erode(scene.object_ids_px == obj.id, 2)
            if core.sum() < 20:
                continue
            median = np.median(scene.image[core].astype(float), axis=0)
            palette = ROOF_COLOURS if obj.kind == "building" else TANK_COLOURS
            assert _nearest(median, palette) == obj.colour, (obj.id, obj.kind, obj.colour, median)
            checked += 1
    assert checked >= 15


def test_shadows_fall_north_west_of_buildings(scenes):
    """Ground just west of a roof (inside the shadow) is darker than ground just east of it."""
    darker, checked = 0, 0
    for cls in ("urban", "industrial"):  # axis-aligned buildings
        scene = scenes[cls]
        grey, ids = scene.image.astype(float).mean(axis=2), scene.object_ids_px
        for obj in [o for o in scene.objects if o.kind == "building"]:
            x0, y0, x1, _ = (round(v) for v in obj.box_px.xyxy)
            rows = slice(y0 + 2, y0 + 6)
            west, east = (rows, slice(x0 - 3, x0 - 1)), (rows, slice(x1 + 1, x1 + 3))
            if x0 < 3 or x1 + 3 > scene.size_px[0] or ids[west].any() or ids[east].any():
                continue  # only bare ground on both sides
            checked += 1
            darker += np.median(grey[west]) < 0.8 * np.median(grey[east])
    assert checked >= 5 and darker >= 0.8 * checked, (darker, checked)


def test_presence_and_count_answers_match_the_id_map(scenes):
    for scene in scenes.values():
        totals = _totals(scene)
        views = {f"{v.row_off}_{v.col_off}": v for v in crop_views(scene, 224)}
        for s in make_samples(scene, 224):
            view = views[s.id.split(":")[2]]
            if s.question_type == "presence":
                kind = s.id.rsplit("presence-", 1)[1]
                area_m2 = sum(view.visible_px[o.id] for o in scene.objects if o.kind == kind) * 0.25
                assert (s.answer == "yes") == (area_m2 >= PRESENCE_MIN_M2[kind]) and (
                    s.answer == "no"
                ) == (area_m2 == 0)
            if s.question_type == "count":
                kind = "building" if "building" in s.question else "storage_tank"
                assert s.answer == str(exact_count(view, kind, totals))


def test_referring_expressions_pick_exactly_one_object(scenes):
    checked = 0
    for scene in scenes.values():
        totals = _totals(scene)
        for view in crop_views(scene, 224):
            for expr, target, box in referring_expressions(view, totals):
                assert [o.id for o in resolve(expr, view, totals)] == [target.id]
                if (
                    expr.selector == "only"
                ):  # independent check: no other visible object fits the words
                    others = [
                        o
                        for o in scene.objects
                        if o.id != target.id and expr.matches(o) and view.visible_px[o.id] >= 12
                    ]
                    assert others == [], expr.text()
                visible = view.ids == target.id
                rows, cols = np.nonzero(visible)
                drawn = type(box)(cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
                assert box_iou(box, drawn) > 0.75  # the answer box is where the object's pixels are
                checked += 1
    assert checked >= 20


def test_grounding_samples_are_unambiguous_and_on_the_grid(scenes):
    n = 0
    for scene in scenes.values():
        samples = [s for s in make_samples(scene, 224) if s.task is Task.GROUND]
        per_crop = Counter((s.id.split(":")[2], s.question) for s in samples)
        assert max(per_crop.values()) == 1  # one description never names two targets in a crop
        for s in samples:
            grid = s.boxes_grid()[0]
            assert s.answer == grid.text() and 0 <= grid.x0 < grid.x1 <= 1000
            n += 1
    assert n >= 10


def test_all_tasks_present_with_right_fields(scenes):
    samples = [s for scene in scenes.values() for s in make_samples(scene, 224)]
    tasks = Counter(s.task for s in samples)
    assert set(tasks) == {t for t in Task if not t.is_change}  # change: lab.synthetic.change
    for s in samples:
        assert s.image.shape == (224, 224, 3) and s.source == "synthetic"
        if s.task is Task.CLASSIFY:
            assert s.labels == SCENE_CLASSES and s.answer in SCENE_CLASSES
        if s.task is Task.REGION:
            assert s.region_px is not None and s.answer.split()[0] in ("a", "an")
    levels = Counter(s.level.value for s in samples if s.task is Task.CAPTION)
    assert levels["scene"] == 12 and levels["object"] >= 3


def test_build_dataset_splits_balance_and_files(tmp_path):
    manifest = build_dataset(tmp_path / "ds", n_scenes=12, seed=5, crop_px=112)
    seeds = manifest.seeds
    assert [len(seeds[s]) for s in ("train", "val", "test")] == [10, 1, 1]
    assert set(seeds["train"]).isdisjoint(seeds["test"]) and seeds["train"][0] == scene_seed(5, 0)
    other = build_dataset(tmp_path / "other", n_scenes=3, seed=6, crop_px=112)
    assert set(other.seeds["train"]).isdisjoint(seeds["train"] + seeds["val"] + seeds["test"])
    train = read_jsonl(tmp_path / "ds" / "train.jsonl")
    presence = Counter(
        (s.id.rsplit("presence-", 1)[1], s.answer) for s in train if s.question_type == "presence"
    )
    for kind in {k for k, _ in presence}:
        assert presence[(kind, "yes")] == presence[(kind, "no")]
    classes = Counter(s.answer for s in train if s.task is Task.CLASSIFY)
    assert set(classes) == set(SCENE_CLASSES) and max(classes.values()) - min(classes.values()) <= 4
    first = train[0].load_image()
    assert first.shape == (112, 112, 3)
    records = [json.loads(x) for x in (tmp_path / "ds" / "corpus.jsonl").read_text().splitlines()]
    assert {r["level"] for r in records} == {"scene", "object"}
    assert all(set(r) == {"text", "source", "level"} and r["text"] for r in records)
    assert json.loads((tmp_path / "ds" / "manifest.json").read_text())["counts"] == manifest.counts


def test_build_dataset_is_the_same_with_worker_processes(tmp_path):
    build_dataset(tmp_path / "one", n_scenes=3, seed=8, crop_px=112, fractions=(1.0, 0.0, 0.0))
    build_dataset(
        tmp_path / "two", n_scenes=3, seed=8, crop_px=112, fractions=(1.0, 0.0, 0.0), workers=2
    )
    assert (tmp_path / "one" / "train.jsonl").read_text() == (
        tmp_path / "two" / "train.jsonl"
    ).read_text()
    one = sorted((tmp_path / "one" / "images" / "train").iterdir())
    assert [p.read_bytes() for p in one] == [
        (tmp_path / "two" / "images" / "train" / p.name).read_bytes() for p in one
    ]


def test_geojson_of_footprints(scenes):
    gj = scenes["urban"].to_geojson()
    assert gj["type"] == "FeatureCollection" and gj["crs"] == "EPSG:32633"
    feat = gj["features"][0]
    ring = feat["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and feat["properties"]["kind"] in OBJECT_KINDS


def test_polygon_mask_uses_pixel_centres():
    from shapely import contains_xy
    from shapely.geometry import Polygon

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:64] + 0.5
    for _ in range(20):
        n = int(rng.integers(3, 10))
        angles, radii = np.sort(rng.uniform(0, 2 * np.pi, n)), rng.uniform(4, 25, n)
        poly = np.stack([32 + radii * np.cos(angles), 24 + radii * np.sin(angles)], axis=1)
        for shape in (
            poly,
            np.array([[3.2, 4.7], [40.5, 4.7], [40.5, 30.1], [3.2, 30.1]]),
        ):  # + rectangle fast path
            mask = np.zeros((48, 64), bool)
            found = polygon_mask(shape, 48, 64)
            if found is not None:
                mask[found[0], found[1]] = found[2]
            assert np.array_equal(mask, contains_xy(Polygon(shape), xx, yy))


def test_engine_data_imports_no_raster_or_ui_stack():
    import subprocess
    import sys

    code = (
        "import sys, engine.data, engine.metrics, lab.synthetic.layouts; "
        "heavy = ('rasterio', 'gradio', 'tiles', 'torch', 'scipy'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo
    )
    assert out.stdout.strip() == "[]"


def test_answers_read_back_with_the_engine_box_parser(scenes):
    grid = box_format("grid1000")
    samples = [s for s in make_samples(scenes["industrial"], 224) if s.task is Task.GROUND]
    assert samples
    for s in samples:
        [parsed] = grid.parse(s.answer, (224, 224), (224, 224))
        assert parsed.xyxy == pytest.approx(s.boxes_px[0].xyxy, abs=224 / 1000)


def test_mosaic_keeps_ground_truth_consistent():
    from lab.synthetic.mosaic import generate_mosaic

    layout = (("rural", "urban"), ("industrial", "rural"))
    mosaic = generate_mosaic(2, layout, tile_px=192)
    assert mosaic.image.shape == (384, 384, 3) and mosaic.scene_class == "mixed"
    part = generate_scene(2 * 100 + 3, 192, "rural")  # the bottom-right cell, on its own
    assert np.array_equal(mosaic.image[192:, 192:], part.image)
    offset = len(mosaic.objects) - len(part.objects)  # the last cell's objects come last
    ids = mosaic.object_ids_px[192:, 192:]
    assert np.array_equal(np.where(ids > 0, ids - offset, 0), part.object_ids_px)
    assert mosaic.objects[offset].footprint_px[0] == pytest.approx(
        tuple(np.add(part.objects[0].footprint_px[0], 192))
    )
    assert (
        mosaic.class_of(200, 10, 100, 100) == "urban"
        and mosaic.class_of(150, 150, 100, 100) is None
    )
    assert [o.id for o in mosaic.objects] == list(range(1, len(mosaic.objects) + 1))
    for obj in mosaic.objects[::7]:
        px = np.array(obj.footprint_px)
        assert np.allclose(np.stack(mosaic.pixel_to_map(px[:, 0], px[:, 1]), 1), obj.footprint_crs)
    labels = Counter(
        s.answer for s in make_samples(mosaic, 96, stride_px=96) if s.task is Task.CLASSIFY
    )
    assert labels == {"rural": 8, "urban": 4, "industrial": 4}
    straddling = make_samples(mosaic, 128, stride_px=128)  # crops across seams are skipped
    assert all(s.id.split(":")[2] not in ("128_128",) for s in straddling)
