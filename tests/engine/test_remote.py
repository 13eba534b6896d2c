"""engine.remote: a model behind an OpenAI-compatible endpoint, answering like the engine.

End to end against ``engine.serve`` running the tiny ``paper`` model over real HTTP: answers,
labels and boxes must equal the in-process engine's for the same crop. The error matrix runs
against a small HTTP server written here (it stands in for a third-party server: vLLM, llama.cpp).
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from engine import Engine
from engine.boxes import BOX_CONVENTIONS, box_convention
from engine.errors import ConfigError, InputError
from engine.generation import Final, TextDelta
from engine.remote import RemoteConfig, RemoteEngine, RemoteModelError, model_input_size
from engine.serve import create_app, start_server
from engine.types import Task
from tests.engine.tiny import (  # noqa: F401
    cached_tiny_model_dir,
    one_torch_thread,
    random_image,
    tiny_paper_engine,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NAME = "geolens-tiny"
IMAGE = random_image(120, 200)  # (H, W, 3): not square

CASES = {
    "ask": {"task": Task.ASK, "question": "How many tanks?"},
    "caption": {"task": Task.CAPTION},
    "ground": {"task": Task.GROUND, "question": "storage tank"},
    "classify": {"task": Task.CLASSIFY, "labels": ["harbor", "farmland"]},
    "region": {"task": Task.REGION, "region_px": (10, 20, 150, 100), "question": "What?"},
}


# --- engine.serve with the tiny model ----------------------------------------------------------------
@pytest.fixture(scope="module")
def engine() -> Engine:
    return tiny_paper_engine(12)


@pytest.fixture(scope="module")
def served(engine):
    server = start_server(create_app(engine, NAME))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def remote(served) -> RemoteEngine:
    return RemoteEngine.connect(RemoteConfig(f"{served.url}/v1", NAME, box_format="paper"))


@pytest.fixture()
def says(engine, monkeypatch):
    """Make the tiny model say ``text`` (then <|im_end|>) on every request."""
    from tests.engine.tiny import make_model_say

    return lambda text: make_model_say(engine, monkeypatch, text, repeat=True, max_new_tokens=64)


def same(remote_answer, local_answer) -> None:
    assert remote_answer.text == local_answer.text
    assert remote_answer.task is local_answer.task and remote_answer.label == local_answer.label
    assert remote_answer.image_size_px == local_answer.image_size_px == (200, 120)
    assert [(*b.xyxy, b.label, b.angle_deg) for b in remote_answer.boxes_px] == [
        (*b.xyxy, b.label, b.angle_deg) for b in local_answer.boxes_px
    ]


def test_connect_recognises_engine_serve(remote, served):
    assert remote.geolens and remote.model_name == NAME and remote.endpoint == f"{served.url}/v1"


@pytest.mark.parametrize("case", sorted(CASES))
def test_answers_equal_the_in_process_engine(engine, remote, case):
    same(remote.run(IMAGE, **CASES[case]), engine.run(IMAGE, **CASES[case]))


def test_streaming_gives_pieces_then_the_answer(engine, remote):
    events = list(remote.stream(IMAGE, Task.ASK, question="What is here?"))
    assert isinstance(events[-1], Final) and all(isinstance(e, TextDelta) for e in events[:-1])
    assert len(events) >= 2
    assert "".join(e.text for e in events[:-1]) == events[-1].answer.text
    same(events[-1].answer, engine.run(IMAGE, Task.ASK, question="What is here?"))


def test_boxes_equal_the_in_process_engine(engine, remote, served, says):
    says("tank: [100, 200, 500, 600]\nship: [0, 0, 1000, 1000, 30]")
    expected = engine.run(IMAGE, Task.GROUND, question="tank")
    assert len(expected.boxes_px) == 2
    same(remote.run(IMAGE, Task.GROUND, question="tank"), expected)
    # A server without the geolens field: the client parses the text with the registry.
    plain = RemoteEngine(RemoteConfig(f"{served.url}/v1", NAME, box_format="paper"), geolens=False)
    same(plain.run(IMAGE, Task.GROUND, question="tank"), expected)
    assert expected.boxes_px[0].xyxy == pytest.approx((20, 24, 100, 72))


def test_stop_closes_the_stream(remote, says):
    says("a long answer " * 10)
    events = remote.stream(IMAGE, Task.ASK, question="Talk")
    assert isinstance(next(events), TextDelta)
    events.close()  # Stop: the HTTP stream is closed, the engine stops at its next token
    answer = remote.run(IMAGE, Task.CAPTION)  # the server is free again
    assert "long answer" in answer.text


def test_bad_inputs_fail_before_any_request():
    offline = RemoteEngine(RemoteConfig("http://127.0.0.1:9/v1", "m", max_retries=0))
    with pytest.raises(InputError, match="needs region_px"):
        offline.stream(IMAGE, Task.REGION, question="what?")
    with pytest.raises(ConfigError, match="unknown box convention"):
        RemoteConfig("http://127.0.0.1:9/v1", "m", box_format="yolo")
    with pytest.raises(ConfigError, match="http"):
        RemoteConfig("127.0.0.1:9", "m")


# --- a stand-in third-party server ----------------------------------------------------------------
class Fake(BaseHTTPRequestHandler):
    """Answers by ``server.mode``; records the image size of every chat request."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._json(
            status, {"error": {"message": message, "type": "x", "param": None, "code": None}}
        )

    def do_GET(self) -> None:
        models = [
            {"id": m, "object": "model", "created": 0, "owned_by": "vllm"}
            for m in ("qwen-a", "qwen-b")
        ]
        self._json(200, {"object": "list", "data": models})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        self.server.auth.append(self.headers.get("Authorization"))
        mode = self.server.mode
        if mode in (401, 404, 413, 500):
            return self._error(
                mode,
                {
                    401: "bad key",
                    404: "The model `x` does not exist.",
                    413: "request entity too large",
                    500: "CUDA error",
                }[mode],
            )
        if mode == "images":
            return self._error(400, "At most 0 image(s) may be provided in one request.")
        if mode == "hang":
            time.sleep(3)
            try:
                return self._error(500, "too late")
            except OSError:  # the client gave up long ago
                return None
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if mode == "badextra":
            extra = {"boxes_px": [{"x0": 5}]}
            chunk = {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "m",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                "geolens": extra,
            }
            return self._chunk(f"data: {json.dumps(chunk)}\n\n".encode(), last=True)
        if mode == "reset":  # engine.serve restarting an answer (out of GPU memory)
            for payload in ({"content": "lost "}, {}, {"content": "kept"}):
                chunk = {
                    "id": "c",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": "m",
                    "choices": [{"index": 0, "delta": payload, "finish_reason": None}],
                }
                if not payload:
                    chunk["geolens"] = {"reset": "out of GPU memory"}
                self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
            return self._chunk(b"data: [DONE]\n\n", last=True)
        if mode == "garbage":
            return self._chunk(b"data: <html>not json</html>\n\n", last=True)
        pieces = self.server.answer
        for piece in pieces:
            chunk = {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "qwen-a",
                "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
            }
            self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
            if mode == "cut":  # one piece, then the connection drops mid-body
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                return
        self._chunk(b"data: [DONE]\n\n", last=True)

    def _chunk(self, data: bytes, last: bool = False) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        if last:
            self.wfile.write(b"0\r\n\r\n")


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # clients that hang up are expected
        pass


