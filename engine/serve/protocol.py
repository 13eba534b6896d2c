"""The OpenAI chat-completions wire format as ``engine.serve`` speaks it: requests in, answers out.

A request is one image and one question (the engine answers single turns):

* ``messages``: the image is the one ``image_url`` part in any user message, a ``data:`` URI with
  a base64 PNG or JPEG (the server fetches no URLs); the question is the text of the *last* user
  message. System messages and earlier turns are ignored (the engine brings its own prompts).
  Change requests send two ``image_url`` parts, the earlier ("before") image first and the later
  ("after") one second, of the same size; the task is then ``change_caption`` (no text),
  ``change_ask`` (text) or the ``change_*`` task named, and boxes are in the after image's pixels.
* The task: the extra body field ``geolens`` when present, ``{"task": "ground", "labels": [...],
  "region_px": [x0, y0, x1, y1]}`` (the text is then the question as is); else a slash prefix in
  the text: ``/ask``, ``/caption``, ``/ground <phrase>``, ``/classify <label>, <label>, ...``,
  ``/change_caption``, ``/change_ground <phrase>``, ``/change_ask <question>``,
  ``/region <x0>,<y0>,<x1>,<y1> <question>`` (region in pixels of the sent image); else ``ask``.
* Decoding is always greedy; ``temperature``, ``top_p``, ``max_tokens`` and other sampling fields
  are accepted and ignored (the answer length is the server's ``--max-new-tokens``); ``n`` must
  be 1.

The answer is the usual ``choices[0].message.content`` plus ``geolens`` (see :func:`geolens_extra`):
``{"task", "boxes_px": [{"x0", "y0", "x1", "y1", "label", "score", "angle_deg"}], "image_size":
[w, h], "label", "evidence": [{"text", "score", "source", "level"}], "timing": {...}}``, boxes in
pixels of the sent image. Streamed answers carry it in the last chunk (the one with
``finish_reason``); a chunk with ``geolens: {"reset": reason}`` means the engine restarted the
answer (out of GPU memory, retried at a smaller image size): drop the text received so far. Errors are OpenAI's ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from engine.types import Answer, BoxPx, Task

__all__ = [
    "ApiError",
    "ChatRequest",
    "answer_response",
    "chunk",
    "decode_data_uri",
    "error_body",
    "geolens_extra",
    "parse_chat_request",
]

MAX_IMAGE_PIXELS = 50_000_000  # a decoded image larger than this is refused (decompression bombs)
_DATA_URI = re.compile(r"^data:(image/(?:png|jpeg|jpg));base64,(.*)$", re.DOTALL | re.IGNORECASE)
_REGION_PREFIX = re.compile(
    r"^\s*\[?\s*([-+\d.eE]+(?:\s*,\s*[-+\d.eE]+){3})\s*\]?\s*(.*)$", re.DOTALL
)
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    500: "server_error",
    503: "server_error",
}


class ApiError(Exception):
    """An error answered as OpenAI's error JSON with ``status``."""

    def __init__(
        self, status: int, message: str, code: str | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def error_body(
    status: int, message: str, code: str | None = None, param: str | None = None
) -> dict:
    """OpenAI's error object."""
    return {
        "error": {
            "message": message,
            "type": _ERROR_TYPES.get(status, "invalid_request_error"),
            "param": param,
            "code": code,
        }
    }


@dataclass(frozen=True)
class ChatRequest:
    """One parsed chat-completions request, ready for ``Engine.stream``."""

    model: str
    image: np.ndarray = field(compare=False)  # (H, W, 3) uint8 RGB
    task: Task
    question: str | None
    labels: tuple[str, ...] = ()
    region_px: tuple[float, ...] | None = None
    stream: bool = False
    before: np.ndarray | None = field(default=None, compare=False)  # change tasks: earlier image

    def engine_args(self) -> dict:
        """Keyword arguments of :meth:`engine.Engine.stream` / ``run``."""
        args = {
            "image": self.image,
            "task": self.task,
            "question": self.question,
            "region_px": self.region_px,
            "labels": self.labels or None,
        }
        if self.before is not None:
            args["before"] = self.before
        return args


def parse_chat_request(body: object) -> ChatRequest:
    """A parsed JSON body -> :class:`ChatRequest`; raises :class:`ApiError` (400) naming the field."""
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(body).__name__}")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' is required: the name GET /v1/models lists", param="model")
    if body.get("n", 1) != 1:
        raise ApiError(
            400, f"'n' must be 1 (greedy decoding gives one answer), got {body['n']!r}", param="n"
        )
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, f"'stream' must be true or false, got {stream!r}", param="stream")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(
            400, "'messages' must be a non-empty list of chat messages", param="messages"
        )
    images, text = _read_messages(messages)
    if not images:
        raise ApiError(
            400,
            "no image in the request: add one user message part "
            '{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}',
            param="messages",
        )
    if len(images) > 2:
        raise ApiError(
            400,
            f"at most two images per request (before, after for a change task): got "
            f"{len(images)}; send each other image in its own request",
            param="messages",
        )
    task, question, labels, region = _task_of(text, body.get("geolens"), pair=len(images) == 2)
    if len(images) == 2 and not task.is_change:
        raise ApiError(
            400,
            f"two images are for the change tasks (change_caption, change_ground, change_ask), "
            f"not {task.value!r}; send one image, or ask a change task",
            param="messages",
        )
    if len(images) == 1 and task.is_change:
        raise ApiError(
            400,
            f"task {task.value!r} compares two dates: send two image_url parts, the earlier "
            "(before) image first, then the later (after) one",
            param="messages",
        )
    decoded = [decode_data_uri(url) for url in images]
    return ChatRequest(
        model=model,
        image=decoded[-1],
        task=task,
        question=question,
        labels=labels,
        region_px=region,
        stream=stream,
        before=decoded[0] if len(decoded) == 2 else None,
    )


