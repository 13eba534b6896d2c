"""The demo raster written by the build (lab.demo.raster): a georeferenced COG of the generator's
mosaic, with its ground truth and the facts recorded in demo.json."""

from __future__ import annotations

import json

from pyproj import CRS

from lab.demo.raster import write_demo_raster
from lab.synthetic import generate_mosaic
from tiles import open_raster


def test_generated_demo_raster_matches_the_generator(tmp_path):
    info = write_demo_raster(tmp_path, seed=3)
    raster = open_raster(tmp_path / info["file"])
    assert CRS.from_user_input(raster.crs) == CRS.from_user_input(info["crs"])
    assert (raster.width, raster.height) == tuple(info["size_px"])
    assert info["objects"] > 0 and (tmp_path / info["ground_truth"]).is_file()


def test_shipped_demo_raster_is_what_the_recorded_seed_generates():
    from engine.demo import DEMO_MANIFEST

    recorded = json.loads(DEMO_MANIFEST.read_text(encoding="utf-8"))["raster_info"]
    scene = generate_mosaic(recorded["seed"])
    assert list(scene.transform) == recorded["transform"]
    assert [list(w) for w in scene.class_windows] == recorded["class_windows"]
    assert len(scene.objects) == recorded["objects"]


def test_shipped_before_twin_is_on_the_demo_grid_and_its_truth_marks_real_change():
    """assets/demo/demo_scene_before.tif: same grid as demo_scene.tif; every change-truth polygon
    (lon/lat) covers pixels that differ between the two dates, and away from them the rasters
    agree up to JPEG noise."""
    import numpy as np
    import rasterio
    from pyproj import Transformer
    from rasterio.features import rasterize

    from engine.demo import DEMO_MANIFEST

    data = json.loads(DEMO_MANIFEST.read_text(encoding="utf-8"))
    folder = DEMO_MANIFEST.parent
    assert data["before_raster"] == "demo_scene_before.tif"
    assert data["change_truth"] == "demo_scene_change_truth.geojson"
    with (
        rasterio.open(folder / data["raster"]) as after,
        rasterio.open(folder / data["before_raster"]) as before,
    ):
        assert before.crs == after.crs and before.transform == after.transform
        assert (before.width, before.height) == (after.width, after.height)
        a, b = after.read().astype(np.int16), before.read().astype(np.int16)
        transform, crs, shape = after.transform, after.crs, (after.height, after.width)
    truth = json.loads((folder / data["change_truth"]).read_text(encoding="utf-8"))
    to_map = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    diff = np.abs(a - b).sum(axis=0)
    labels = set()
    union = np.zeros(shape, dtype=bool)
    for feature in truth["features"]:
        ring = np.asarray(feature["geometry"]["coordinates"][0])
        lon, lat = ring[:, 0], ring[:, 1]
        assert np.all((-180 <= lon) & (lon <= 180) & (-90 <= lat) & (lat <= 90))
        x, y = to_map.transform(lon, lat)
        geom = {"type": "Polygon", "coordinates": [list(zip(x, y))]}
        mask = rasterize([(geom, 1)], out_shape=shape, transform=transform).astype(bool)
        assert mask.sum() > 50, feature["properties"]
        # most of the footprint changed clearly (a new roof, a filled pond, another crop)
        assert (diff[mask] > 40).mean() > 0.5, feature["properties"]
        union |= mask
        labels.add(feature["properties"]["label"])
    assert labels == {
        "new building",
        "demolished building",
        "new storage tank",
        "removed storage tank",
        "cleared forest",
        "re-sown field",
        "filled pond",
    }
    # away from the changes (and the shadows next to them) the two dates agree
    grown = union.copy()
    for shift in range(-24, 25, 4):
        grown |= np.roll(union, shift, axis=0) | np.roll(union, shift, axis=1)
    grown |= np.roll(np.roll(union, -24, axis=0), -24, axis=1)
    assert np.median(diff[~grown]) <= 6 and (diff[~grown] > 60).mean() < 0.002


def test_shipped_change_truth_is_what_the_recorded_seed_plans():
    from collections import Counter

    from engine.demo import DEMO_MANIFEST
    from lab.synthetic.twin import demo_twin_edits

    data = json.loads(DEMO_MANIFEST.read_text(encoding="utf-8"))
    info = data["before_raster_info"]
    edits, changes = demo_twin_edits(info["seed"])
    assert dict(Counter(c.label for c in changes)) == info["changes"]
    truth = json.loads((DEMO_MANIFEST.parent / data["change_truth"]).read_text(encoding="utf-8"))
    assert [f["properties"]["label"] for f in truth["features"]] == [c.label for c in changes]
    # every cell's edits are real: something omitted, re-sown or added in each quarter
    assert len(edits) == 4 and all(not e.empty for e in edits.values())
