"""Change requests over HTTP: ``engine.serve`` takes two image_url parts (before first) and
``RemoteEngine`` sends them, against the in-process engine's answers for the same pair."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from engine import Engine
from engine.errors import InputError
from engine.remote import RemoteConfig, RemoteEngine
from engine.serve import create_app, start_server
from engine.types import Task
from tests.engine.test_remote import Fake, FakeServer, client, fake  # noqa: F401
from tests.engine.tiny import (  # noqa: F401
    cached_tiny_model_dir,
    make_model_say,
    one_torch_thread,
    png_data_uri,
    random_image,
    tiny_paper_engine,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NAME = "geolens-tiny"
AFTER = random_image(120, 200, seed=31)
BEFORE = random_image(120, 200, seed=32)
CASES = {
    "change_caption": {"task": Task.CHANGE_CAPTION},
    "change_ground": {"task": Task.CHANGE_GROUND, "question": "new building"},
    "change_ask": {"task": Task.CHANGE_ASK, "question": "Was a road built?"},
}


png_uri = png_data_uri


def body(text: str, images=(BEFORE, AFTER), **extra) -> dict:
    parts = [{"type": "image_url", "image_url": {"url": png_uri(im)}} for im in images]
    parts.append({"type": "text", "text": text})
    return {"model": NAME, "messages": [{"role": "user", "content": parts}], **extra}


@pytest.fixture(scope="module")
def engine() -> Engine:
    return tiny_paper_engine(12)


@pytest.fixture(scope="module")
def http(engine):
    with TestClient(create_app(engine, NAME)) as c:
        yield c


def _geolens_boxes(reply: dict) -> list:
    return [(b["x0"], b["y0"], b["x1"], b["y1"], b["label"]) for b in reply["geolens"]["boxes_px"]]


# --- engine.serve --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "request_body, args",
    [
        (body("/change_caption"), CASES["change_caption"]),
        (body(""), CASES["change_caption"]),  # two images, no text: describe the change
        (body("/change_ground new building"), CASES["change_ground"]),
        (body("new building", geolens={"task": "change_ground"}), CASES["change_ground"]),
        (body("Was a road built?"), CASES["change_ask"]),  # two images + text: a change question
    ],
)
def test_serve_routes_two_images_to_before_and_after(engine, http, request_body, args):
    expected = engine.run(AFTER, before=BEFORE, **args)
    reply = http.post("/v1/chat/completions", json=request_body)
    assert reply.status_code == 200, reply.text
    reply = reply.json()
    assert reply["choices"][0]["message"]["content"] == expected.text
    assert reply["geolens"]["task"] == args["task"].value
    assert reply["geolens"]["image_size"] == [200, 120]


def test_serve_sends_the_first_image_as_before(engine, http):
    """Swapping the two parts gives the answer of the swapped pair (the order reaches the model)."""
    swapped = engine.run(BEFORE, Task.CHANGE_CAPTION, before=AFTER)
    assert swapped.text != engine.run(AFTER, Task.CHANGE_CAPTION, before=BEFORE).text
    reply = http.post("/v1/chat/completions", json=body("", images=(AFTER, BEFORE))).json()
    assert reply["choices"][0]["message"]["content"] == swapped.text


def test_serve_change_ground_boxes_are_in_the_after_image(engine, http, monkeypatch):
    make_model_say(engine, monkeypatch, "new building: [100, 200, 500, 600]", repeat=True)
    reply = http.post("/v1/chat/completions", json=body("/change_ground new building")).json()
    [(x0, y0, x1, y1, label)] = _geolens_boxes(reply)
    assert (x0, y0, x1, y1) == pytest.approx((20.0, 24.0, 100.0, 72.0)) and label == "new building"


@pytest.mark.parametrize(
    "request_body, message",
    [
        (body("/caption"), "two images are for the change tasks"),
        (body("/change_caption", images=(AFTER,)), "send two image_url parts"),
        (body("what?", images=(BEFORE, AFTER, AFTER)), "at most two images"),
        (body("/change_caption", images=(BEFORE[:100], AFTER)), "100 pixels but the after"),
    ],
)
def test_serve_refuses_bad_pairs_with_a_clear_400(http, request_body, message):
    reply = http.post("/v1/chat/completions", json=request_body)
    assert reply.status_code == 400 and message in reply.json()["error"]["message"]


# --- RemoteEngine -> engine.serve ---------------------------------------------------------------
@pytest.fixture(scope="module")
def remote(engine):
    server = start_server(create_app(engine, NAME))
    yield RemoteEngine.connect(RemoteConfig(f"{server.url}/v1", NAME, box_format="paper"))
    server.stop()


@pytest.mark.parametrize("case", sorted(CASES))
def test_remote_change_answers_equal_the_in_process_engine(engine, remote, case):
    got = remote.run(AFTER, before=BEFORE, **CASES[case])
    expected = engine.run(AFTER, before=BEFORE, **CASES[case])
    assert got.text == expected.text and got.task is expected.task
    assert got.image_size_px == (200, 120)


def test_remote_change_ground_boxes_equal_the_engine(engine, remote, monkeypatch):
    make_model_say(engine, monkeypatch, "[100, 200, 500, 600]", repeat=True)
    got = remote.run(AFTER, Task.CHANGE_GROUND, "new building", before=BEFORE)
    expected = engine.run(AFTER, Task.CHANGE_GROUND, "new building", before=BEFORE)
    assert [b.xyxy for b in got.boxes_px] == [b.xyxy for b in expected.boxes_px]
    assert got.boxes_px[0].xyxy == pytest.approx((20, 24, 100, 72))


def test_remote_refuses_a_change_task_without_before_before_sending():
    offline = RemoteEngine(RemoteConfig("http://127.0.0.1:9/v1", "m", max_retries=0))
    with pytest.raises(InputError, match="needs before="):
        offline.stream(AFTER, Task.CHANGE_CAPTION)
    with pytest.raises(InputError, match="only for the change tasks"):
        offline.stream(AFTER, Task.CAPTION, before=BEFORE)


# --- RemoteEngine -> a third-party server (stand-in) -----------------------------------------------
def _decoded(part: dict) -> np.ndarray:
    raw = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


def test_third_party_server_gets_labelled_before_then_after_images(fake):  # noqa: F811
    fake.answer = ['[{"bbox_2d": [500, 500, 1000, 1000], "label": "new building"}]']
    answer = client(fake, "qwen3-vl").run(AFTER, Task.CHANGE_GROUND, "new building", before=BEFORE)
    content = fake.requests[-1]["messages"][-1]["content"]
    assert [p["type"] for p in content] == ["text", "image_url", "text", "image_url", "text"]
    assert content[0]["text"] == "Image 1 (before): " and "Image 2 (after)" in content[2]["text"]
    assert np.array_equal(_decoded(content[1]), BEFORE)  # grid family: the crops as they are
    assert np.array_equal(_decoded(content[3]), AFTER)
    assert "new building" in content[4]["text"]
    assert answer.boxes_px[0].xyxy == pytest.approx((100, 60, 200, 120))  # after-crop pixels


def test_pixel_family_resizes_both_images_to_one_size(fake):  # noqa: F811
    before, after = random_image(300, 500, seed=1), random_image(300, 500, seed=2)
    client(fake).run(after, Task.CHANGE_CAPTION, before=before)
    parts = [p for p in fake.requests[-1]["messages"][-1]["content"] if p["type"] == "image_url"]
    sizes = {_decoded(p).shape for p in parts}
    assert len(parts) == 2 and len(sizes) == 1
