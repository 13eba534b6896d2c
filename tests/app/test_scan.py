"""app.scan: whole-scene search over real rasters, tiling, merging, checkpoints and writing.

Most tests use :class:`RedDetector`, a stand-in for the *model only*: it answers the ground task
with the boxes of the pure-red blobs it sees in each crop, so the boxes are known and the
merging across seams can be checked. Steering the tiny model's logits (as
tests/engine/test_engine_run.py does) gives one scripted answer per call, not an answer that
depends on which tile the model is looking at, so it cannot place an object on a seam. Reading,
tiling, mapping to raster pixels, merging, checkpoints and writing are the real code; one test
runs the real tiny engine through the command end to end.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from affine import Affine
from scipy import ndimage

import tiles
from app.scan import main
from app.scanning import (
    UNSCORED_BOX_SCORE,
    TileCheckpoint,
    layer_name,
    plan_scan,
    scan_raster,
)
from engine.types import Answer, BoxPx, Task
from tests.app.rasters import GEO_CRS, write_geo_raster
from tests.engine.tiny import one_torch_thread  # noqa: F401

SIZE_PX = 300  # tile 128, overlap 16: tiles at 0, 112, 172 along each axis
TRANSFORM = Affine(2.0, 0.0, 500_000.0, 0.0, -2.0, 4_995_000.0)
# (x0, y0, x1, y1) raster px, pixel edges. SEAM crosses tile 0's right edge (x = 128) and lies
# whole in the next tile; OVERLAP lies whole in two tiles; ALONE in one tile.
SEAM = (120, 40, 140, 60)
OVERLAP = (180, 190, 200, 210)
ALONE = (20, 250, 40, 270)
OBJECTS = (SEAM, OVERLAP, ALONE)


class RedDetector:
    """Stands in for the model: boxes (crop px) of the pure-red blobs of each crop, labelled
    with the query, no score (like the engine today). Records the crops it was shown."""

    def __init__(self) -> None:
        self.crops: list[np.ndarray] = []
        self.batches: list[int] = []

    def run(self, image: np.ndarray, task, question=None) -> Answer:
        return self.run_batch([image], task, question)[0]

    def run_batch(self, images, task, question=None) -> list[Answer]:
        assert Task.parse(task) is Task.GROUND
        self.batches.append(len(images))
        self.crops.extend(images)
        return [Answer(text="", task=Task.GROUND, boxes_px=self._boxes(im, question),
                       image_size_px=(im.shape[1], im.shape[0])) for im in images]

    @staticmethod
    def _boxes(image: np.ndarray, label: str) -> tuple[BoxPx, ...]:
        red = (image[..., 0] == 255) & (image[..., 1] == 0) & (image[..., 2] == 0)
        blobs, _ = ndimage.label(red)
        return tuple(BoxPx(float(s[1].start), float(s[0].start), float(s[1].stop),
                           float(s[0].stop), label=label)
                     for s in ndimage.find_objects(blobs))


def scene(size_px: int = SIZE_PX) -> np.ndarray:
    rng = np.random.default_rng(0)
    image = rng.integers(40, 200, (size_px, size_px, 3), dtype=np.uint8)
    for x0, y0, x1, y1 in OBJECTS:
        image[y0:y1, x0:x1] = (255, 0, 0)
    return image


@pytest.fixture(scope="module")
def scene_tif(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scan") / "tanks.tif"
    return tiles.write_raster(path, scene(), GEO_CRS, TRANSFORM, layout="hwc",
                              colorinterp=("red", "green", "blue"), tiled=True)


@pytest.fixture(scope="module")
def scene_png(tmp_path_factory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("scan") / "photo.png"
    Image.fromarray(scene()).save(path)
    return path


def test_every_tile_is_visited_once_and_a_seam_object_is_one_feature(scene_tif):
    raster = tiles.open_raster(scene_tif, trusted=True)
    model = RedDetector()
    visited = []
    result = scan_raster(raster, model, "storage tank", tile_px=128, batch_size=4,
                         progress=lambda found: visited.append(found.tile.index))
    plan = plan_scan(raster, model, tile_px=128)
    assert sorted(visited) == [t.index for t in plan.tiles] == list(range(9))
    assert model.batches == [4, 4, 1] and len(model.crops) == 9
    assert (result.tiles_done, result.tiles_total, result.stopped) == (9, 9, False)
    assert result.coordinate_space == tiles.LONLAT and result.grid_shape == (3, 3)
    found = sorted(result.objects, key=lambda o: o.box_px)
    assert np.allclose([o.box_px for o in found], sorted(OBJECTS))
    seam = next(o for o in found if o.box_px[0] == pytest.approx(SEAM[0]))
    assert seam.n_merged == 2 and len(seam.tiles) == 2  # cut view + whole view: one object
    overlap = next(o for o in found if o.box_px[0] == pytest.approx(OVERLAP[0]))
    assert overlap.n_merged == 4  # whole in the 2 x 2 tiles around (180..200, 190..210)
    assert {o.score for o in found} == {UNSCORED_BOX_SCORE}
    assert {o.label for o in found} == {"storage tank"}
    lon, lat = found[0].polygon.centroid.coords[0]
    assert 14.9 < lon < 15.1 and 45.0 < lat < 45.2  # UTM 33N, 500 km E, 4995 km N


def test_a_region_limits_the_tiles_and_plain_images_stay_in_pixels(scene_png):
    import shapely

    raster = tiles.open_raster(scene_png, trusted=True)
    model = RedDetector()
    result = scan_raster(raster, model, "tank", tile_px=128, region_px=shapely.box(0, 0, 100, 100))
    assert result.tiles_total == 1 and result.objects == ()  # SEAM's cut view lies outside
    result = scan_raster(raster, model, "tank", tile_px=128)
    assert result.coordinate_space == tiles.PIXEL
    [feature, *_] = result.features()
    assert feature["properties"]["coordinate_space"] == "pixel"
    assert feature["properties"]["image"] == "photo.png"


def test_should_stop_keeps_what_was_found_and_done_tiles_are_not_run_again(scene_tif):
    raster = tiles.open_raster(scene_tif, trusted=True)
    model = RedDetector()
    first: dict[int, tiles.TileDetections] = {}
    calls = iter(range(100))
    partial = scan_raster(raster, model, "tank", tile_px=128, batch_size=2,
                          should_stop=lambda: next(calls) >= 2,
                          progress=lambda found: first.setdefault(found.tile.index, found))
    assert partial.stopped and partial.tiles_done == 4 == len(first) and len(model.crops) == 4
    rest = RedDetector()
    whole = scan_raster(raster, rest, "tank", tile_px=128, done_tiles=first)
    assert len(rest.crops) == 5 and whole.tiles_done == 9 and not whole.stopped
    assert whole.objects == scan_raster(raster, RedDetector(), "tank", tile_px=128).objects


def test_a_checkpoint_reads_back_what_was_appended_and_ignores_a_torn_line(scene_tif, tmp_path):
    raster = tiles.open_raster(scene_tif, trusted=True)
    plan = plan_scan(raster, None, tile_px=128)
    found: list[tiles.TileDetections] = []
    scan_raster(raster, RedDetector(), "tank", plan=plan, progress=found.append)
    checkpoint = TileCheckpoint(tmp_path / "p" / "k.jsonl", plan)
    for item in found[:3]:
        checkpoint.append(item)
    checkpoint.close()
    with open(checkpoint.path, "a", encoding="utf-8") as f:
        f.write('{"tile": 5, "boxes_px": [[1, 2')  # a crash in the middle of a line
    back = TileCheckpoint(checkpoint.path, plan).read()
    assert sorted(back) == [d.tile.index for d in found[:3]]
    for item in found[:3]:
        assert np.array_equal(back[item.tile.index].boxes_px, item.boxes_px)
        assert back[item.tile.index].labels == item.labels
    again = TileCheckpoint(checkpoint.path, plan)
    again.append(found[3])  # the torn line is ended first; the new line stands alone
    again.close()
    assert sorted(TileCheckpoint(checkpoint.path, plan).read()) == sorted(
        d.tile.index for d in found[:4])


def _run(args: list[str], model) -> int:
    return main([*args, "--quiet"], engine=model, model_key="red-detector")


def _layers(path: Path) -> dict[str, list[dict]]:
    import geopandas as gpd

    out = {}
    for name, _ in pyogrio.list_layers(path):
        frame = gpd.read_file(path, layer=name)
        out[name] = (str(frame.crs), frame.drop(columns="geometry").to_dict("records"),
                     [g.wkt for g in frame.geometry])
    return out


def test_the_command_writes_a_geopackage_and_geojson_per_query(scene_tif, scene_png, tmp_path):
    out = tmp_path / "found.gpkg"
    status = _run([str(scene_tif), str(scene_png), "--find", "storage tank", "--find", "tank",
                   "--tile-px", "128", "--out", str(out)], RedDetector())
    assert status == 0
    layers = _layers(out)
    assert set(layers) == {"storage tank", "tank", layer_name("tank", tiles.PIXEL),
                           layer_name("storage tank", tiles.PIXEL)}
    crs, rows, _ = layers["storage tank"]
    assert "4326" in crs and len(rows) == 3
    assert set(rows[0]) == {"raster", "query", "label", "score", "n_merged", "tiles"}
    assert {r["raster"] for r in rows} == {"tanks.tif"} and {r["score"] for r in rows} == {1.0}
    crs, rows, _ = layers[layer_name("tank", tiles.PIXEL)]
    assert crs == "None" and len(rows) == 3 and {r["coordinate_space"] for r in rows} == {"pixel"}
    lonlat = tiles.read_geojson(out.with_suffix(".geojson"))
    pixel = tiles.read_geojson(out.with_suffix(".pixel.geojson"))
    assert len(lonlat["features"]) == 6 and len(pixel["features"]) == 6


def test_a_rerun_after_an_interruption_runs_only_the_rest_and_writes_the_same(scene_tif, tmp_path):
    whole = tmp_path / "whole" / "out.gpkg"
    assert _run([str(scene_tif), "--find", "tank", "--tile-px", "128", "--out", str(whole)],
                RedDetector()) == 0

    class Interrupted(RedDetector):
        def run_batch(self, images, task, question=None):
            if len(self.crops) >= 4:
                raise KeyboardInterrupt  # Ctrl-C while the model works on the third batch
            return super().run_batch(images, task, question)

    out = tmp_path / "resumed" / "out.gpkg"
    args = [str(scene_tif), "--find", "tank", "--tile-px", "128", "--batch-size", "2",
            "--out", str(out)]
    assert _run(args, Interrupted()) == 130
    assert not out.exists()
    [checkpoint] = (tmp_path / "resumed" / "out.gpkg.progress").glob("*.jsonl")
    assert len(checkpoint.read_text().splitlines()) == 4
    rest = RedDetector()
    assert _run(args, rest) == 0
    assert len(rest.crops) == 5  # only the tiles not finished before
    assert _layers(out) == _layers(whole)
    assert out.with_suffix(".geojson").read_text() == whole.with_suffix(".geojson").read_text()
    again = RedDetector()
    assert _run(args, again) == 0 and again.crops == []  # all done: nothing runs
    assert _layers(out) == _layers(whole)


def test_an_unreadable_raster_is_reported_and_the_others_are_written(scene_tif, tmp_path, capsys):
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00" + b"\x00" * 64)
    missing = tmp_path / "missing.tif"
    out = tmp_path / "out.gpkg"
    status = _run([str(broken), str(scene_tif), str(missing), "--find", "tank", "--tile-px",
                   "128", "--out", str(out)], RedDetector())
    assert status == 1
    err = capsys.readouterr().err
    assert f"error: {broken}" in err and f"error: {missing}" in err
    _, rows, _ = _layers(out)["tank"]
    assert len(rows) == 3 and {r["raster"] for r in rows} == {"tanks.tif"}


@pytest.mark.parametrize("box_px, expected", [
    ((10, 230, 100, 290), 1),  # around ALONE, bottom left
    ((10, 10, 100, 100), 0),  # its tile (0..128) sees SEAM's cut end, outside the region
])
def test_a_lonlat_region_file_limits_the_scan(scene_tif, tmp_path, box_px, expected):
    raster = tiles.open_raster(scene_tif, trusted=True)
    frame = tiles.Crop(np.zeros((1, 1, 3), np.uint8), np.zeros((1, 1), bool), raster.transform,
                       raster.crs, tiles.full_window(raster), raster.path, None, 1.0, 1.0)
    x0, y0, x1, y1 = box_px
    lon, lat = tiles.px_to_lonlat(frame, [x0, x1, x1, x0], [y0, y0, y1, y1])
    region = {"type": "FeatureCollection", "features": [tiles.to_feature(
        {"type": "Polygon", "coordinates": [[*zip(lon.tolist(), lat.tolist()),
                                              (lon[0], lat[0])]]})]}
    path = tmp_path / "region.geojson"
    path.write_text(json.dumps(region))
    out = tmp_path / "out.gpkg"
    model = RedDetector()
    assert _run([str(scene_tif), "--find", "tank", "--tile-px", "128", "--region", str(path),
                 "--out", str(out)], model) == 0
    _, rows, _ = _layers(out)["tank"]
    assert len(rows) == expected and len(model.crops) == 1  # one tile covers the region


def test_the_command_runs_the_real_tiny_engine_end_to_end(tiny_engine, tmp_path):
    raster = write_geo_raster(tmp_path / "scene.tif", size_px=100)  # 2 x 2 tiles of 56 px
    out = tmp_path / "out.gpkg"
    status = main([str(raster), "--find", "storage tank", "--out", str(out), "--quiet",
                   "--batch-size", "4"], engine=tiny_engine, model_key="tiny")
    assert status == 0
    assert "4326" in _layers(out)["storage tank"][0]
    [checkpoint] = out.with_name("out.gpkg.progress").glob("*.jsonl")
    tile_px = tiny_engine.vlm.backbone.vision.config.image_size
    plan = plan_scan(tiles.open_raster(raster, trusted=True), tiny_engine)
    assert plan.tile_px == tile_px
    assert len(checkpoint.read_text().splitlines()) == len(plan.tiles)


def test_a_query_that_finds_nothing_still_gets_its_layer(tmp_path):
    raster = write_geo_raster(tmp_path / "plain.tif", size_px=100)
    out = tmp_path / "out.gpkg"
    assert _run([str(raster), "--find", "crater", "--tile-px", "128", "--out", str(out)],
                RedDetector()) == 0
    crs, rows, _ = _layers(out)["crater"]
    assert "4326" in crs and rows == []
    assert tiles.read_geojson(out.with_suffix(".geojson"))["features"] == []


def test_the_command_loads_the_model_it_is_given(tmp_path):
    """--model/--backbone/--device as in launch.py (here the tiny random model)."""
    from tests.engine.tiny import cached_tiny_model_dir

    raster = write_geo_raster(tmp_path / "scene.tif", size_px=56)  # one tile
    out = tmp_path / "out.gpkg"
    status = main([str(raster), "--find", "tank", "--model", str(cached_tiny_model_dir("paper")),
                   "--backbone", "paper", "--device", "cpu", "--max-answer-tokens", "8",
                   "--out", str(out), "--quiet"])
    assert status == 0 and "tank" in _layers(out)


@pytest.mark.parametrize("args, message", [
    (["--find", " "], "non-empty phrase"),
    (["--find", "tank", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["--find", "tank", "--out", "found.geojson"], "must name a GeoPackage"),
])
def test_bad_arguments_stop_before_any_work(scene_tif, args, message, capsys):
    model = RedDetector()
    assert main([str(scene_tif), *args], engine=model, model_key="red") == 2
    assert message in capsys.readouterr().err and model.crops == []


def test_another_merge_method_reuses_the_finished_tiles(scene_tif, tmp_path):
    out = tmp_path / "out.gpkg"
    args = [str(scene_tif), "--find", "tank", "--tile-px", "128", "--out", str(out)]
    assert _run(args, RedDetector()) == 0
    wbf = _layers(out)["tank"][1]
    again = RedDetector()
    assert _run([*args, "--merge", "nms"], again) == 0
    assert again.crops == [] and len(_layers(out)["tank"][1]) == len(wbf) == 3


# --- CLIP pre-filter and adaptive batch --------------------------------------------------------

DEMO_CLIP = Path(__file__).resolve().parents[2] / "assets" / "demo" / "clip"


@pytest.fixture(scope="module")
def demo_clip():
    """The demo's real (tiny, trained) CLIP embedder."""
    from engine.retrieval import ClipEmbedder

    return ClipEmbedder.load(DEMO_CLIP)


