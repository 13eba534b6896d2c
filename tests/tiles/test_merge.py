"""Merging boxes across tiles (tiles/merge.py): NMS, WBF, seams, labels, scale."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

import tiles
from tests.tiles.test_tiling import pixel_raster
from tiles import Crop, MergedBox, TilingError, merge_boxes, merge_tiles, plan_tiles
from tiles.merge import TileDetections


def fake_crop(tile: tiles.PlannedTile) -> Crop:
    """A crop of ``tile`` as tile_crops would give it (pixels unused by merging)."""
    w, h = tile.out_px
    return Crop(image=np.zeros((h, w, 3), "uint8"), valid=np.ones((h, w), bool),
                transform=Affine.identity(), crs=None, window=tile.window,
                raster_path=Path("plain.png"), raster_id=None,
                scale_x=tile.window.width / w, scale_y=tile.window.height / h)


def test_empty_input() -> None:
    assert merge_boxes(np.zeros((0, 4)), [], []) == ()
    plan = plan_tiles(pixel_raster(600, 600), tile_px=256)
    assert merge_tiles(plan, []) == ()
    empty = tiles.tile_detections(plan.tiles[0], fake_crop(plan.tiles[0]), [], [], [])
    assert merge_tiles(plan, [empty]) == ()


def test_nms_keeps_the_higher_score() -> None:
    boxes = [(0, 0, 10, 10), (1, 1, 11, 11), (50, 50, 60, 60)]
    merged = merge_boxes(boxes, [0.3, 0.9, 0.5], ["car"] * 3, tile_indices=[0, 1, 1],
                         method="nms")
    assert merged == (
        MergedBox(1, 1, 11, 11, score=0.9, label="car", n_merged=2, tiles=(0, 1)),
        MergedBox(50, 50, 60, 60, score=0.5, label="car", n_merged=1, tiles=(1,)),
    )


def test_wbf_averages_coordinates_weighted_by_score() -> None:
    (merged,) = merge_boxes([(0, 0, 10, 10), (1, 1, 11, 11)], [0.9, 0.3], ["car"] * 2,
                            method="wbf")
    assert merged.xyxy == pytest.approx((0.25, 0.25, 10.25, 10.25))
    assert merged.score == 0.9 and merged.n_merged == 2


def test_different_labels_are_not_merged() -> None:
    merged = merge_boxes([(0, 0, 10, 10), (0, 0, 10, 10)], [0.9, 0.8], ["car", "truck"])
    assert sorted(b.label for b in merged) == ["car", "truck"]


def test_below_the_iou_threshold_boxes_stay_apart() -> None:
    boxes = [(0, 0, 10, 10), (5, 0, 15, 10)]  # IoU 1/3
    assert len(merge_boxes(boxes, [0.9, 0.8], ["a", "a"], iou_threshold=0.5)) == 2
    assert len(merge_boxes(boxes, [0.9, 0.8], ["a", "a"], iou_threshold=0.3)) == 1


def test_greedy_chain_matches_textbook_nms() -> None:
    # a suppresses b; b would suppress c, but b is gone, so c stays.
    boxes = [(0, 0, 10, 10), (3, 0, 13, 10), (6, 0, 16, 10)]
    merged = merge_boxes(boxes, [0.9, 0.8, 0.7], ["x"] * 3, iou_threshold=0.5, method="nms")
    assert [b.xyxy for b in merged] == [(0, 0, 10, 10), (6, 0, 16, 10)]


def reference_nms(boxes: np.ndarray, scores: np.ndarray, labels: list, thr: float) -> set:
    """Textbook greedy NMS, O(N^2), for comparison."""
    kept: list[int] = []
    for i in sorted(range(len(boxes)), key=lambda k: (-scores[k], k)):
        if all(labels[i] != labels[k] or iou(boxes[i], boxes[k]) < thr for k in kept):
            kept.append(i)
    return {tuple(boxes[k]) + (labels[k],) for k in kept}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 40), st.integers(0, 2**32 - 1), st.sampled_from([0.3, 0.5, 0.7]))
def test_vectorised_nms_equals_textbook_nms(n: int, seed: int, thr: float) -> None:
    rng = np.random.default_rng(seed)
    xy = rng.integers(0, 60, (n, 2)).astype(float)
    boxes = np.concatenate([xy, xy + rng.integers(2, 25, (n, 2))], axis=1)
    scores = rng.choice([0.2, 0.5, 0.9], n) if seed % 2 else rng.uniform(0, 1, n)
    labels = rng.choice(["a", "b"], n).tolist()
    merged = merge_boxes(boxes, scores, labels, method="nms", iou_threshold=thr)
    assert {(*b.xyxy, b.label) for b in merged} == reference_nms(boxes, scores, labels, thr)
    assert sum(b.n_merged for b in merged) == n


def seam_plan() -> tiles.TilePlan:
    plan = plan_tiles(pixel_raster(896, 512), tile_px=512, overlap_px=128)
    assert [t.bounds_px for t in plan.tiles] == [(0, 0, 512, 512), (384, 0, 896, 512)]
    return plan


@pytest.mark.parametrize("method", tiles.MERGE_METHODS)
def test_object_on_a_seam_is_reported_once(method: str) -> None:
    plan = seam_plan()
    left, right = plan.tiles
    # Object at raster x 500..560: tile 0 sees only 500..512 (cut by its inner right edge),
    # tile 1 sees it whole. IoU of the two boxes is 0.2: without the seam rule, two objects.
    cut = tiles.tile_detections(left, fake_crop(left), [(500, 100, 512, 140)], [0.95], ["tank"])
    whole = tiles.tile_detections(right, fake_crop(right), [(116, 100, 176, 140)], [0.8],
                                  ["tank"])
    (merged,) = merge_tiles(plan, [cut, whole], method=method)
    assert merged.xyxy == (500, 100, 560, 140)
    assert merged.tiles == (0, 1) and merged.n_merged == 2 and merged.score == 0.95
    boxes = np.concatenate([cut.boxes_px, whole.boxes_px])
    assert len(merge_boxes(boxes, [0.95, 0.8], ["tank"] * 2, tile_indices=[0, 1])) == 2


def test_box_on_the_window_edge_is_not_a_seam_cut() -> None:
    plan = seam_plan()
    left, right = plan.tiles
    # A small box inside a larger one of another tile, touching the raster's left edge
    # (not a seam): it is another object, kept.
    small = tiles.tile_detections(left, fake_crop(left), [(0, 10, 6, 20)], [0.9], ["a"])
    big = TileDetections(right, np.array([[0.0, 0.0, 40.0, 40.0]]), np.array([0.8]), ("a",))
    assert len(merge_tiles(plan, [small, big])) == 2


def test_tile_detections_map_decimated_and_oriented_boxes() -> None:
    plan = plan_tiles(pixel_raster(4000, 4000), tile_px=256, overlap_px=0, decimation=2)
    tile = plan.tiles[1]  # columns 512..1024
    found = tiles.tile_detections(tile, fake_crop(tile), [(10, 20, 30, 40, 90.0), (0, 0, 1, 1)],
                                  [0.5, 0.6], ["a", "b"])
    np.testing.assert_allclose(found.boxes_px, [[532, 40, 572, 80], [512, 0, 514, 2]])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": "soft"}, "unknown merge method 'soft'"),
    ({"iou_threshold": 0.0}, r"iou_threshold must be in \(0, 1\]"),
    ({"seam_iou": 1.5}, r"seam_iou must be in \(0, 1\]"),
])
def test_bad_parameters(kwargs: dict, message: str) -> None:
    with pytest.raises(TilingError, match=message):
        merge_boxes([(0, 0, 1, 1)], [0.5], ["a"], **kwargs)


def test_bad_boxes_and_lengths() -> None:
    with pytest.raises(TilingError, match="box 1 needs finite x0 < x1"):
        merge_boxes([(0, 0, 1, 1), (5, 0, 1, 1)], [0.5, 0.5], ["a", "a"])
    with pytest.raises(TilingError, match="2 boxes, 1 scores"):
        merge_boxes([(0, 0, 1, 1), (2, 0, 3, 1)], [0.5], ["a", "a"])


def simulate_seam_scene(method: str, *, seam: bool, seed: int = 0, sigma: float = 1.5):
    """(objects found, duplicates, mean IoU with the truth of matched objects) on a synthetic
    scene: 300 objects of 16-60 px on a 3 x 4 tile grid (tile 512, overlap 128); each tile
    reports the visible part of every object it meets, cut sides on the tile edge, other sides
    with N(0, sigma) px noise, score U(0.5, 1)."""
    rng = np.random.default_rng(seed)
    raster = pixel_raster(1664, 1280)
    plan = plan_tiles(raster, tile_px=512, overlap_px=128)
    xy = rng.uniform(0, [1600, 1216], (300, 2))
    truth = np.concatenate([xy, xy + rng.uniform(16, 60, (300, 2))], axis=1)
    found = []
    for tile in plan.tiles:
        x0, y0, x1, y1 = tile.bounds_px
        vis = np.column_stack([np.maximum(truth[:, 0], x0), np.maximum(truth[:, 1], y0),
                               np.minimum(truth[:, 2], x1), np.minimum(truth[:, 3], y1)])
        seen = (vis[:, 0] < vis[:, 2] - 1) & (vis[:, 1] < vis[:, 3] - 1)
        vis = vis[seen]
        cut_side = vis != truth[seen]
        noisy = vis + rng.normal(0, sigma, vis.shape) * ~cut_side
        noisy = np.clip(noisy, [x0, y0, x0, y0], [x1, y1, x1, y1])
        noisy = noisy[(noisy[:, 0] < noisy[:, 2]) & (noisy[:, 1] < noisy[:, 3])]
        found.append(TileDetections(tile, noisy, rng.uniform(0.5, 1, len(noisy)),
                                    ("obj",) * len(noisy)))
    merged = merge_tiles(plan, found, method=method, seam_tol_px=2.0 if seam else -1e9)
    found_px = np.array([m.xyxy for m in merged])[:, None, :]  # (M, 1, 4) vs truth (N, 4)
    w = np.clip(np.minimum(found_px[..., 2], truth[:, 2]) - np.maximum(found_px[..., 0],
                                                                      truth[:, 0]), 0, None)
    h = np.clip(np.minimum(found_px[..., 3], truth[:, 3]) - np.maximum(found_px[..., 1],
                                                                      truth[:, 1]), 0, None)
    area_found = (found_px[..., 2] - found_px[..., 0]) * (found_px[..., 3] - found_px[..., 1])
    area_truth = (truth[:, 2] - truth[:, 0]) * (truth[:, 3] - truth[:, 1])
    best = (w * h / (area_found + area_truth - w * h)).max(axis=0)  # (N,)
    matched = best >= 0.5
    return int(matched.sum()), len(merged) - int(matched.sum()), float(best[matched].mean())


def test_seam_scene_nms_and_wbf() -> None:
    results = {(m, s): simulate_seam_scene(m, seam=s) for m in ("nms", "wbf") for s in (1, 0)}
    for method in ("nms", "wbf"):
        found, duplicates, _ = results[(method, True)]
        assert found == 300 and duplicates <= 3
        assert results[(method, False)][1] > 10 * max(1, duplicates)
    assert results[("wbf", True)][2] > results[("nms", True)][2]


def test_fifty_thousand_boxes_merge_fast() -> None:
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 20_000, (25_000, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(8, 40, (25_000, 2))], axis=1)
    boxes = np.concatenate([boxes, boxes + rng.normal(0, 1, boxes.shape)])
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    start = time.perf_counter()
    merged = merge_boxes(boxes, rng.uniform(0, 1, 50_000), ["a", "b"] * 25_000)
    assert time.perf_counter() - start < 10  # ~0.6 s on one free core
    assert 24_000 <= len(merged) <= 25_000  # pairs merge; a few true objects overlap


def test_boxes_must_be_n_by_4() -> None:
    with pytest.raises(TilingError, match=r"N x 4 .* got shape \(1, 5\)"):
        merge_boxes(np.zeros((1, 5)), [0.5], ["a"])
