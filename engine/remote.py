"""A model behind an OpenAI-compatible chat-completions endpoint, answering like :class:`Engine`.

:class:`RemoteEngine` has the engine's ``stream``/``run`` contract (``TextDelta`` pieces, maybe a
``Reset``, one ``Final`` with the :class:`~engine.types.Answer`), so the app uses a vLLM,
llama.cpp, Ollama or LM Studio server, or a team's ``engine.serve``, exactly like the in-process
model. One :class:`RemoteConfig` says where the model is and which box convention
(:data:`engine.boxes.BOX_CONVENTIONS`) its family writes.

Per request: render the family's prompt (``assets/prompts``) -> the crop as a PNG data URI
(for pixel-convention families pre-resized to the exact size the family's processor would pick,
so the server does not resize and boxes map back exactly) -> streamed chat completion -> boxes
parsed in crop pixels. With ``engine.serve`` (its ``/v1/models`` card says ``owned_by:
geolens``) the task goes in the ``geolens`` body field and the server's ``geolens.boxes_px`` are
used as they are. Closing the generator closes the HTTP stream. Every failure is a
:class:`RemoteModelError` whose message names the URL and what to do.

Retrieval: with ``RemoteConfig.retrieval`` (the app's ``--kb``) or an injected retriever, the
top-k descriptions of the crop are retrieved here, on the client, written into the family's
prompt (its ``$context`` block, as the in-process zero-shot engine does) and returned as
``Answer.evidence``. ``engine.serve`` retrieves with its own knowledge base instead (its evidence
comes back in the ``geolens`` field), so the client does not retrieve for it.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.boxes import BoxConvention, CoordSpace, box_convention
from engine.config import RetrievalConfig
from engine.errors import ConfigError, EngineError, MissingDependencyError
from engine.types import Answer, BoxPx, Evidence, Task, Timing

__all__ = [
    "QWEN25VL_MAX_PIXELS",
    "RemoteConfig",
    "RemoteEngine",
    "RemoteModelError",
    "load_retriever",
    "model_input_size",
]

logger = logging.getLogger(__name__)

# Qwen2.5-VL's processor: 14 px patches merged 2 x 2 -> sizes are multiples of 28.
QWEN25VL_FACTOR = 28
QWEN25VL_MIN_PIXELS = 56 * 56
QWEN25VL_MAX_PIXELS = 1280 * 28 * 28  # at most 1280 visual tokens; within every server's default
# The prompt templates each family is asked with: (prompt file, mode), see engine.prompts.
_PROMPTS = {
    "paper": ("paper", "adapter"),
    "qwen2.5-vl": ("qwen2.5-vl", "zero_shot"),
    "qwen3-vl": ("qwen3-vl", "zero_shot"),  # its own wording: boxes on the 0-1000 grid
}


class RemoteModelError(EngineError, ConnectionError):
    """The remote model could not answer (unreachable, refused, unknown model, bad output)."""


@dataclass(frozen=True)
class RemoteConfig:
    """Where the remote model is and how its family writes boxes.

    ``api_base``: the endpoint including ``/v1`` (``http://127.0.0.1:8000/v1``). ``api_model``:
    the served model name. ``api_key_env``: the environment variable holding the key, read at the
    edge into ``api_key`` (never shown in ``repr``). ``box_format``: a
    :data:`~engine.boxes.BOX_CONVENTIONS` name or alias. ``timeout_s``: the longest wait for a
    connection or for the next piece of a streamed answer (not for the whole answer).
    ``max_retries``: retries, with backoff, after a failed connection, a timeout or a 5xx.
    ``max_pixels``: the pixel budget of the pre-resize for pixel conventions. ``max_tokens``: the
    longest answer (None: the server's default). ``retrieval``: the knowledge base whose
    descriptions go into the prompt (None: no retrieval); loaded by :meth:`RemoteEngine.connect`.
    """

    api_base: str
    api_model: str
    api_key_env: str | None = None
    box_format: str = "qwen2.5-vl"
    timeout_s: float = 120.0
    max_retries: int = 2
    max_pixels: int = QWEN25VL_MAX_PIXELS
    max_tokens: int | None = None  # longest answer (None: the server's default)
    api_key: str | None = field(default=None, repr=False, compare=False)
    retrieval: RetrievalConfig | None = None

    def __post_init__(self) -> None:
        if not self.api_base.startswith(("http://", "https://")):
            raise ConfigError(
                f"--api-base must be an http(s) URL such as http://127.0.0.1:8000/v1, "
                f"got {self.api_base!r}"
            )
        if not self.api_model.strip():
            raise ConfigError("--api-model needs the served model name (GET /v1/models lists them)")
        box_convention(self.box_format)  # ConfigError listing the known names
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ConfigError(
                f"timeout_s must be a positive number of seconds, got {self.timeout_s}"
            )
        if self.max_retries < 0:
            raise ConfigError(f"max_retries must be 0 or more, got {self.max_retries}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.max_pixels < QWEN25VL_MIN_PIXELS:
            raise ConfigError(
                f"max_pixels must be at least {QWEN25VL_MIN_PIXELS}, got {self.max_pixels}"
            )

    @property
    def convention(self) -> BoxConvention:
        return box_convention(self.box_format)


def model_input_size(
    crop_size: tuple[int, int], convention: BoxConvention, max_pixels: int
) -> tuple[int, int]:
    """(width, height) of the image sent for a ``crop_size`` crop: for pixel conventions the size
    the family's processor resizes to (Qwen2.5-VL ``smart_resize``: multiples of 28 within
    min/max pixels), so a server resizing again keeps it; for grid conventions the crop's own."""
    if convention.space is not CoordSpace.MODEL_PX:
        return crop_size
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    w, h = crop_size
    h_new, w_new = smart_resize(h, w, QWEN25VL_FACTOR, QWEN25VL_MIN_PIXELS, max_pixels)
    return int(w_new), int(h_new)


def png_data_uri(image: np.ndarray, size: tuple[int, int]) -> str:
    """RGB uint8 (H, W, 3) -> ``data:image/png;base64,...``, resized to ``size`` (w, h) if needed."""
    from PIL import Image

    pil = Image.fromarray(image)
    if pil.size != tuple(size):
        pil = pil.resize(size, Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class RemoteEngine:
    """A remote model answering like :class:`engine.Engine`; see the module docstring."""

    def __init__(self, config: RemoteConfig, geolens: bool = False, retriever=None) -> None:
        try:
            from openai import OpenAI
        except ImportError as exc:
            raise MissingDependencyError(
                f"the remote backend needs the openai client ({exc}); pip install -r requirements.txt"
            ) from exc

        from engine.prompts import load_prompt_set

        self.config = config
        self.geolens = geolens  # the server is engine.serve: task in the body, boxes in the reply
        self.convention = config.convention
        backbone, mode = _PROMPTS[self.convention.name]
        self.prompts = load_prompt_set(backbone, mode)
        self.model_name = config.api_model
        self.adapter_name = None
        self.endpoint = config.api_base
        # an engine.SemanticRetriever; engine.serve retrieves with its own knowledge base
        self.retriever = None if geolens else retriever
        self.top_k = config.retrieval.top_k if config.retrieval is not None else 3
        if self.retriever is not None and not self.prompts.context_item:
            logger.warning(
                "%s: the %s prompts have no place for retrieved descriptions; they are returned "
                "as evidence only", config.api_base, self.convention.name
            )
        self._client = OpenAI(
            base_url=config.api_base,
            api_key=config.api_key or "unused",
            timeout=config.timeout_s,
            max_retries=config.max_retries,
        )

    @classmethod
    def connect(cls, config: RemoteConfig, retriever=None) -> RemoteEngine:
        """Check that the endpoint serves ``config.api_model`` (else :class:`RemoteModelError`
        listing what it serves) and learn whether it is ``engine.serve``; then load the
        retriever of ``config.retrieval`` (unless ``retriever`` is given) for other servers."""
        probe = cls(config)
        cards = probe._models()
        names = [c.id for c in cards]
        if config.api_model not in names:
            raise RemoteModelError(
                f"{config.api_base} does not serve model {config.api_model!r}; it serves: "
                f"{', '.join(names) or 'nothing'}. Pass one of them with --api-model"
            )
        owner = next(getattr(c, "owned_by", None) for c in cards if c.id == config.api_model)
        geolens = owner == "geolens"
        if geolens and (retriever is not None or config.retrieval is not None):
            logger.warning(
                "%s is engine.serve: it retrieves with its own knowledge base (engine.serve --kb); "
                "the client's knowledge base is not used", config.api_base
            )
        elif retriever is None and config.retrieval is not None:
            retriever = load_retriever(config.retrieval)
        return cls(config, geolens=geolens, retriever=retriever)

    def served_models(self) -> list[str]:
        """The model names the endpoint serves (``GET /v1/models``); errors as every request."""
        return [c.id for c in self._models()]

    # --- public API (as Engine) ------------------------------------------------------------------
    def run(
        self,
        image: np.ndarray,
        task: Task | str,
        question: str | None = None,
        region_px: Sequence[float] | None = None,
        labels: Sequence[str] | None = None,
        *,
        before: np.ndarray | None = None,
    ) -> Answer:
        """Answer one request; see :meth:`stream`."""
        from engine.generation import final_answer

        answer = final_answer(self.stream(image, task, question, region_px, labels, before=before))
        if answer is None:
            raise RemoteModelError(f"{self.endpoint}: the answer stream ended without an answer")
        return answer

    def stream(
        self,
        image: np.ndarray,
        task: Task | str,
        question: str | None = None,
        region_px: Sequence[float] | None = None,
        labels: Sequence[str] | None = None,
        *,
        before: np.ndarray | None = None,
    ):
        """Events as :meth:`engine.Engine.stream`: ``TextDelta``, maybe ``Reset``, one ``Final``.
        Change tasks take ``before=`` (the earlier crop, same shape as ``image``): both images
        are sent, before first, at the same size, and boxes come back in ``image``'s pixels.
        Bad inputs raise :class:`~engine.errors.InputError` before any request is sent."""
        from engine.engine import validate_request

        request = validate_request(image, task, question, region_px, labels, before=before)
        return self._stream(request)

    # --- one request ---------------------------------------------------------------------------
    def _stream(self, request) -> Iterator:
        from engine.generation import Final, Reset, TextDelta
        from engine.parsing import match_label

        h, w = request.image.shape[:2]
        crop_size = (w, h)
        sent_size = (
            crop_size
            if self.geolens
            else model_input_size(crop_size, self.convention, self.config.max_pixels)
        )
        start = time.perf_counter()
        retrieved = self._retrieve(request.image)
        if request.before is not None and self.retriever is not None:  # change: both dates
            seen = {e.text for e in retrieved}
            retrieved += tuple(e for e in self._retrieve(request.before) if e.text not in seen)
        retrieval_s = time.perf_counter() - start if self.retriever is not None else 0.0
        stream = self._open(self._messages(request, crop_size, sent_size, retrieved), request)
        pieces, extra, first = [], None, None
        try:
            for chunk in self._chunks(stream):
                data = getattr(chunk, "model_extra", None) or {}
                if isinstance(data.get("geolens"), dict):
                    if "reset" in data["geolens"]:
                        pieces = []
                        yield Reset(str(data["geolens"]["reset"]))
                        continue
                    extra = data["geolens"] if self.geolens else None  # for the task we sent
                for choice in getattr(chunk, "choices", None) or ():
                    text = getattr(getattr(choice, "delta", None), "content", None)
                    if isinstance(text, str) and text:
                        first = first if first is not None else time.perf_counter()
                        pieces.append(text)
                        yield TextDelta(text)
        finally:
            stream.close()
        end = time.perf_counter()
        first = first if first is not None else end
        text = "".join(pieces)
        timing = Timing(retrieval_s, first - start, end - first, end - start, len(pieces))
        try:
            boxes = self._boxes(request, text, extra, crop_size, sent_size)
            evidence = retrieved or tuple(
                Evidence(e["text"], e["score"], e["source"], e.get("level"))
                for e in (extra or {}).get("evidence") or ()
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RemoteModelError(
                f"the model server at {self.endpoint} sent a malformed 'geolens' field ({exc!r}); "
                "check that client and engine.serve run the same GeoLens version"
            ) from exc
        label = match_label(text, request.labels) if request.task is Task.CLASSIFY else None
        yield Final(
            Answer(
                text=text,
                task=request.task,
                boxes_px=boxes,
                evidence=evidence,
                timing=timing,
                model=self.model_name,
                adapter=None,
                image_size_px=crop_size,
                label=label,
            )
        )

    def _retrieve(self, image: np.ndarray) -> tuple[Evidence, ...]:
        """Top-k descriptions of the crop from the client's knowledge base (() without one)."""
        if self.retriever is None:
            return ()
        return tuple(self.retriever.retrieve_for_image(image, self.top_k))

    def _messages(self, request, crop_size, sent_size, retrieved=()) -> list[dict]:
        image_part = {
            "type": "image_url",
            "image_url": {"url": png_data_uri(request.image, sent_size)},
        }
        before_part = None
        if request.before is not None:  # change tasks: the earlier image first, same size
            before_part = {
                "type": "image_url",
                "image_url": {"url": png_data_uri(request.before, sent_size)},
            }
        if self.geolens:  # engine.serve renders its own prompt
            text = request.question or ""
        else:
            region_text = ""
            if request.region_px is not None:
                region_text = self.convention.encode(request.region_px, crop_size, sent_size)
            text = self.prompts.render(
                request.task,
                request.question,
                request.labels,
                region_text,
                context_texts=tuple(e.text for e in retrieved),
            )
        messages = (
            [{"role": "system", "content": self.prompts.system}] if self.prompts.system else []
        )
        if before_part is None:
            content = [image_part, {"type": "text", "text": text}]
        elif self.geolens:  # engine.serve: before, after, then the question
            content = [before_part, image_part, {"type": "text", "text": text}]
        else:  # the family's labels before each image, as the in-process prompt has them
            label_before, label_after = self.prompts.pair_labels
            content = [
                {"type": "text", "text": label_before},
                before_part,
                {"type": "text", "text": label_after},
                image_part,
                {"type": "text", "text": text},
            ]
        return messages + [{"role": "user", "content": content}]

    def _open(self, messages: list[dict], request):
        extra_body = None
        if self.geolens:
            extra_body = {
                "geolens": {
                    "task": request.task.value,
                    "labels": list(request.labels),
                    "region_px": list(request.region_px) if request.region_px else None,
                }
            }
        try:
            return self._client.chat.completions.create(
                model=self.config.api_model,
                messages=messages,
                stream=True,
                temperature=0.0,
                max_tokens=self.config.max_tokens,
                extra_body=extra_body,
            )
        except Exception as exc:  # every client failure becomes one clear error
            raise self._error(exc) from exc

    def _chunks(self, stream) -> Iterator:
        """The stream's chunks; transport and format failures become :class:`RemoteModelError`."""
        try:
            yield from stream
        except GeneratorExit:
            raise
        except Exception as exc:  # transport, SSE and JSON failures alike
            raise self._error(exc, mid_stream=True) from exc

    def _boxes(
        self, request, text: str, extra: dict | None, crop_size, sent_size
    ) -> tuple[BoxPx, ...]:
        if not request.task.has_boxes:  # ground, change_ground (after-crop pixels)
            return ()
        if extra is not None and extra.get("boxes_px") is not None:
            return tuple(
                BoxPx(
                    b["x0"],
                    b["y0"],
                    b["x1"],
                    b["y1"],
                    label=b.get("label"),
                    score=b.get("score"),
                    angle_deg=b.get("angle_deg"),
                )
                for b in extra["boxes_px"]
            )
        boxes = self.convention.parse(text, crop_size, sent_size, default_label=request.question)
        if not boxes and text.strip():
            logger.warning(
                "%s: no %s boxes in the answer %r", self.endpoint, self.convention.name, text[:200]
            )
        return boxes

    # --- errors --------------------------------------------------------------------------------
    def _models(self) -> list:
        try:
            return list(self._client.models.list())
        except Exception as exc:  # every client failure becomes one clear error
            raise self._error(exc) from exc

    def _served(self) -> str:
        try:
            return ", ".join(c.id for c in self._client.models.list()) or "nothing"
        except Exception:  # noqa: BLE001 - the listing is a hint only
            return "(the list could not be read)"

    def _error(self, exc: BaseException, mid_stream: bool = False) -> RemoteModelError:
        """One clear message naming the URL and the next step for a failure of the client."""
        import httpx
        import openai

        url, cfg = self.endpoint, self.config
        if isinstance(exc, RemoteModelError):
            return exc
        if isinstance(exc, openai.APITimeoutError):
            return RemoteModelError(
                f"the model server at {url} did not answer within {cfg.timeout_s:g} s "
                f"({cfg.max_retries + 1} attempt(s)); it may be overloaded or stuck: try again, "
                "or check the server"
            )
        if isinstance(exc, openai.APIConnectionError) and not mid_stream:
            return RemoteModelError(
                f"cannot reach the model server at {url} (after {cfg.max_retries} retries): "
                "start it, or fix --api-base"
            )
        if isinstance(exc, openai.APIStatusError):
            return RemoteModelError(self._status_message(exc.status_code, _server_message(exc)))
        if isinstance(exc, (openai.APIError, httpx.HTTPError)):
            return RemoteModelError(
                f"the model server at {url} broke off the answer ({type(exc).__name__}: {exc}); "
                "try again, and check the server's log"
            )
        if isinstance(exc, ValueError):
            return RemoteModelError(
                f"the model server at {url} sent output that is not an OpenAI chat-completions "
                f"stream ({exc}); check that --api-base points at an OpenAI-compatible /v1 endpoint"
            )
        return RemoteModelError(f"the model server at {url} failed: {type(exc).__name__}: {exc}")

    def _status_message(self, status: int, said: str) -> str:
        url, cfg = self.endpoint, self.config
        if status in (401, 403):
            var = f"the key in ${cfg.api_key_env}" if cfg.api_key_env else "no API key"
            return (
                f"the model server at {url} refused the request ({status}: {said}); it was sent "
                f"{var}: set the right key with --api-key-env VAR"
            )
        if status == 404:
            return (
                f"the model server at {url} does not know model {cfg.api_model!r} ({said}); it "
                f"serves: {self._served()}. Pass one of them with --api-model"
            )
        if status == 413:
            return (
                f"the model server at {url} refused the image as too large ({said}); draw a smaller "
                "region or lower --max-crop-px"
            )
        if status == 400 and "image" in said.lower():
            return (
                f"the model server at {url} refused the image ({said}); GeoLens sends one image "
                "per request: serve a vision model that accepts it (vLLM: --limit-mm-per-prompt)"
            )
        if status >= 500:
            return (
                f"the model server at {url} failed ({status}: {said}); try again, and check the "
                "server's log"
            )
        return f"the model server at {url} refused the request ({status}: {said})"


def load_retriever(config: RetrievalConfig):
    """The retriever (CLIP + knowledge base, on the CPU) of ``config``, as the engine loads it.

    The shipped demo knowledge base records its build-time embedder path, so for it the demo's
    saved CLIP (``assets/demo/clip``) is used, as ``engine.demo.load_demo_retriever`` does.
    """
    import dataclasses

    from engine.config import QuantConfig
    from engine.engine import _load_retriever
    from engine.model.loading import resolve_placement

    if config.kb_dir is None:
        raise ConfigError("retrieval needs a knowledge base folder (--kb DIR)")
    if config.clip_embedder_dir is None and config.clip_checkpoint is None:
        from engine.demo.manifest import DEMO_MANIFEST, read_demo_manifest

        if DEMO_MANIFEST.is_file():
            demo = read_demo_manifest(DEMO_MANIFEST)
            if demo.kb_dir is not None and Path(config.kb_dir).resolve() == demo.kb_dir.resolve():
                config = dataclasses.replace(config, clip_embedder_dir=demo.embedder_dir)
    return _load_retriever(config, resolve_placement("cpu", QuantConfig(mode="none")))


def _server_message(exc) -> str:
    """The ``error.message`` of an OpenAI error body, else the start of the body."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:300]
        if body.get("message"):
            return str(body["message"])[:300]
    return str(getattr(exc, "message", exc))[:300]
