"""``python -m engine.serve``: flags -> engine (the demo model by default) -> uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from engine.config import BACKBONE_NAMES
from engine.errors import EngineError
from engine.net import is_loopback
from engine.serve.app import DEFAULT_MAX_REQUEST_BYTES, create_app

__all__ = ["api_key_from", "build_parser", "is_loopback", "load_engine", "main"]


# --- command line -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``python -m engine.serve`` flags."""
    p = argparse.ArgumentParser(
        prog="python -m engine.serve",
        description="Serve the GeoLens engine over an OpenAI-compatible API "
        "(GET /v1/models, POST /v1/chat/completions). Without --model: the shipped demo model.",
    )
    p.add_argument("--model", help="model directory or name (default: the shipped demo model)")
    p.add_argument("--backbone", default="paper", choices=BACKBONE_NAMES, help="model family")
    p.add_argument("--vision", help="paper backbone: SigLIP directory, if not <model>/vision")
    p.add_argument("--adapter", help="adapter directory written by engine.train")
    p.add_argument("--kb", help="knowledge base directory (engine.retrieval build)")
    p.add_argument("--embedder", help="saved ClipEmbedder directory for --kb")
    p.add_argument("--top-k", type=int, default=3, help="retrieved descriptions per request")
    p.add_argument("--demo", metavar="MANIFEST", help="a demo.json other than the shipped one")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    p.add_argument("--max-new-tokens", type=int, help="longest answer (default: the model's)")
    p.add_argument(
        "--served-model-name",
        help="the model id clients send (default: geolens-demo for the demo model, else geolens)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="bind address (default: 127.0.0.1; another address needs --api-key-env)",
    )
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="environment variable holding the API key "
        "clients must send as 'Authorization: Bearer <key>'",
    )
    p.add_argument(
        "--max-request-mb",
        type=float,
        default=DEFAULT_MAX_REQUEST_BYTES / 2**20,
        help="largest request body in MiB (default: 20)",
    )
    return p


def api_key_from(args: argparse.Namespace, environ) -> str | None:
    """The API key named by ``--api-key-env``; refuses a non-loopback host without one."""
    key = None
    if args.api_key_env:
        key = (environ.get(args.api_key_env) or "").strip()
        if not key:
            raise EngineError(
                f"--api-key-env {args.api_key_env}: that environment variable is "
                "unset or empty; export it with the key clients will send"
            )
    if key is None and not is_loopback(args.host):
        raise EngineError(
            f"refusing to serve on {args.host!r} without an API key: anyone on the "
            "network could use the model; set one with --api-key-env VAR, or use "
            "--host 127.0.0.1"
        )
    return key


def load_engine(args: argparse.Namespace):
    """``(engine, served model name)`` for the flags; the demo model without ``--model``."""
    from engine.config import EngineConfig, GenerationConfig, RetrievalConfig
    from engine.engine import Engine

    generation = GenerationConfig(args.max_new_tokens) if args.max_new_tokens else None
    if args.model is None:
        from engine.demo import DEMO_MANIFEST, load_demo_engine

        manifest = Path(args.demo) if args.demo else DEMO_MANIFEST
        engine = load_demo_engine(manifest, device=args.device, generation=generation)
        return engine, args.served_model_name or "geolens-demo"
    retriever = None
    if args.kb and args.embedder:
        from engine.retrieval import ClipEmbedder, KnowledgeBase, Retriever

        embedder = ClipEmbedder.load(args.embedder)
        retriever = Retriever(KnowledgeBase.load(Path(args.kb), embedder), embedder)
    config = EngineConfig(
        backbone=args.backbone,
        model_path=args.model,
        vision_path=args.vision,
        adapter_path=args.adapter,
        device=args.device,
        retrieval=RetrievalConfig(kb_dir=args.kb if retriever is None else None, top_k=args.top_k),
        generation=generation or GenerationConfig(),
    )
    return Engine.from_config(config, retriever=retriever), args.served_model_name or "geolens"


def main(argv: Sequence[str] | None = None, environ=os.environ) -> int:
    """Serve until interrupted; returns the exit status (2 for a configuration error)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = build_parser().parse_args(argv)
    try:
        api_key = api_key_from(args, environ)
        engine, name = load_engine(args)
    except EngineError as exc:
        sys.stderr.write(f"engine.serve: {exc}\n")
        return 2
    import uvicorn

    app = create_app(engine, name, api_key, int(args.max_request_mb * 2**20))
    sys.stdout.write(
        f"engine.serve: {name} ({engine.model_name}) at http://{args.host}:{args.port}/v1 "
        f"({'API key required' if api_key else 'no API key'}; Ctrl+C to stop)\n")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=3)
    return 0