def _read_messages(messages: list) -> tuple[list[str], str]:
    """Image URLs of all user messages and the text of the last user message."""
    images, text = [], ""
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ApiError(400, f"messages[{i}] must be an object with a 'role'", param="messages")
        if message["role"] != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            text = content
            continue
        if not isinstance(content, list):
            raise ApiError(
                400, f"messages[{i}].content must be a string or a list of parts", param="messages"
            )
        texts = []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind == "image_url":
                url = part.get("image_url")
                url = url.get("url") if isinstance(url, dict) else url
                if not isinstance(url, str):
                    raise ApiError(
                        400, f"messages[{i}].content[{j}].image_url needs a 'url'", param="messages"
                    )
                images.append(url)
            else:
                raise ApiError(
                    400,
                    f"messages[{i}].content[{j}]: unsupported part type {kind!r}; "
                    "use 'text' and 'image_url'",
                    param="messages",
                )
        text = "\n".join(texts)
    return images, text


def _task_of(
    text: str, extra: object, pair: bool = False
) -> tuple[Task, str | None, tuple[str, ...], tuple | None]:
    """(task, question, labels, region) from the ``geolens`` field or the text's slash prefix.
    With two images (``pair``) and no task named, the task is ``change_ask`` when there is
    text, else ``change_caption``."""
    text = text.strip()
    if extra is not None:
        if not isinstance(extra, dict):
            raise ApiError(
                400, f"'geolens' must be an object, got {type(extra).__name__}", param="geolens"
            )
        unknown = set(extra) - {"task", "labels", "region_px"}
        if unknown:
            raise ApiError(
                400,
                f"'geolens' has unknown fields {sorted(unknown)}; known: task, labels, region_px",
                param="geolens",
            )
        default = ("change_ask" if text else "change_caption") if pair else "ask"
        task = _task(extra.get("task", default))
        labels = extra.get("labels") or ()
        if not isinstance(labels, list | tuple) or not all(isinstance(x, str) for x in labels):
            raise ApiError(
                400, f"geolens.labels must be a list of strings, got {labels!r}", param="geolens"
            )
        region = extra.get("region_px")
        return task, text or None, tuple(labels), tuple(region) if region is not None else None
    match = re.match(r"^/(\w+)\b\s*(.*)$", text, re.DOTALL)
    if match is None:
        if pair:
            return (Task.CHANGE_ASK if text else Task.CHANGE_CAPTION), text or None, (), None
        return Task.ASK, text or None, (), None
    task, rest = _task(match.group(1)), match.group(2).strip()
    if task is Task.CLASSIFY:
        return task, None, tuple(x.strip() for x in rest.split(",") if x.strip()), None
    if task is Task.REGION:
        region = _REGION_PREFIX.match(rest)
        if region is None:
            raise ApiError(400, f"'/region' needs 4 numbers x0,y0,x1,y1 first, got {rest[:80]!r}")
        try:
            box = tuple(float(v) for v in region.group(1).split(","))
        except ValueError:
            raise ApiError(400, f"'/region' box {region.group(1)!r} is not 4 numbers") from None
        return task, region.group(2).strip() or None, (), box
    return task, rest or None, (), None