def _similarities(raster, plan, clip, query: str) -> dict[int, float]:
    """Each tile's cosine similarity to the query sentence, computed here tile by tile."""
    text = clip.embed_texts([query])[0]  # the knowledge base's way: no template
    return {t.index: float(clip.embed_images([tiles.read_crop(raster, t.window, t.max_side).image])[0]
                           @ text) for t in plan.tiles}


def test_the_prefilter_sends_only_the_most_similar_tiles_and_counts_the_rest(scene_tif, demo_clip):
    from app.scanning import TilePrefilter

    raster = tiles.open_raster(scene_tif, trusted=True)
    plan = plan_scan(raster, None, tile_px=128)
    sims = _similarities(raster, plan, demo_clip, "storage tank")
    best = sorted(sims, key=lambda i: -sims[i])
    model, seen = RedDetector(), []
    result = scan_raster(raster, model, "storage tank", plan=plan, batch_size=2,
                         prefilter=TilePrefilter(demo_clip, top_fraction=0.34),
                         progress=lambda found: seen.append(found.tile.index))
    assert sorted(seen) == sorted(best[:4])  # ceil(0.34 * 9) tiles, the most similar ones
    assert (result.tiles_done, result.prefiltered, result.tiles_total) == (4, 5, 9)
    assert all(set(o.tiles) <= set(best[:4]) for o in result.objects)
    assert "5 left out by the CLIP pre-filter" in result.summary()
    # a threshold between the 3rd and 4th best similarity keeps exactly the 3 best
    cut = (sims[best[2]] + sims[best[3]]) / 2
    seen.clear()
    result = scan_raster(raster, RedDetector(), "storage tank", plan=plan,
                         prefilter=TilePrefilter(demo_clip, threshold=cut),
                         progress=lambda found: seen.append(found.tile.index))
    assert sorted(seen) == sorted(best[:3]) and result.prefiltered == 6
    assert result.prefilter_note is None