@pytest.fixture()
def fake():
    server = FakeServer(("127.0.0.1", 0), Fake)
    server.mode, server.requests, server.auth = "ok", [], []
    server.answer = ["Two ", "tanks."]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield server
    server.shutdown()
    server.server_close()


def client(fake, box_format: str = "qwen2.5-vl", **kw) -> RemoteEngine:
    return RemoteEngine(
        RemoteConfig(fake.url, "qwen-a", box_format=box_format, **{"max_retries": 0, **kw})
    )


def sent_image(body: dict) -> Image.Image:
    (part,) = [p for p in body["messages"][-1]["content"] if p["type"] == "image_url"]
    return Image.open(io.BytesIO(base64.b64decode(part["image_url"]["url"].split(",", 1)[1])))


def test_pixel_family_gets_the_exact_resized_crop_and_boxes_map_back(fake):
    image = random_image(300, 500)
    size = model_input_size((500, 300), box_convention("qwen2.5-vl"), 1280 * 28 * 28)
    assert size == (504, 308) and size[0] % 28 == 0 and size[1] % 28 == 0
    fake.answer = ['[{"bbox_2d": [0, 0, 252', ', 154], "label": "tank"}]']
    answer = client(fake).run(image, Task.GROUND, question="tank")
    assert sent_image(fake.requests[-1]).size == size  # the server has nothing left to resize
    assert [(*b.xyxy, b.label) for b in answer.boxes_px] == [
        pytest.approx((0, 0, 250, 150, "tank"))
    ]
    user = fake.requests[-1]["messages"][-1]["content"]
    assert "Locate every tank" in next(p["text"] for p in user if p["type"] == "text")
    assert "geolens" not in fake.requests[-1]  # a third-party server gets plain OpenAI requests


