"""app.scan_ray: ``python -m app.scan ... --ray`` on a local Ray (two actors at most) finds
the same features as the in-process scan, with the shipped demo model on both sides.

Each ``--ray`` scan runs as the command, in its own process (a local Ray start, about 10 s; its
actors load the demo model themselves and read their tiles from the raster file). Ray stays out
of the test process: its runtime replaces the process's crash handlers (a later segfault would
print no Python traceback) and leaves native threads behind after ``ray.shutdown()``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pyogrio
import pytest
import rasterio
import shapely
from rasterio.windows import Window

import tiles
from app.demo import DEMO_RASTER, demo_manifest
from app.scan import main
from app.scanning import ScanSettings, engine_input_px, load_scan_engine
from tests.tiles.http_recorder import RangeFileServer

pytestmark = pytest.mark.skipif(demo_manifest() is None,
                                reason="the demo model is not built (python assets/build_demo.py)")

# A 300 x 300 window of the demo scene's industrial quarter with ~20 storage tanks: 3 x 3 tiles
# of the demo model's 128 px.
WINDOW = Window(0, 1250, 300, 300)
QUERY = "storage tank"


REPO = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def ray_command():
    """Run ``python -m app.scan ARGS --ray`` in a child process on a local Ray (the command
    starts it; ``--ray-actors`` bounds the actors); returns the finished process."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'ray[data]'): "
                                      "the --ray scan cannot be tested")

    def run(args: list[str]) -> subprocess.CompletedProcess:
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        return subprocess.run([sys.executable, "-m", "app.scan", *args, "--device", "cpu",
                               "--ray"], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=600, check=False)

    return run


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    """The demo scene's window, written as a tiled GeoTIFF with its own geotransform."""
    with rasterio.open(DEMO_RASTER) as src:
        image = src.read(window=WINDOW)
        transform = src.window_transform(WINDOW)
        crs = src.crs.to_string()
    path = tmp_path_factory.mktemp("ray") / "tanks.tif"
    return tiles.write_raster(path, image, crs, transform, layout="chw",
                              colorinterp=("red", "green", "blue"), tiled=True)


@pytest.fixture(scope="module")
def demo_engine():
    """The demo engine loaded as the command loads it, with its checkpoint key."""
    args = argparse.Namespace(model=None, backbone="paper", adapter=None, device="cpu",
                              max_answer_tokens=None)
    return load_scan_engine(args)


@pytest.fixture(scope="module")
def in_process(scene, demo_engine, tmp_path_factory) -> Path:
    engine, key = demo_engine
    out = tmp_path_factory.mktemp("in-process") / "found.gpkg"
    assert main([str(scene), "--find", QUERY, "--batch-size", "4", "--out", str(out),
                 "--quiet"], engine=engine, model_key=key) == 0
    return out


def _features(path: Path) -> list[tuple]:
    frame = pyogrio.read_dataframe(path, layer=QUERY)
    return [(row.label, row.score, row.n_merged, row.tiles, row.geometry)
            for row in frame.itertuples()]


def _assert_same_features(ours: Path, theirs: Path) -> None:
    a, b = _features(ours), _features(theirs)
    assert len(a) == len(b) > 0
    for (label, score, n, tile_ids, geom), (label2, score2, n2, tile_ids2, geom2) in zip(a, b):
        assert (label, n, tile_ids) == (label2, n2, tile_ids2)
        assert score == pytest.approx(score2, abs=1e-6)
        assert shapely.equals_exact(geom, geom2, tolerance=1e-9)


def _rows(checkpoint: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in checkpoint.read_text().splitlines()]
    return {row["tile"]: row for row in rows}


def test_a_ray_scan_finds_the_features_of_the_in_process_scan_and_shares_its_checkpoint(
        ray_command, scene, in_process, tmp_path):
    """One Ray scan (the costly part: two actors load the model) checks three things: it
    resumes an in-process checkpoint (same key), its tiles equal the in-process tiles, and the
    merged features equal the in-process features."""
    out = tmp_path / "found.gpkg"
    progress = out.with_name(out.name + ".progress")
    progress.mkdir()
    [checkpoint] = in_process.with_name(in_process.name + ".progress").glob("*.jsonl")
    lines = checkpoint.read_text().splitlines()
    assert len(lines) == 9
    (progress / checkpoint.name).write_text("\n".join(lines[:5]) + "\n")  # as after a Ctrl-C
    done = ray_command([str(scene), "--find", QUERY, "--batch-size", "2", "--out", str(out),
                        "--ray-actors", "2", "--quiet"])
    assert done.returncode == 0, done.stderr[-4000:]
    resumed = (progress / checkpoint.name).read_text().splitlines()
    assert resumed[:5] == lines[:5] and len(resumed) == 9  # only the 4 missing tiles ran
    ours, theirs = _rows(progress / checkpoint.name), _rows(checkpoint)
    assert ours.keys() == theirs.keys()
    for tile, row in ours.items():
        assert row["boxes_px"] == theirs[tile]["boxes_px"]
        assert row["labels"] == theirs[tile]["labels"]
        assert row["scores"] == pytest.approx(theirs[tile]["scores"], abs=1e-6)
    _assert_same_features(out, in_process)