def test_a_threshold_no_tile_passes_says_so_instead_of_finding_nothing_silently(scene_tif,
                                                                               demo_clip, caplog):
    from app.scanning import TilePrefilter

    raster = tiles.open_raster(scene_tif, trusted=True)
    plan = plan_scan(raster, None, tile_px=128)
    top = max(_similarities(raster, plan, demo_clip, "tank").values())
    model = RedDetector()
    result = scan_raster(raster, model, "tank", plan=plan,
                         prefilter=TilePrefilter(demo_clip, threshold=min(1.0, top + 0.01)))
    assert model.crops == [] and result.objects == () and result.prefiltered == 9
    assert "no tile passed the pre-filter" in result.prefilter_note
    assert f"{top:.3f}" in result.prefilter_note and "--prefilter-top" in result.prefilter_note
    assert "no tile passed the pre-filter" in caplog.text
    assert result.prefilter_note in result.summary()


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one of"),
    ({"threshold": 0.2, "top_fraction": 0.5}, "exactly one of"),
    ({"threshold": 1.5}, "[-1, 1]"),
    ({"top_fraction": 0.0}, "(0, 1]"),
    ({"top_fraction": 0.5, "template": "storage tanks"}, "must contain {query}"),
])
def test_a_bad_prefilter_is_refused_with_what_to_give(kwargs, message, demo_clip):
    from app.scanning import TilePrefilter

    with pytest.raises(ValueError, match=re.escape(message)):
        TilePrefilter(demo_clip, **kwargs)


