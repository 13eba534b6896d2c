"""The app with a remote model: --api-base flags, the status line, and asking through engine.serve."""

from __future__ import annotations

import pytest

from app import handlers
from app.asking import AskRequest
from app.config import build_arg_parser, parse_launch_config
from app.errors import AppConfigError
from engine.remote import RemoteConfig, RemoteEngine
from engine.types import Task
from tests.app.conftest import make_launch

URL = "http://127.0.0.1:8000/v1"


def test_api_flags_make_a_remote_config():
    launch = parse_launch_config(
        [
            "--api-base",
            URL + "/",
            "--api-model",
            "qwen-7b",
            "--box-format",
            "qwen3-vl",
            "--api-key-env",
            "MY_KEY",
            "--max-answer-tokens",
            "50",
        ],
        {"MY_KEY": " s3cret "},
    )
    remote = launch.engine
    assert isinstance(remote, RemoteConfig) and launch.model.remote == remote
    assert (remote.api_base, remote.api_model, remote.box_format, remote.api_key) == (
        URL,
        "qwen-7b",
        "qwen3-vl",
        "s3cret",
    )
    assert "s3cret" not in repr(launch) and not launch.model.is_demo
    assert remote.max_tokens == 50


def test_kb_flag_gives_the_remote_model_retrieval(tmp_path):
    plain = parse_launch_config(["--api-base", URL, "--api-model", "m"], {})
    assert plain.engine.retrieval is None
    launch = parse_launch_config(["--api-base", URL, "--api-model", "m", "--kb", str(tmp_path)], {})
    assert launch.engine.retrieval.kb_dir == tmp_path and launch.model.kb == tmp_path
    from_env = parse_launch_config([], {"GEOLENS_API_BASE": URL, "GEOLENS_API_MODEL": "m",
                                        "GEOLENS_KB": str(tmp_path)})
    assert from_env.engine.retrieval.kb_dir == tmp_path


def test_api_flags_from_the_environment():
    env = {"GEOLENS_API_BASE": URL, "GEOLENS_API_MODEL": "m", "GEOLENS_BOX_FORMAT": "paper"}
    remote = parse_launch_config([], env).engine
    assert (remote.api_base, remote.api_model, remote.box_format, remote.api_key) == (
        URL,
        "m",
        "paper",
        None,
    )


@pytest.mark.parametrize(
    "argv, env, match",
    [
        (["--api-base", URL], {}, "needs --api-model"),
        (
            ["--api-base", URL, "--api-model", "m", "--api-key-env", "NOPE"],
            {},
            "NOPE: that environment variable",
        ),
        (
            ["--api-base", URL, "--api-model", "m", "--model", "/models/x"],
            {},
            "--model and --api-base",
        ),
        (["--api-base", "localhost:8000", "--api-model", "m"], {}, "http"),
        (
            ["--api-model", "m"],
            {"GEOLENS_API_BASE": URL, "GEOLENS_BOX_FORMAT": "yolo"},
            "unknown box convention",
        ),
    ],
)
def test_bad_api_settings_are_refused(argv, env, match):
    with pytest.raises(AppConfigError, match=match):
        parse_launch_config(argv, env)


def test_help_documents_the_api_flags():
    text = build_arg_parser().format_help()
    for flag in ("--api-base", "--api-model", "--api-key-env", "--box-format"):
        assert flag in text


@pytest.fixture(scope="module")
def served(tiny_engine):
    from engine.serve import create_app, start_server

    server = start_server(create_app(tiny_engine, "geolens-tiny"))
    yield server
    server.stop()


def test_ask_through_a_remote_model(tmp_path, geo_tif, plain_png, served):
    from app.services import load_engine, open_services

    launch = make_launch(tmp_path / "ws", rasters=(geo_tif, plain_png))
    remote = RemoteConfig(served.url + "/v1", "geolens-tiny", box_format="paper")
    engine, status = load_engine(launch.model, remote)
    assert isinstance(engine, RemoteEngine) and engine.geolens
    assert status.loaded and status.line == f"Model geolens-tiny at {served.url}/v1"
    services = open_services(launch, engine=engine, model_status=status)
    try:
        geo = next(r for r in services.catalog_list() if r.georeferenced)
        updates = list(handlers.ask(services, AskRequest(geo.raster_id, Task.CAPTION)))
        record = updates[-1].record
        assert record is not None and record.answer == updates[-1].text
        assert services.store.features()[0]["properties"]["model"] == "geolens-tiny"
    finally:
        services.close()


def header_text(services) -> str:
    """The model line the page header shows (the Markdown with elem_id geolens-model-status)."""
    from app.ui import build_blocks

    blocks = build_blocks(services)
    (md,) = [b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "geolens-model-status"]
    return md.value


def test_the_header_says_the_device_and_precision_of_an_in_process_model(engine_services, tiny_engine):
    placement = tiny_engine.placement
    assert not placement.quantize  # the CPU runs unquantized
    want = f"on {placement.device}, {str(placement.base_dtype).removeprefix('torch.')}"
    assert want == "on cpu, float32"
    from app.ui import plain_markdown

    line = engine_services.model_status.line
    assert want in line and tiny_engine.model_name in line
    assert header_text(engine_services) == plain_markdown(line)  # shown as it is, escaped


def test_the_header_names_the_endpoint_and_model_of_a_served_model(tmp_path, geo_tif, plain_png, served):
    from app.services import load_engine, open_services

    launch = make_launch(tmp_path / "ws", rasters=(geo_tif, plain_png))
    engine, status = load_engine(launch.model, RemoteConfig(served.url + "/v1", "geolens-tiny",
                                                            box_format="paper"))
    services = open_services(launch, engine=engine, model_status=status)
    try:
        from app.ui import plain_markdown

        line = services.model_status.line
        assert f"{served.url}/v1" in line and "geolens-tiny" in line
        assert header_text(services) == plain_markdown(line)
    finally:
        services.close()
