"""The FastAPI app of ``engine.serve``: routes, API key, body limit, and the one engine worker.

Requests queue on the one model: a single worker thread runs ``Engine.stream`` for one request at
a time, in arrival order (a generation also runs in one thread from start to end, which torch's
thread-local inference mode needs). A streamed answer whose client disconnects stops at the next
token; a non-streamed one runs to its end. With an API key every route needs
``Authorization: Bearer <key>`` (compared in constant time), else 401.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from fastapi import Request

from engine.errors import EngineError, InputError, OutOfMemoryError
from engine.serve.protocol import (
    ApiError,
    answer_response,
    chunk,
    completion_id,
    error_body,
    geolens_extra,
    parse_chat_request,
)

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "RunningServer", "create_app", "start_server"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_BYTES = 20 * 1024 * 1024  # a 1024 px PNG crop is ~3 MB, 4 MB in base64
_DONE = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def create_app(
    engine,
    model_name: str,
    api_key: str | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
):
    """The FastAPI app serving ``engine`` (an :class:`engine.Engine`) as ``model_name``."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from engine.generation import Final, Reset, TextDelta

    app = FastAPI(title="GeoLens engine (OpenAI-compatible)", docs_url=None, redoc_url=None)
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="geolens-engine")
    created = int(time.time())
    key = api_key.encode() if api_key else None
    app.state.worker = worker

    def error(status: int, message: str, code: str | None = None, param: str | None = None):
        return JSONResponse(error_body(status, message, code, param), status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")

    app.add_middleware(_Guard, key=key, max_request_bytes=max_request_bytes)

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [_model_card(model_name, created)]}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str):
        if name != model_name:
            return error(404, _unknown_model(name, model_name), code="model_not_found")
        return _model_card(model_name, created)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        parts, size = [], 0
        async for part in request.stream():  # bounded even without a Content-Length
            size += len(part)
            if size > max_request_bytes:
                return _too_large(max_request_bytes)
            parts.append(part)
        body = b"".join(parts)
        try:
            parsed = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            return error(400, f"the request body is not valid JSON ({err})")
        try:
            chat = parse_chat_request(parsed)
            if chat.model != model_name:
                raise ApiError(
                    404, _unknown_model(chat.model, model_name), "model_not_found", "model"
                )
            _validate(chat)
        except ApiError as exc:
            return error(exc.status, exc.message, exc.code, exc.param)
        cid = completion_id()
        events = _events(engine, chat.engine_args(), worker)
        limit = engine.config.generation.max_new_tokens
        if chat.stream:
            return StreamingResponse(
                _sse(events, cid, model_name, limit),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        try:
            async for event in events:
                if isinstance(event, Final):
                    answer = event.answer
            return answer_response(cid, model_name, answer, _finish(answer, limit))
        except ApiError as exc:
            return error(exc.status, exc.message, exc.code, exc.param)

    async def _sse(events: AsyncIterator, cid: str, model: str, limit: int):
        yield _data(chunk(cid, model, {"role": "assistant", "content": ""}))
        try:
            async for event in events:
                if isinstance(event, TextDelta):
                    yield _data(chunk(cid, model, {"content": event.text}))
                elif isinstance(event, Reset):  # text sent so far is void (protocol docstring)
                    yield _data(chunk(cid, model, {}, extra={"reset": event.reason}))
                elif isinstance(event, Final):
                    yield _data(
                        chunk(
                            cid,
                            model,
                            {},
                            _finish(event.answer, limit),
                            geolens_extra(event.answer),
                        )
                    )
        except ApiError as exc:
            yield _data(error_body(exc.status, exc.message, exc.code, exc.param))
        yield "data: [DONE]\n\n"

    return app


def _too_large(limit: int):
    from fastapi.responses import JSONResponse

    message = (
        f"request body is larger than the server's limit of {limit} bytes; "
        "send a smaller crop (PNG or JPEG)"
    )
    return JSONResponse(error_body(413, message, "payload_too_large"), status_code=413)


class _Guard:
    """ASGI middleware run before every route: the API key, then the declared body size."""

    def __init__(self, app, key: bytes | None, max_request_bytes: int) -> None:
        self.app, self.key, self.max_request_bytes = app, key, max_request_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from fastapi.responses import JSONResponse

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        length = headers.get("content-length", "")
        if self.key is not None and not _authorised(headers.get("authorization"), self.key):
            message = "missing or wrong API key: send 'Authorization: Bearer <key>'"
            response = JSONResponse(error_body(401, message, "invalid_api_key"), status_code=401)
        elif length.isdigit() and int(length) > self.max_request_bytes:
            response = _too_large(self.max_request_bytes)
        else:
            return await self.app(scope, receive, send)
        await response(scope, receive, send)


def _validate(chat) -> None:
    """Check the engine inputs before queueing, so bad requests answer 400 at once."""
    from engine.engine import validate_request

    try:
        validate_request(**chat.engine_args())
    except InputError as exc:
        raise ApiError(400, str(exc)) from None


async def _events(engine, args: dict, worker: ThreadPoolExecutor) -> AsyncIterator:
    """``engine.stream(**args)`` run start to end in the worker thread; events arrive here."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()

    def put(item) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone (server shutting down)
            stop.set()

    def work() -> None:
        if stop.is_set():  # the client left while the request was queued
            return put(_DONE)
        stream = engine.stream(**args)
        try:
            for event in stream:
                put(event)
                if stop.is_set():
                    break
        except Exception as exc:  # noqa: BLE001 - handed to the request, which answers with it
            put(_Failed(exc))
        finally:
            stream.close()
            put(_DONE)

    worker.submit(work)
    try:
        while (item := await queue.get()) is not _DONE:
            if isinstance(item, _Failed):
                raise _api_error(item.error)
            yield item
    finally:
        stop.set()


def _api_error(exc: BaseException) -> ApiError:
    if isinstance(exc, InputError):
        return ApiError(400, str(exc))
    if isinstance(exc, OutOfMemoryError):
        return ApiError(503, str(exc), code="out_of_memory")
    if isinstance(exc, EngineError):
        return ApiError(500, str(exc))
    logger.error("engine failed", exc_info=exc)
    return ApiError(500, f"the engine failed: {type(exc).__name__}: {exc}; see the server log")


def _finish(answer, limit: int) -> str:
    return "length" if answer.timing.new_tokens >= limit else "stop"


def _data(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _model_card(name: str, created: int) -> dict:
    return {"id": name, "object": "model", "created": created, "owned_by": "geolens"}


def _unknown_model(asked: str, served: str) -> str:
    return f"model {asked!r} is not served here; this server serves {served!r} (GET /v1/models)"


def _authorised(header: str | None, key: bytes) -> bool:
    scheme, _, token = (header or "").partition(" ")
    # Compare in constant time even when the scheme is wrong.
    ok = hmac.compare_digest(token.strip().encode(), key)
    return ok and scheme.lower() == "bearer"


# --- running a server ---------------------------------------------------------------------------
@dataclass
class RunningServer:
    """A uvicorn server running in a daemon thread."""

    server: object
    thread: threading.Thread
    url: str

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask uvicorn to exit and wait for its thread."""
        self.server.should_exit = True
        self.thread.join(timeout_s)


def start_server(
    app, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 60.0
) -> RunningServer:
    """Serve ``app`` from a daemon thread; returns once it accepts connections (port 0: any)."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=3)
    )
    thread = threading.Thread(target=server.run, name="geolens-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"engine.serve did not start on {host}:{port}")
        time.sleep(0.05)
    bound_port = server.servers[0].sockets[0].getsockname()[1] if port == 0 else port
    return RunningServer(server=server, thread=thread, url=f"http://{host}:{bound_port}")