def test_a_resumed_prefiltered_scan_merges_what_a_fresh_one_does(scene_tif, demo_clip):
    from app.scanning import TilePrefilter

    raster = tiles.open_raster(scene_tif, trusted=True)
    plan = plan_scan(raster, None, tile_px=128)
    every: dict[int, tiles.TileDetections] = {}
    scan_raster(raster, RedDetector(), "tank", plan=plan, progress=lambda f: every.update(
        {f.tile.index: f}))
    prefilter = TilePrefilter(demo_clip, top_fraction=0.5)
    fresh = scan_raster(raster, RedDetector(), "tank", plan=plan, prefilter=prefilter)
    again = RedDetector()
    resumed = scan_raster(raster, again, "tank", plan=plan, prefilter=prefilter,
                          done_tiles=every)  # done tiles outside the filter are not merged
    assert again.crops == [] and resumed.objects == fresh.objects
    assert resumed.tiles_done == fresh.tiles_done == 5 and resumed.prefiltered == 4


def test_the_command_prefilters_with_a_named_clip_and_refuses_without_one(scene_tif, tmp_path,
                                                                          capsys):
    out = tmp_path / "out.gpkg"
    args = [str(scene_tif), "--find", "tank", "--tile-px", "128", "--out", str(out)]
    model = RedDetector()
    assert _run([*args, "--prefilter-top", "0.5", "--prefilter-clip", str(DEMO_CLIP)], model) == 0
    assert len(model.crops) == 5
    assert "4 left out by the CLIP pre-filter" in capsys.readouterr().err
    refused = RedDetector()  # no retriever, no --prefilter-clip
    assert _run([*args, "--prefilter-threshold", "0.2"], refused) == 2
    assert "--prefilter-clip DIR" in capsys.readouterr().err and refused.crops == []
    assert _run([*args, "--prefilter-top", "0.5", "--prefilter-threshold", "0.2"], refused) == 2
    assert "not both" in capsys.readouterr().err
    assert _run([*args, "--prefilter-top", "1.5"], refused) == 2
    assert "(0, 1]" in capsys.readouterr().err