def _task(name: object) -> Task:
    try:
        return Task(str(name).strip().lower())
    except ValueError:
        known = ", ".join(t.value for t in Task)
        raise ApiError(
            400, f"unknown task {name!r}; use one of: {known}", param="geolens"
        ) from None


def decode_data_uri(url: str, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """``data:image/png|jpeg;base64,...`` -> RGB uint8 (H, W, 3); :class:`ApiError` otherwise."""
    from PIL import Image

    if not url.startswith("data:"):
        raise ApiError(
            400,
            f"image_url must be a data: URI (the server fetches no URLs), got {url[:40]!r}...",
            param="messages",
        )
    match = _DATA_URI.match(url)
    if match is None:
        raise ApiError(
            400,
            "bad data URI: expected data:image/png;base64,... or "
            f"data:image/jpeg;base64,..., got {url[:40]!r}...",
            param="messages",
        )
    try:
        raw = base64.b64decode(match.group(2), validate=True)
    except (binascii.Error, ValueError) as err:
        raise ApiError(
            400, f"bad data URI: the base64 payload does not decode ({err})", param="messages"
        ) from None
    try:
        with Image.open(io.BytesIO(raw), formats=["PNG", "JPEG"]) as image:
            w, h = image.size
            if w * h > max_pixels:
                raise ApiError(
                    413,
                    f"image of {w}x{h} pixels is larger than the server's limit "
                    f"of {max_pixels} pixels; send a smaller crop",
                )
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except ApiError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ApiError(
            400, f"bad data URI: not a readable PNG or JPEG image ({err})", param="messages"
        ) from None


# --- responses --------------------------------------------------------------------------------------
def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def geolens_extra(answer: Answer) -> dict:
    """The ``geolens`` field: boxes in pixels of the sent image, evidence, label, timing."""
    t = answer.timing
    return {
        "task": answer.task.value,
        "boxes_px": [_box(b) for b in answer.boxes_px],
        "image_size": list(answer.image_size_px),
        "label": answer.label,
        "evidence": [
            {"text": e.text, "score": e.score, "source": e.source, "level": e.level}
            for e in answer.evidence
        ],
        "timing": {
            "retrieval_s": t.retrieval_s,
            "first_token_s": t.first_token_s,
            "decode_s": t.decode_s,
            "total_s": t.total_s,
            "new_tokens": t.new_tokens,
        },
    }


def _box(box: BoxPx) -> dict:
    return {
        "x0": box.x0,
        "y0": box.y0,
        "x1": box.x1,
        "y1": box.y1,
        "label": box.label,
        "score": box.score,
        "angle_deg": box.angle_deg,
    }


def answer_response(cid: str, model: str, answer: Answer, finish_reason: str) -> dict:
    """A non-streamed ``chat.completion``."""
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
        "usage": None,
        "geolens": geolens_extra(answer),
    }


def chunk(
    cid: str, model: str, delta: dict, finish_reason: str | None = None, extra: dict | None = None
) -> dict:
    """One ``chat.completion.chunk`` of a streamed answer."""
    body = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }
    if extra is not None:
        body["geolens"] = extra
    return body
