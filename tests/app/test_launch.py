"""launch.py at the edge: bad settings end with a clear message and exit status 2."""

from __future__ import annotations

import launch


def test_non_loopback_without_auth_exits_2(capsys, tmp_path):
    assert launch.main(["--host", "0.0.0.0", "--workspace", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("geolens: refusing to serve on '0.0.0.0'") and "--auth-file FILE" in err
    assert "Traceback" not in err


def test_missing_raster_exits_2(capsys, tmp_path):
    missing = tmp_path / "nope.tif"
    assert launch.main(["--raster", str(missing), "--workspace", str(tmp_path / "ws"), "--no-basemaps"]) == 2
    err = capsys.readouterr().err
    assert "nope.tif" in err and "does not exist" in err


def test_missing_model_exits_2(capsys, tmp_path, geo_tif):
    argv = ["--raster", str(geo_tif), "--model", str(tmp_path / "no-model"), "--device", "cpu",
            "--workspace", str(tmp_path / "ws"), "--no-basemaps"]
    assert launch.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("geolens: ") and "no-model" in err and "Traceback" not in err