@pytest.mark.usefixtures("one_torch_thread")
def test_the_scan_reports_the_batch_it_settled_on_after_an_oom(tmp_path):
    """A real tiny engine whose vision tower raises CUDA's OutOfMemoryError for more than two
    crops at once (fault injection on torch): the batch halves, every tile is answered as
    with batch 1, and the result says batch 2."""
    import torch

    from engine.engine import Engine
    from tests.app.conftest import tiny_engine_config

    raster = tiles.open_raster(write_geo_raster(tmp_path / "scene.tif", size_px=100), trusted=True)
    engine = Engine.from_config(tiny_engine_config())  # its own: batch_limit is remembered
    one = scan_raster(raster, engine, "tank", batch_size=1)
    assert one.batch_size == 1 and engine.batch_limit is None

    def hook(_module, args, kwargs):
        [pixels] = [a for a in (*args, *kwargs.values()) if torch.is_tensor(a)][:1]
        if pixels.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    handle = engine.vlm.backbone.vision_tower.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        found: list[tiles.TileDetections] = []
        adaptive = scan_raster(raster, engine, "tank", batch_size=8, progress=found.append)
    finally:
        handle.remove()
    assert adaptive.batch_size == 2 == engine.batch_limit and "batch 2" in adaptive.summary()
    assert adaptive.tiles_done == adaptive.tiles_total == one.tiles_done > 2
    assert [o.box_px for o in adaptive.objects] == [o.box_px for o in one.objects]