def test_the_pre_resize_is_what_the_qwen25vl_processor_keeps():
    from transformers import Qwen2VLImageProcessor

    processor = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=12845056)  # the 7B's config
    for w, h in ((500, 300), (1024, 1024), (97, 433), (2000, 1500)):
        sent = model_input_size((w, h), box_convention("qwen2.5-vl"), 1280 * 28 * 28)
        image = np.zeros((sent[1], sent[0], 3), dtype=np.uint8)
        _, gh, gw = processor(images=[image], return_tensors="np")["image_grid_thw"][0]
        assert (gw * 14, gh * 14) == sent  # the server keeps the sent size: boxes map back exactly


def test_a_reset_drops_the_text_so_far(fake):
    fake.mode = "reset"
    events = list(client(fake).stream(IMAGE, Task.ASK, question="?"))
    assert [type(e).__name__ for e in events] == ["TextDelta", "Reset", "TextDelta", "Final"]
    assert events[-1].answer.text == "kept"


def test_grid_family_sends_the_crop_as_is(fake):
    fake.answer = ['[{"bbox_2d": [500, 500, 1000, 1000], "label": "ship"}]']
    answer = client(fake, "qwen3-vl").run(IMAGE, Task.GROUND, question="ship")
    assert sent_image(fake.requests[-1]).size == (200, 120)
    assert answer.boxes_px[0].xyxy == pytest.approx((100, 60, 200, 120))


def test_region_is_written_in_the_family_convention(fake):
    client(fake).run(IMAGE, Task.REGION, question="what?", region_px=(10, 20, 150, 100))
    sent = sent_image(fake.requests[-1]).size  # (196, 112)
    text = fake.requests[-1]["messages"][-1]["content"][1]["text"]
    expected = box_convention("qwen2.5-vl").encode((10, 20, 150, 100), (200, 120), sent)
    assert expected in text


@pytest.mark.parametrize(
    "mode, match",
    [
        (401, r"refused the request \(401: bad key\).*--api-key-env"),
        (404, r"does not know model 'qwen-a'.*serves: qwen-a, qwen-b"),
        (413, r"too large.*smaller region"),
        (500, r"failed \(500: CUDA error\).*server's log"),
        ("images", r"refused the image.*vision model"),
        ("cut", r"broke off the answer"),
        ("garbage", r"not an OpenAI chat-completions stream"),
    ],
)
def test_error_matrix(fake, mode, match):
    fake.mode = mode
    with pytest.raises(RemoteModelError, match=match) as info:
        list(client(fake).stream(IMAGE, Task.ASK, question="What?"))
    assert fake.url in str(info.value)


def test_a_malformed_geolens_field_is_named(fake):
    fake.mode = "badextra"
    remote = RemoteEngine(RemoteConfig(fake.url, "qwen-a", max_retries=0), geolens=True)
    with pytest.raises(RemoteModelError, match=r"malformed 'geolens' field"):
        remote.run(IMAGE, Task.GROUND, question="tank")
    assert fake.requests[-1]["geolens"] == {"task": "ground", "labels": [], "region_px": None}


