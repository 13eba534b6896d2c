"""Launch configuration: flags, GEOLENS_* fallbacks, validation, the loopback/auth rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import Auth, is_loopback, parse_launch_config
from app.errors import AppConfigError
from tests.app.conftest import write_tiny_demo


def test_defaults_open_the_demo():
    cfg = parse_launch_config([], {})
    assert cfg.app.host == "127.0.0.1" and cfg.app.port == 7860 and cfg.app.auth is None
    assert cfg.app.use_demo_raster and cfg.app.rasters == ()
    assert cfg.app.workspace == Path("workspace")
    assert cfg.model.model is None and cfg.engine is None  # no demo model shipped -> no model


def test_demo_model_is_used_only_when_no_model_is_named(tmp_path):
    demo = write_tiny_demo(tmp_path / "demo")
    cfg = parse_launch_config(["--device", "cpu"], {}, demo_manifest=demo)
    assert cfg.model.is_demo and cfg.model.model == str(demo)
    assert cfg.engine.backbone == "paper" and cfg.engine.adapter_path == demo.parent / "adapter"
    named = parse_launch_config(["--model", "/models/m"], {}, demo_manifest=demo)
    assert not named.model.is_demo and named.engine.model_path == "/models/m"


def test_flags_win_over_environment_which_wins_over_defaults(tmp_path):
    env = {"GEOLENS_PORT": "9000", "GEOLENS_HOST": "localhost", "GEOLENS_WORKSPACE": str(tmp_path),
           "GEOLENS_RASTER": "/a.tif:/b.tif", "GEOLENS_DEVICE": "cpu", "GEOLENS_MODEL": "/env/model",
           "GEOLENS_KB": "/kb", "GEOLENS_POINT_SIZE_M": "250", "GEOLENS_BASEMAPS": "off"}
    cfg = parse_launch_config(["--port", "8000", "--raster", "/c.tif"], env)
    assert cfg.app.port == 8000 and cfg.app.host == "localhost"
    assert cfg.app.rasters == (Path("/c.tif"),) and not cfg.app.use_demo_raster
    assert cfg.app.workspace == tmp_path and cfg.app.point_size_m == 250.0 and cfg.app.basemaps is False
    assert cfg.engine.device == "cpu" and cfg.engine.model_path == "/env/model"
    assert cfg.engine.retrieval.kb_dir == Path("/kb")
    env_only = parse_launch_config([], env)
    assert env_only.app.port == 9000 and env_only.app.rasters == (Path("/a.tif"), Path("/b.tif"))


def test_engine_config_carries_backbone_and_adapter():
    cfg = parse_launch_config(["--model", "Qwen/Qwen2.5-VL-3B-Instruct", "--backbone", "qwen2.5-vl",
                               "--adapter", "/ad", "--device", "cuda"], {})
    assert cfg.engine.backbone == "qwen2.5-vl" and cfg.engine.adapter_path == Path("/ad")
    assert cfg.engine.device == "cuda"


def test_non_loopback_host_needs_auth():
    with pytest.raises(AppConfigError, match="--auth USER:PASS"):
        parse_launch_config(["--host", "0.0.0.0"], {})
    with pytest.raises(AppConfigError, match="192.168.1.5"):
        parse_launch_config([], {"GEOLENS_HOST": "192.168.1.5"})
    cfg = parse_launch_config(["--host", "0.0.0.0", "--auth", "ana:pa:ss"], {})
    assert cfg.app.auth == Auth("ana", "pa:ss") and "pa:ss" not in repr(cfg)
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")


@pytest.mark.parametrize("argv, env, match", [
    ([], {"GEOLENS_PORT": "seventy"}, "GEOLENS_PORT='seventy'"),
    (["--port", "70000"], {}, "--port must be 0..65535"),
    (["--auth", "nopassword"], {}, "USER:PASS"),
    (["--auth", "user:"], {}, "non-empty"),
    (["--point-size-m", "-5"], {}, "point-size-m"),
    ([], {"GEOLENS_BASEMAPS": "maybe"}, "GEOLENS_BASEMAPS"),
    ([], {"GEOLENS_BACKBONE": "llava"}, "unknown backbone 'llava'"),
    ([], {"GEOLENS_DEVICE": "tpu"}, "unknown device 'tpu'"),
])
def test_bad_values_name_the_setting(argv, env, match):
    with pytest.raises(AppConfigError, match=match):
        parse_launch_config(argv, env)


def test_bad_flag_choice_exits_with_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_launch_config(["--backbone", "llava"], {})
    assert exc.value.code == 2
    assert "invalid choice: 'llava'" in capsys.readouterr().err