# --- network rasters and GDAL's block cache ----------------------------------------------------


def test_a_raster_named_as_a_url_is_scanned_in_process_and_a_local_vrt_keeps_the_guard(
        scene_tif, tmp_path, capsys):
    """An http(s) raster on the command line is read through /vsicurl/ without --ray (the
    operator named it, as with --ray) and finds what the local file finds; a local VRT whose
    source is that URL still cannot reach the network."""
    from tests.tiles.http_recorder import RangeFileServer

    served = tmp_path / "served"
    served.mkdir()
    with rasterio.open(scene_tif) as src:
        cog = tiles.write_raster(served / "tanks_cog.tif", src.read(), GEO_CRS, src.transform,
                                 layout="chw", colorinterp=("red", "green", "blue"), cog=True)
    local_out, url_out, vrt_out = (tmp_path / f"{n}.gpkg" for n in ("local", "url", "vrt"))
    assert _run([str(cog), "--find", "tank", "--tile-px", "128", "--out", str(local_out)],
                RedDetector()) == 0
    with RangeFileServer(served) as server:
        url = server.url(cog.name)
        model = RedDetector()
        assert _run([url, "--find", "tank", "--tile-px", "128", "--out", str(url_out)],
                    model) == 0
        assert len(model.crops) == 9
        vrt = tmp_path / "remote.vrt"
        vrt.write_text(_vrt_of(f"/vsicurl/{url}", 300))
        refused = RedDetector()
        capsys.readouterr()
        assert _run([str(vrt), "--find", "tank", "--tile-px", "128", "--out", str(vrt_out)],
                    refused) == 1
        err = capsys.readouterr().err
        assert refused.crops == [] and "remote.vrt" in err
        assert "only when the command line names it as a URL" in err
    local, remote = _layers(local_out)["tank"], _layers(url_out)["tank"]
    assert local[0] == remote[0] and local[2] == remote[2] and len(local[2]) == 3
    assert [{**r, "raster": ""} for r in local[1]] == [{**r, "raster": ""} for r in remote[1]]


