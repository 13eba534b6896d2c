"""engine.serve: the engine over the OpenAI chat-completions protocol, against Engine.run.

The tiny random ``paper`` model answers gibberish, but the wiring is real: answers through HTTP
must equal the in-process engine's on the same image (text, boxes, label). Where boxes matter the
model is made to say a known answer (its logits are forced, as in test_engine_run.py).
"""

from __future__ import annotations

import base64
import json
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient

from engine import Engine, GenerationConfig
from engine.errors import EngineError
from engine.serve import create_app, start_server
from engine.serve.cli import api_key_from, build_parser
from engine.serve.protocol import ApiError, parse_chat_request
from engine.types import Task
from tests.engine.tiny import (  # noqa: F401
    cached_tiny_model_dir,
    one_torch_thread,
    png_data_uri,
    random_image,
    tiny_paper_engine,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NAME = "geolens-tiny"
IMAGE = random_image(120, 200)  # (H, W, 3): not square


def png_uri(image: np.ndarray = IMAGE, fmt: str = "PNG") -> str:
    return png_data_uri(image, fmt)


def body(text: str = "What is here?", images: tuple[str, ...] = (png_uri(),), **extra) -> dict:
    parts = [{"type": "text", "text": text}] + [
        {"type": "image_url", "image_url": {"url": url}} for url in images
    ]
    return {"model": NAME, "messages": [{"role": "user", "content": parts}], **extra}


@pytest.fixture(scope="module")
def engine() -> Engine:
    return tiny_paper_engine(12)


@pytest.fixture(scope="module")
def client(engine) -> TestClient:
    with TestClient(create_app(engine, NAME)) as c:
        yield c


def sse(response) -> tuple[list[dict], list[str]]:
    """The JSON payloads of a server-sent-event stream, and the raw data lines."""
    lines = [
        line[len("data: ") :] for line in response.text.splitlines() if line.startswith("data: ")
    ]
    return [json.loads(x) for x in lines if x != "[DONE]"], lines


# The same request in the engine's terms and in the protocol's (slash prefix or geolens field).
CASES = {
    "ask": ({"task": Task.ASK, "question": "How many tanks?"}, body("How many tanks?")),
    "caption": ({"task": Task.CAPTION}, body("/caption")),
    "ground": ({"task": Task.GROUND, "question": "storage tank"}, body("/ground storage tank")),
    "classify": (
        {"task": Task.CLASSIFY, "labels": ["harbor", "farmland"]},
        body("/classify harbor, farmland"),
    ),
    "region": (
        {"task": Task.REGION, "region_px": (10, 20, 150, 100), "question": "What?"},
        body("/region 10,20,150,100 What?"),
    ),
    "ground-field": (
        {"task": Task.GROUND, "question": "ship"},
        body("ship", geolens={"task": "ground"}),
    ),
    "region-field": (
        {"task": Task.REGION, "region_px": (0, 0, 50, 60), "question": None},
        body("", geolens={"task": "region", "region_px": [0, 0, 50, 60]}),
    ),
}


def same_answer(geolens: dict, text: str, answer) -> None:
    assert text == answer.text
    assert geolens["task"] == answer.task.value and geolens["label"] == answer.label
    assert geolens["image_size"] == [200, 120] == list(answer.image_size_px)
    assert [
        (b["x0"], b["y0"], b["x1"], b["y1"], b["label"], b["angle_deg"])
        for b in geolens["boxes_px"]
    ] == [(*b.xyxy, b.label, b.angle_deg) for b in answer.boxes_px]


def test_models_list_and_card(client):
    listed = client.get("/v1/models").json()
    assert listed["object"] == "list" and [m["id"] for m in listed["data"]] == [NAME]
    assert client.get(f"/v1/models/{NAME}").json()["id"] == NAME
    missing = client.get("/v1/models/gpt-4o")
    assert missing.status_code == 404 and NAME in missing.json()["error"]["message"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_answers_equal_engine_run(engine, client, case):
    args, request = CASES[case]
    expected = engine.run(IMAGE, **args)
    plain = client.post("/v1/chat/completions", json=request)
    assert plain.status_code == 200, plain.text
    reply = plain.json()
    assert reply["object"] == "chat.completion" and reply["model"] == NAME
    choice = reply["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in ("stop", "length")
    same_answer(reply["geolens"], choice["message"]["content"], expected)

    streamed = client.post("/v1/chat/completions", json={**request, "stream": True})
    assert streamed.headers["content-type"].startswith("text/event-stream")
    chunks, lines = sse(streamed)
    assert lines[-1] == "[DONE]"
    assert all(
        c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks
    )
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == choice["finish_reason"]
    same_answer(chunks[-1]["geolens"], text, expected)


@pytest.fixture()
def says(engine, monkeypatch):
    """Make the tiny model say ``text`` (then <|im_end|>) on every request."""
    from tests.engine.tiny import make_model_say

    return lambda text: make_model_say(engine, monkeypatch, text, repeat=True, max_new_tokens=64)


def test_boxes_come_back_in_pixels_of_the_sent_image(engine, client, says):
    says("tank: [100, 200, 500, 600]\nship: [0, 0, 1000, 1000, 30]")
    expected = engine.run(IMAGE, Task.GROUND, question="tank")
    assert len(expected.boxes_px) == 2
    reply = client.post("/v1/chat/completions", json=body("/ground tank")).json()
    same_answer(reply["geolens"], reply["choices"][0]["message"]["content"], expected)
    first = reply["geolens"]["boxes_px"][0]
    assert (first["x0"], first["y0"], first["x1"], first["y1"]) == pytest.approx((20, 24, 100, 72))
    assert reply["geolens"]["boxes_px"][1]["angle_deg"] == 30.0
    assert reply["choices"][0]["finish_reason"] == "stop"
    chunks, _ = sse(
        client.post("/v1/chat/completions", json={**body("/ground tank"), "stream": True})
    )
    same_answer(
        chunks[-1]["geolens"],
        "".join(c["choices"][0]["delta"].get("content", "") for c in chunks),
        expected,
    )


def test_jpeg_images_are_accepted(client):
    reply = client.post("/v1/chat/completions", json=body(images=(png_uri(fmt="JPEG"),)))
    assert reply.status_code == 200 and reply.json()["geolens"]["image_size"] == [200, 120]


def test_api_key_is_required_and_checked(engine):
    with TestClient(create_app(engine, NAME, api_key="s3cret")) as c:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic s3cret"}):
            denied = c.get("/v1/models", headers=headers)
            assert denied.status_code == 401
            assert denied.json()["error"]["code"] == "invalid_api_key"
            assert c.post("/v1/chat/completions", json=body(), headers=headers).status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def _two_images() -> dict:
    """Two images with a single-image task (two images are for change tasks: test_change_serve)."""
    return body("/caption", images=(png_uri(), png_uri()))


def _three_images() -> dict:
    return body(images=(png_uri(), png_uri(), png_uri()))


ERRORS = [
    ("no image", lambda: body(images=()), 400, "no image"),
    ("two images", _two_images, 400, "two images are for the change tasks"),
    ("three images", _three_images, 400, "at most two images"),
    ("not base64", lambda: body(images=("data:image/png;base64,@@@",)), 400, "bad data URI"),
    (
        "not an image",
        lambda: body(images=("data:image/png;base64," + base64.b64encode(b"hello").decode(),)),
        400,
        "not a readable PNG or JPEG",
    ),
    ("gif", lambda: body(images=("data:image/gif;base64,R0lGODlh",)), 400, "bad data URI"),
    ("url", lambda: body(images=("https://example.com/a.png",)), 400, "fetches no URLs"),
    ("unknown model", lambda: {**body(), "model": "gpt-4o"}, 404, f"serves '{NAME}'"),
    (
        "no model",
        lambda: {k: v for k, v in body().items() if k != "model"},
        400,
        "'model' is required",
    ),
    ("n=2", lambda: body(n=2), 400, "'n' must be 1"),
    ("no messages", lambda: {"model": NAME, "messages": []}, 400, "'messages'"),
    ("unknown task", lambda: body("/zoom in"), 400, "unknown task 'zoom'"),
    ("classify without labels", lambda: body("/classify"), 400, "non-empty list"),
    ("region outside", lambda: body("/region 0,0,900,900 What?"), 400, "not a box inside"),
    ("bad region", lambda: body("/region here"), 400, "needs 4 numbers"),
    (
        "bad geolens field",
        lambda: body(geolens={"task": "ground", "zoom": 2}),
        400,
        "unknown fields",
    ),
    (
        "audio part",
        lambda: {
            "model": NAME,
            "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}],
        },
        400,
        "unsupported part type",
    ),
]


@pytest.mark.parametrize("name,make,status,message", ERRORS, ids=[e[0] for e in ERRORS])
def test_error_matrix(client, name, make, status, message):
    reply = client.post("/v1/chat/completions", json=make())
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert message in error["message"] and {"type", "param", "code"} <= set(error)


def test_invalid_json_and_payload_too_large(engine, client):
    bad = client.post(
        "/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]["message"]
    with TestClient(create_app(engine, NAME, max_request_bytes=1000)) as small:
        big = small.post("/v1/chat/completions", json=body())
        assert big.status_code == 413 and "limit of 1000 bytes" in big.json()["error"]["message"]
        chunked = small.post("/v1/chat/completions", content=iter([b"{" * 600, b" " * 600]))
        assert chunked.status_code == 413  # no Content-Length: counted while reading
    unknown_route = client.get("/v1/completions")
    assert unknown_route.status_code in (404, 405) and "error" in unknown_route.json()


def test_task_conventions_parse_without_a_model():
    chat = parse_chat_request(body("/classify a , b,c"))
    assert chat.task is Task.CLASSIFY and chat.labels == ("a", "b", "c") and chat.question is None
    chat = parse_chat_request(body("/region [1, 2, 30, 40] why?"))
    assert chat.region_px == (1.0, 2.0, 30.0, 40.0) and chat.question == "why?"
    system = {"role": "system", "content": "/ground ignored"}
    chat = parse_chat_request({**body("plain question"), "messages": [system, *body()["messages"]]})
    assert chat.task is Task.ASK and chat.question == "What is here?"
    assert parse_chat_request(body("/ask /ground is text")).question == "/ground is text"
    with pytest.raises(ApiError, match="two images are for the change tasks"):
        parse_chat_request(_two_images())
    with pytest.raises(ApiError, match="at most two images"):
        parse_chat_request(_three_images())


def _args(*argv: str):
    return build_parser().parse_args(list(argv))


def test_host_and_api_key_rules():
    assert api_key_from(_args(), {}) is None
    assert api_key_from(_args("--host", "0.0.0.0", "--api-key-env", "K"), {"K": "abc"}) == "abc"
    with pytest.raises(EngineError, match="without an API key"):
        api_key_from(_args("--host", "0.0.0.0"), {})
    with pytest.raises(EngineError, match="unset or empty"):
        api_key_from(_args("--api-key-env", "K"), {})
    defaults = _args()
    assert defaults.model is None and defaults.host == "127.0.0.1"  # no model flags: the demo


def test_the_official_openai_client_over_real_http(engine):
    openai = pytest.importorskip("openai")
    server = start_server(create_app(engine, NAME, api_key="k3y"), "127.0.0.1", 0)
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="k3y", max_retries=0)
        assert [m.id for m in client.models.list()] == [NAME]
        messages = body("/ground storage tank")["messages"]
        expected = engine.run(IMAGE, Task.GROUND, question="storage tank")
        reply = client.chat.completions.create(model=NAME, messages=messages)
        same_answer(reply.model_extra["geolens"], reply.choices[0].message.content, expected)
        stream = client.chat.completions.create(model=NAME, messages=messages, stream=True)
        pieces = list(stream)
        text = "".join(p.choices[0].delta.content or "" for p in pieces)
        same_answer(pieces[-1].model_extra["geolens"], text, expected)

        results = []  # requests from several clients queue on the one model
        threads = [
            threading.Thread(
                target=lambda: results.append(
                    client.chat.completions.create(model=NAME, messages=messages)
                    .choices[0]
                    .message.content
                )
            )
            for _ in range(3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results == [expected.text] * 3

        with pytest.raises(openai.NotFoundError, match=NAME):
            client.chat.completions.create(model="gpt-4o", messages=messages)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0).models.list()
        with pytest.raises(openai.BadRequestError, match="at most two images"):
            client.chat.completions.create(model=NAME, messages=_three_images()["messages"])
    finally:
        server.stop()


def test_a_failing_engine_becomes_an_openai_error():
    class Broken:
        config = SimpleNamespace(generation=GenerationConfig(max_new_tokens=4))

        def stream(self, **kwargs):
            raise EngineError("the model fell over; restart the server")
            yield  # pragma: no cover

    with TestClient(create_app(Broken(), NAME)) as c:
        reply = c.post("/v1/chat/completions", json=body())
        assert reply.status_code == 500 and "fell over" in reply.json()["error"]["message"]
        chunks, lines = sse(c.post("/v1/chat/completions", json={**body(), "stream": True}))
        assert "fell over" in chunks[-1]["error"]["message"] and lines[-1] == "[DONE]"


@pytest.mark.slow
def test_no_model_flags_serve_the_shipped_demo_model():
    """``python -m engine.serve`` without --model: the demo model, answering as in process."""
    from engine.demo import read_demo_manifest
    from engine.serve.cli import load_engine

    demo, name = load_engine(_args("--device", "cpu"))
    assert name == "geolens-demo" and demo.config.backbone == "paper"
    classes = list(read_demo_manifest().scene_classes)
    image = random_image(128, 128, seed=3)
    requests = [
        ({"task": Task.GROUND, "question": "building"}, "/ground building"),
        ({"task": Task.CLASSIFY, "labels": classes}, "/classify " + ", ".join(classes)),
        ({"task": Task.CAPTION}, "/caption"),
    ]
    with TestClient(create_app(demo, name)) as c:
        for args, text in requests:
            request = {**body(text, images=(png_uri(image),)), "model": name}
            reply = c.post("/v1/chat/completions", json=request).json()
            expected = demo.run(image, **args)
            assert reply["geolens"]["image_size"] == [128, 128]
            assert reply["choices"][0]["message"]["content"] == expected.text
            assert reply["geolens"]["label"] == expected.label
            assert [(b["x0"], b["y0"], b["x1"], b["y1"]) for b in reply["geolens"]["boxes_px"]] == [
                b.xyxy for b in expected.boxes_px
            ]
            assert len(reply["geolens"]["evidence"]) == len(expected.evidence) > 0


def test_a_client_that_leaves_stops_the_generation():
    """Closing the event stream (what a disconnect does) stops the engine at its next token."""
    import asyncio
    import time
    from concurrent.futures import ThreadPoolExecutor

    from engine.generation import TextDelta
    from engine.serve.app import _events

    produced = []

    class Slow:
        def stream(self, **kwargs):
            for i in range(200):
                produced.append(i)
                time.sleep(0.01)
                yield TextDelta("x")

    async def leave_after_one() -> None:
        events = _events(Slow(), {}, ThreadPoolExecutor(max_workers=1))
        async for _ in events:
            break
        await events.aclose()

    # In a thread of its own: a sync Playwright session earlier in the suite leaves an event loop
    # running in the main thread, where asyncio.run() refuses to start another.
    with ThreadPoolExecutor(max_workers=1) as runner:
        runner.submit(asyncio.run, leave_after_one()).result(timeout=60)
    time.sleep(0.3)
    assert len(produced) < 20
