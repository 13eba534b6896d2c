"""``python launch.py --check``: real checks on this machine, real folders, real HTTP."""

from __future__ import annotations

import io
import json
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import launch
from app.config import build_arg_parser, parse_launch_config
from app.diagnostics import (
    Status,
    check_bitsandbytes,
    check_gdal,
    check_model,
    exit_status,
    main,
    run_checks,
)
from engine.demo.manifest import DEMO_MANIFEST, read_demo_manifest


def report_of(argv, manifest=DEMO_MANIFEST) -> tuple[int, str]:
    out = io.StringIO()
    status = main(argv, {}, manifest, out=out)
    return status, out.getvalue()


def lines_named(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("[") and f"] {prefix}" in line]


def test_the_demo_model_checks_ok_on_this_machine():
    status, text = report_of([])
    for name in ("demo model", "model (paper) llm", "model (paper) vision", "adapter",
                 "knowledge base"):
        (line,) = lines_named(text, name)
        assert line.startswith("[OK  ]"), line
    for name in ("python", "torch", "bitsandbytes", "GDAL", "retrieval libraries"):
        assert len(lines_named(text, name)) == 1, text
    # the exit status follows the lines: 1 exactly when one of them FAILs
    assert status == int("[FAIL]" in text)
    count = sum(line.startswith("[") for line in text.splitlines())
    assert text.rstrip().splitlines()[-1].startswith(f"{count} checks: {text.count('[FAIL]')} FAIL")


def test_nf4_kernels_and_gdal_drivers_are_really_exercised():
    nf4 = check_bitsandbytes("cpu")
    assert nf4.status is Status.OK and "NF4" in nf4.detail, nf4  # bitsandbytes >= 0.45 runs on CPU
    gdal = check_gdal()
    assert gdal.status is not Status.FAIL and "GTiff" in gdal.detail
    import rasterio

    assert rasterio.__gdal_version__ in gdal.detail


@pytest.fixture()
def demo_copy(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(read_demo_manifest().model_dir, folder)
    return folder


def test_a_model_folder_without_config_json_fails_naming_the_file(demo_copy):
    (demo_copy / "llm" / "config.json").unlink()
    launch_cfg = parse_launch_config(["--model", str(demo_copy), "--device", "cpu"], {})
    checks = check_model(launch_cfg.model)
    bad = [c for c in checks if c.status is Status.FAIL]
    assert len(bad) == 1 and "config.json" in bad[0].detail and str(demo_copy / "llm") in bad[0].detail
    assert bad[0].fix
    assert exit_status(checks) == 1
    ok = [c for c in checks if "vision" in c.name]
    assert ok[0].status is Status.OK


def test_a_qwen_vl_folder_is_checked_for_weights_shards_tokenizer_and_processor(tmp_path):
    folder = tmp_path / "qwen3"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors",
                                   "b": "model-00002-of-00002.safetensors"}}))
    (folder / "model-00001-of-00002.safetensors").write_bytes(b"")
    spec = parse_launch_config(["--model", str(folder), "--backbone", "qwen3-vl"], {}).model
    (check,) = check_model(spec)
    assert check.status is Status.FAIL
    for name in ("model-00002-of-00002.safetensors", "tokenizer.json", "preprocessor_config.json"):
        assert name in check.detail
    assert "model-00001" not in check.detail and "config.json," not in check.detail
    for name in ("tokenizer.json", "preprocessor_config.json", "model-00002-of-00002.safetensors"):
        (folder / name).write_text("{}")
    (check,) = check_model(spec)
    assert check.status is Status.OK, check


def test_a_hub_name_not_in_the_cache_fails_with_the_download_command(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    spec = parse_launch_config(["--model", "Qwen/Qwen3-VL-8B-Instruct", "--backbone", "qwen3-vl"], {}).model
    (check,) = check_model(spec)
    assert check.status is Status.FAIL and "huggingface-cli download Qwen/Qwen3-VL-8B-Instruct" in check.fix


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_endpoint_that_refuses_connections_fails_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}/v1"
    status, text = report_of(["--api-base", url, "--api-model", "qwen-a"])
    (line,) = lines_named(text, "endpoint")
    assert line.startswith("[FAIL]") and f"cannot reach the model server at {url}" in line
    assert status == 1
    assert not lines_named(text, "demo model")  # a served model needs no local model folder


class Models(BaseHTTPRequestHandler):
    """Stands in for a third-party server's ``GET /v1/models``."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/v1/models":
            self.send_error(404)
            return
        data = json.dumps({"object": "list", "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "vllm"}
            for m in ("qwen-a", "qwen-b")]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def models_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Models)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_a_serving_endpoint_is_ok_and_lists_its_models(models_server):
    launch_cfg = parse_launch_config(["--api-base", models_server, "--api-model", "qwen-b",
                                      "--box-format", "qwen3-vl"], {})
    (line,) = [c for c in run_checks(launch_cfg) if c.name.startswith("endpoint")]
    assert line.status is Status.OK
    assert "qwen-a, qwen-b" in line.detail and "'qwen-b'" in line.detail and "qwen3-vl" in line.detail


def test_a_model_the_endpoint_does_not_serve_fails_listing_what_it_serves(models_server):
    status, text = report_of(["--api-base", models_server, "--api-model", "gpt-x"])
    (line,) = lines_named(text, "endpoint")
    assert line.startswith("[FAIL]") and "does not serve model 'gpt-x'; it serves: qwen-a, qwen-b" in line
    assert status == 1


def test_flags_that_do_not_parse_are_a_fail_line_and_the_environment_is_still_checked():
    status, text = report_of(["--api-base", "http://127.0.0.1:1/v1"])  # no --api-model
    (line,) = lines_named(text, "flags")
    assert line.startswith("[FAIL]") and "--api-model" in line
    assert lines_named(text, "GDAL") and status == 1


def test_launch_check_prints_the_report_and_does_not_start_the_app(capsys, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    status = launch.main(["--check", "--api-base", url, "--api-model", "m",
                          "--workspace", str(tmp_path / "ws")])
    out = capsys.readouterr().out
    assert status == 1 and out.startswith("GeoLens diagnostics") and url in out
    assert "serving http" not in out and not (tmp_path / "ws").exists()  # nothing was opened


def test_help_documents_check():
    text = build_arg_parser().format_help()
    assert "--check" in text and "diagnostics report" in text


def test_a_knowledge_base_folder_is_checked(tmp_path):
    demo_kb = read_demo_manifest().kb_dir
    launch_cfg = parse_launch_config(["--kb", str(demo_kb), "--model", str(tmp_path)], {})
    (kb,) = [c for c in run_checks(launch_cfg) if c.name == "knowledge base"]
    count = json.loads((demo_kb / "manifest.json").read_text())["count"]
    assert kb.status is Status.OK and f"{count} descriptions" in kb.detail, kb
    broken = tmp_path / "kb"
    shutil.copytree(demo_kb, broken)
    (broken / "index.faiss").unlink()
    launch_cfg = parse_launch_config(["--kb", str(broken), "--model", str(tmp_path)], {})
    (kb,) = [c for c in run_checks(launch_cfg) if c.name == "knowledge base"]
    assert kb.status is Status.FAIL and "index.faiss" in kb.detail