def _vrt_of(source: str, size_px: int) -> str:
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="0">{source}</SourceFilename><SourceBand>{b}</SourceBand>'
        f'<SrcRect xOff="0" yOff="0" xSize="{size_px}" ySize="{size_px}"/>'
        f'<DstRect xOff="0" yOff="0" xSize="{size_px}" ySize="{size_px}"/>'
        "</SimpleSource></VRTRasterBand>" for b in (1, 2, 3))
    return f'<VRTDataset rasterXSize="{size_px}" rasterYSize="{size_px}">{bands}</VRTDataset>'


class CacheWatcher(RedDetector):
    """RedDetector that also notes GDAL's block cache size (bytes) whenever it is asked."""

    def __init__(self) -> None:
        super().__init__()
        self.cache_bytes: set[int] = set()

    def run_batch(self, images, task, question=None) -> list[Answer]:
        from rasterio.env import get_gdal_config

        self.cache_bytes.add(int(get_gdal_config("GDAL_CACHEMAX")))
        return super().run_batch(images, task, question)


def test_the_scan_caps_gdals_block_cache_and_restores_it(scene_tif, tmp_path, capsys):
    from rasterio.env import get_gdal_config

    before = int(get_gdal_config("GDAL_CACHEMAX"))
    args = [str(scene_tif), "--find", "tank", "--tile-px", "128"]
    default = CacheWatcher()
    assert _run([*args, "--out", str(tmp_path / "a.gpkg")], default) == 0
    assert default.cache_bytes == {64 * 1024 * 1024}
    small = CacheWatcher()
    assert _run([*args, "--gdal-cache-mb", "16", "--out", str(tmp_path / "b.gpkg")], small) == 0
    assert small.cache_bytes == {16 * 1024 * 1024}
    off = CacheWatcher()  # 0: GDAL's own default, untouched
    assert _run([*args, "--gdal-cache-mb", "0", "--out", str(tmp_path / "c.gpkg")], off) == 0
    assert off.cache_bytes == {before}
    assert int(get_gdal_config("GDAL_CACHEMAX")) == before
    capsys.readouterr()
    assert _run([*args, "--gdal-cache-mb", "-1", "--out", str(tmp_path / "d.gpkg")],
                RedDetector()) == 2
    assert "--gdal-cache-mb" in capsys.readouterr().err