def test_a_ray_scan_with_the_clip_prefilter_runs_and_merges_only_the_kept_tiles(
        ray_command, scene, demo_engine, tmp_path, capsys):
    """--ray with --prefilter-top: the driver ranks the tiles with the demo's CLIP (no VLM on
    the driver) and the actors run only the kept ones; the features and the pre-filtered count
    are those of the in-process scan with the same pre-filter."""
    engine, key = demo_engine
    args = [str(scene), "--find", QUERY, "--batch-size", "4", "--prefilter-top", "0.5",
            "--quiet"]
    here = tmp_path / "in-process" / "found.gpkg"
    assert main([*args, "--out", str(here)], engine=engine, model_key=key) == 0
    in_process_err = capsys.readouterr().err
    out = tmp_path / "ray" / "found.gpkg"
    done = ray_command([*args, "--out", str(out), "--ray-actors", "1"])
    assert done.returncode == 0, done.stderr[-4000:]
    ray_err = done.stderr
    # 9 tiles, the best half (ceil(4.5) = 5) kept: 4 left out, on both paths.
    assert "4 left out by the CLIP pre-filter" in in_process_err
    assert "4 left out by the CLIP pre-filter" in ray_err
    [checkpoint] = out.with_name(out.name + ".progress").glob("*.jsonl")
    [theirs] = here.with_name(here.name + ".progress").glob("*.jsonl")
    assert _rows(checkpoint).keys() == _rows(theirs).keys() and len(_rows(checkpoint)) == 5
    _assert_same_features(out, here)


def test_the_driver_reads_the_tile_size_and_key_the_command_would_load(demo_engine):
    from app.scan_ray import EngineRecipe, resolve_tile_px

    engine, key = demo_engine
    recipe = EngineRecipe(device="cpu")
    assert recipe.model_key() == key
    assert resolve_tile_px(ScanSettings(queries=(QUERY,)), recipe) == engine_input_px(engine)


def test_ray_is_not_imported_without_the_flag():
    code = ("import sys, app.scan; a = app.scan.build_arg_parser().parse_args(['x.tif', "
            "'--find', 't']); assert a.ray is None; assert 'ray' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.mark.parametrize("extra, engine, message", [
    (["--ray-actors", "0"], None, "--ray-actors must be at least 1"),
    ([], object(), "an engine object cannot be handed to it"),
])
def test_bad_ray_arguments_stop_before_any_work(scene, extra, engine, message, capsys, tmp_path):
    status = main([str(scene), "--find", QUERY, "--out", str(tmp_path / "o.gpkg"), "--ray",
                   *extra], engine=engine, model_key="x")
    assert status == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o.gpkg.progress").exists()


def test_workers_read_a_cog_url_only_because_the_operator_named_it(scene, tmp_path):
    """What a worker does with a URL raster (no Ray needed): the driver opens it under the
    network policy the URL earned, the worker reads tiles through /vsicurl/ with the policy the
    Raster carries; a local raster keeps the network guard."""
    from app.scan_ray import open_policy_for

    cog = tiles.write_raster(tmp_path / "scene_cog.tif", rasterio.open(scene).read(),
                             "EPSG:32633", rasterio.open(scene).transform, layout="chw",
                             colorinterp=("red", "green", "blue"), cog=True)
    with RangeFileServer(tmp_path) as server:
        url = server.url(cog.name)
        assert not open_policy_for(str(scene)).allow_network
        with pytest.raises(tiles.RasterAccessError, match="network"):
            tiles.open_raster(url, policy=open_policy_for(str(scene)), trusted=True)
        raster = tiles.open_raster(url, policy=open_policy_for(url), trusted=True)
        assert str(raster.file_to_read).startswith("/vsicurl")
        plan = tiles.plan_tiles(raster, tile_px=128)
        worker_source = tiles.RasterSource(raster.file_to_read, rotated=raster.is_rotated,
                                           policy=raster.policy, trusted=raster.trusted)
        local = tiles.open_raster(cog, trusted=True)
        for tile in plan.tiles:
            remote = tiles.read_crop(raster, tile.window, tile.max_side, source=worker_source)
            assert (remote.image == tiles.read_crop(local, tile.window, tile.max_side).image).all()
        worker_source.close()
