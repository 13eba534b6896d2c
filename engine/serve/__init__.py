"""The GeoLens engine over an OpenAI-compatible HTTP API, so one GPU serves many clients.

``python -m engine.serve [engine flags] [--port 8000] [--host 127.0.0.1] [--api-key-env VAR]``
serves ``GET /v1/models`` and ``POST /v1/chat/completions``. Without ``--model`` it serves the
shipped demo model, like ``launch.py``. The server binds 127.0.0.1 unless an API key is set
(``--api-key-env VAR`` names the environment variable holding it); a non-loopback ``--host``
without one is refused.

* :mod:`engine.serve.protocol`: the request conventions (one image as a data URI, the task from a
  slash prefix or the ``geolens`` body field) and the answer's ``geolens`` field with the boxes;
* :mod:`engine.serve.app`: :func:`create_app` (the FastAPI app, no listening: tests use it with
  ``fastapi.testclient.TestClient``) and :func:`start_server` (uvicorn in a thread);
* :mod:`engine.serve.cli`: the flags and :func:`main`.

Example with the official client::

    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    reply = client.chat.completions.create(model="geolens-demo", messages=[{"role": "user",
        "content": [{"type": "text", "text": "/ground building"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}]}])
    reply.choices[0].message.content, reply.model_extra["geolens"]["boxes_px"]
"""

from engine.serve.app import DEFAULT_MAX_REQUEST_BYTES, RunningServer, create_app, start_server
from engine.serve.cli import main

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "RunningServer", "create_app", "main", "start_server"]
