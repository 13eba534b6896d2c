"""Launch configuration: flags, GEOLENS_* fallbacks, validation, the loopback/auth rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import Auth, is_loopback, parse_launch_config
from app.errors import AppConfigError
from tests.app.conftest import write_tiny_demo


def test_defaults_open_the_demo():
    cfg = parse_launch_config([], {})
    assert cfg.app.host == "127.0.0.1" and cfg.app.port == 7860 and cfg.app.logins == ()
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
    with pytest.raises(AppConfigError, match="--auth-file FILE"):
        parse_launch_config(["--host", "0.0.0.0"], {})
    with pytest.raises(AppConfigError, match="192.168.1.5"):
        parse_launch_config([], {"GEOLENS_HOST": "192.168.1.5"})
    cfg = parse_launch_config(["--host", "0.0.0.0", "--auth", "ana:pa:ss"], {})
    assert cfg.app.logins == (Auth("ana", "pa:ss"),) and "pa:ss" not in repr(cfg)
    assert cfg.app.on_network and not cfg.app.multi_user
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")


def test_logins_from_env_or_file_keep_passwords_off_the_command_line(tmp_path, caplog):
    env_cfg = parse_launch_config(["--host", "0.0.0.0"], {"GEOLENS_AUTH": "ana:s3cret"})
    assert env_cfg.app.logins == (Auth("ana", "s3cret"),)
    assert "shows" not in caplog.text  # no warning: the password is not in argv
    logins = tmp_path / "logins.txt"
    logins.write_text("# analysts\nana:s3cret\n\nbob:pa:ss\n")
    cfg = parse_launch_config(["--host", "0.0.0.0", "--auth-file", str(logins)], {})
    assert cfg.app.logins == (Auth("ana", "s3cret"), Auth("bob", "pa:ss")) and cfg.app.multi_user
    assert parse_launch_config([], {"GEOLENS_AUTH_FILE": str(logins)}).app.logins == cfg.app.logins
    with caplog.at_level("WARNING"):
        parse_launch_config(["--auth", "ana:s3cret"], {})
    assert "ps" in caplog.text and "GEOLENS_AUTH" in caplog.text
    logins.write_text("ana:x\nana:y\n")
    with pytest.raises(AppConfigError, match="names a user twice"):
        parse_launch_config(["--auth-file", str(logins)], {})
    logins.write_text("ana\n")
    with pytest.raises(AppConfigError, match="line 1"):
        parse_launch_config(["--auth-file", str(logins)], {})


def test_security_and_limit_flags(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    cfg = parse_launch_config(["--data-dir", str(data), "--trusted-dir", str(data), "--allowed-host", "GeoLens.Lab",
                               "--allow-network-rasters", "--max-upload-mb", "10", "--max-question-chars", "300",
                               "--max-answer-tokens", "64"], {})
    app = cfg.app
    assert app.data_dirs == (data.resolve(),) and app.trusted_dirs == (data.resolve(),)
    assert app.allowed_hosts == ("geolens.lab",) and app.allow_network_rasters
    assert (app.max_upload_mb, app.max_question_chars, app.max_answer_tokens) == (10, 300, 64)
    env = parse_launch_config([], {"GEOLENS_DATA_DIR": str(data), "GEOLENS_ALLOWED_HOST": "a.lab, b.lab"})
    assert env.app.data_dirs == (data.resolve(),) and env.app.allowed_hosts == ("a.lab", "b.lab")
    with pytest.raises(AppConfigError, match="is not a folder"):
        parse_launch_config(["--data-dir", str(tmp_path / "missing")], {})
    with pytest.raises(AppConfigError, match="max-question-chars"):
        parse_launch_config(["--max-question-chars", "0"], {})


def test_max_answer_tokens_reaches_the_engine_config(tmp_path):
    demo = write_tiny_demo(tmp_path / "demo")
    cfg = parse_launch_config(["--device", "cpu", "--max-answer-tokens", "17"], {}, demo_manifest=demo)
    assert cfg.engine.generation.max_new_tokens == 17


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