def test_every_box_convention_has_prompts_and_answer_length_is_sent(fake):
    for name in BOX_CONVENTIONS:
        client(fake, name, max_tokens=7).run(IMAGE, Task.CAPTION)
        assert fake.requests[-1]["max_tokens"] == 7


def test_a_hanging_server_times_out(fake):
    fake.mode = "hang"
    start = time.monotonic()
    with pytest.raises(RemoteModelError, match=r"did not answer within 0.5 s \(1 attempt"):
        client(fake, timeout_s=0.5).run(IMAGE, Task.CAPTION)
    assert time.monotonic() - start < 2.5


def test_unreachable_server_is_retried_then_named():
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(
        RemoteModelError, match=rf"cannot reach the model server at {url} \(after 1 retries\)"
    ):
        RemoteEngine(RemoteConfig(url, "m", max_retries=1)).run(IMAGE, Task.CAPTION)


def test_connect_lists_the_served_models(fake):
    with pytest.raises(
        RemoteModelError, match=r"does not serve model 'gpt-x'; it serves: qwen-a, qwen-b"
    ):
        RemoteEngine.connect(RemoteConfig(fake.url, "gpt-x"))
    assert not RemoteEngine.connect(RemoteConfig(fake.url, "qwen-a")).geolens


def test_api_key_is_sent_and_never_shown(fake):
    config = RemoteConfig(fake.url, "qwen-a", api_key_env="MY_KEY", api_key="s3cret", max_retries=0)
    assert "s3cret" not in repr(config)
    RemoteEngine(config).run(IMAGE, Task.CAPTION)
    assert fake.auth == ["Bearer s3cret"]


def test_stop_against_a_third_party_server(fake):
    fake.answer = ["a ", "b ", "c"]
    events = client(fake).stream(IMAGE, Task.ASK, question="?")
    assert next(events) == TextDelta("a ")
    events.close()  # no error; the next request works
    assert client(fake).run(IMAGE, Task.ASK, question="?").text == "a b c"


# --- retrieval: the client's knowledge base feeds the remote prompt -------------------------------
def user_text(body: dict) -> str:
    return next(p["text"] for p in body["messages"][-1]["content"] if p["type"] == "text")


@pytest.mark.parametrize("box_format", ["qwen2.5-vl", "qwen3-vl"])
def test_retrieved_descriptions_go_into_the_prompt_and_come_back_as_evidence(fake, box_format):
    from engine.config import RetrievalConfig
    from engine.demo.manifest import load_demo_retriever, read_demo_manifest

    kb = read_demo_manifest().kb_dir  # the shipped demo knowledge base, found with the demo CLIP
    config = RemoteConfig(
        fake.url, "qwen-a", box_format=box_format, max_retries=0,
        retrieval=RetrievalConfig(kb_dir=kb, top_k=2),
    )
    remote = RemoteEngine.connect(config)
    image = random_image(96, 128, seed=3)
    answer = remote.run(image, Task.CAPTION)
    expected = load_demo_retriever().retrieve_for_image(image, 2)  # the demo engine's own retriever
    assert [e.text for e in answer.evidence] == [e.text for e in expected]
    assert [e.score for e in answer.evidence] == pytest.approx([e.score for e in expected])
    sent = user_text(fake.requests[-1])
    assert "Descriptions of similar remote sensing scenes" in sent
    for e in expected:
        assert f"- {e.text.strip()}" in sent
    assert answer.timing.retrieval_s > 0


def test_without_a_knowledge_base_the_prompt_has_no_descriptions(fake):
    answer = client(fake).run(IMAGE, Task.CAPTION)
    assert answer.evidence == () and answer.timing.retrieval_s == 0
    assert "Descriptions" not in user_text(fake.requests[-1])


def test_a_missing_knowledge_base_is_named(fake, tmp_path):
    from engine.config import RetrievalConfig
    from engine.errors import EngineError

    missing = tmp_path / "no-kb"
    config = RemoteConfig(fake.url, "qwen-a", retrieval=RetrievalConfig(kb_dir=missing))
    with pytest.raises(EngineError, match=str(missing)):
        RemoteEngine.connect(config)
