"""``python -m engine.retrieval``: build, query and inspect knowledge bases from the shell.

Examples::

    # a real RS CLIP (RemoteCLIP / GeoRSCLIP checkpoints are open_clip ViT-B-32 state dicts)
    python -m engine.retrieval build --corpus captions/rsicd notes.txt \\
        --model ViT-B-32 --checkpoint RemoteCLIP-ViT-B-32.pt --out workspace/kb
    python -m engine.retrieval query --kb workspace/kb --image crop.png -k 5
    python -m engine.retrieval query --kb workspace/kb --text "a harbour with boats"
    python -m engine.retrieval add --kb workspace/kb --corpus more_notes.jsonl
    python -m engine.retrieval info --kb workspace/kb

    # development without weights: an explicit random-init model (loud warning, meaningless results)
    python -m engine.retrieval build --corpus notes.txt --model-config tiny.json \\
        --checkpoint none --out kb

Model options: ``--model ARCH`` (open_clip architecture), ``--model-config JSON`` (an open_clip
model config file) or ``--embedder DIR`` (saved with ``ClipEmbedder.save``). ``--checkpoint`` is
required with the first two: a weights file, or the word ``none`` for a seeded random init.
``query`` and ``add`` reuse the model recorded in the KB's manifest unless one is given.
Errors print one ``error:`` line and exit 2 (1 for an unexpected failure); Ctrl-C exits 130 and
leaves no partial knowledge base.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from engine.errors import ConfigError, EngineError, InputError
from engine.retrieval.corpus import CORPUS_FORMATS, read_corpus
from engine.retrieval.embedder import ClipEmbedder
from engine.retrieval.index import INDEX_KINDS
from engine.retrieval.knowledge_base import KnowledgeBase
from engine.retrieval.manifest import read_manifest
from engine.retrieval.retriever import Retriever

__all__ = ["main"]

log = logging.getLogger("engine.retrieval")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s"
    )
    try:
        return args.run(args)
    except EngineError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: nothing was written\n")
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine.retrieval", description=__doc__.split("\n")[0]
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="embed a corpus into a new knowledge base")
    build.add_argument(
        "--corpus",
        nargs="+",
        required=True,
        type=Path,
        metavar="PATH",
        help="text / JSONL files or caption folders",
    )
    build.add_argument(
        "--format",
        default="auto",
        choices=["auto", *CORPUS_FORMATS],
        help="corpus format (default: detect per file)",
    )
    build.add_argument("--out", required=True, type=Path, help="knowledge base directory to create")
    build.add_argument(
        "--index", default="auto", choices=INDEX_KINDS, help="faiss index kind (default: by size)"
    )
    build.add_argument("--batch-size", type=int, default=256, help="texts per forward pass")
    build.add_argument(
        "--overwrite", action="store_true", help="replace an existing knowledge base at --out"
    )
    _model_options(build)
    build.set_defaults(run=_run_build)

    add = commands.add_parser(
        "add", help="add new (non-duplicate) descriptions to a knowledge base"
    )
    add.add_argument("--kb", required=True, type=Path, help="knowledge base directory")
    add.add_argument("--corpus", nargs="+", required=True, type=Path, metavar="PATH")
    add.add_argument("--format", default="auto", choices=["auto", *CORPUS_FORMATS])
    add.add_argument("--batch-size", type=int, default=256)
    _model_options(add)
    add.set_defaults(run=_run_add)

    query = commands.add_parser("query", help="print the top-k descriptions for an image or a text")
    query.add_argument("--kb", required=True, type=Path, help="knowledge base directory")
    what = query.add_mutually_exclusive_group(required=True)
    what.add_argument("--image", type=Path, help="image file (any format Pillow reads)")
    what.add_argument("--text", help="text query")
    query.add_argument("-k", type=int, default=5, help="how many descriptions (default 5)")
    _model_options(query)
    query.set_defaults(run=_run_query)

    info = commands.add_parser("info", help="print a knowledge base's manifest")
    info.add_argument("--kb", required=True, type=Path)
    info.set_defaults(run=_run_info)
    return parser


def _model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("embedding model (query: default = the one in the manifest)")
    source = group.add_mutually_exclusive_group()
    source.add_argument("--model", metavar="ARCH", help="open_clip architecture, e.g. ViT-B-32")
    source.add_argument(
        "--model-config", type=Path, metavar="JSON", help="open_clip model config file"
    )
    source.add_argument(
        "--embedder", type=Path, metavar="DIR", help="directory written by ClipEmbedder.save"
    )
    group.add_argument(
        "--checkpoint",
        metavar="PATH|none",
        help="weights file for --model/--model-config, or 'none' (random init)",
    )
    group.add_argument("--device", default="cpu", help="torch device (default cpu)")


def _embedder_from_args(args: argparse.Namespace) -> ClipEmbedder | None:
    if args.embedder is not None:
        if args.checkpoint is not None:
            raise ConfigError(
                "--checkpoint does not go with --embedder (the directory holds the weights)"
            )
        return ClipEmbedder.load(args.embedder, args.device)
    if args.model is None and args.model_config is None:
        if args.checkpoint is not None:
            raise ConfigError("--checkpoint needs --model ARCH or --model-config JSON")
        return None
    if args.checkpoint is None:
        raise ConfigError(
            "give --checkpoint PATH (the weights file) or --checkpoint none for a random-init model"
        )
    checkpoint = None if args.checkpoint.lower() == "none" else Path(args.checkpoint)
    if checkpoint is None:
        sys.stderr.write(
            "WARNING: --checkpoint none: RANDOMLY INITIALISED weights, "
            "retrieved descriptions are meaningless\n")
    if args.model is not None:
        return ClipEmbedder.from_pretrained(args.model, checkpoint, args.device)
    return ClipEmbedder.from_config(
        _read_model_config(args.model_config), checkpoint=checkpoint, device=args.device
    )


def _read_model_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"cannot read model config {path}: {exc}; give an open_clip model config JSON file"
        ) from exc
    if not isinstance(config, dict):
        raise ConfigError(
            f"model config {path} must be a JSON object with embed_dim, vision_cfg, text_cfg"
        )
    return config.get("model_cfg", config)


def _run_build(args: argparse.Namespace) -> int:
    if args.model is None and args.model_config is None and args.embedder is None:
        raise ConfigError(
            "build needs an embedding model: --model ARCH, --model-config JSON or --embedder DIR"
        )
    descriptions = read_corpus(
        args.corpus, args.format
    )  # bad corpus files fail before any model loads
    embedder = _embedder_from_args(args)
    kb = KnowledgeBase.build(
        descriptions,
        embedder,
        args.out,
        index=args.index,
        batch_size=args.batch_size,
        progress=True,
        overwrite=args.overwrite,
    )
    manifest = kb.manifest
    sys.stdout.write(
        f"built {args.out}: {manifest.count} descriptions "
        f"({manifest.duplicates_dropped} duplicates dropped), "
        f"{manifest.dim}-d, model {manifest.embedding_model}, index {manifest.index.describe()}\n")
    return 0


def _run_add(args: argparse.Namespace) -> int:
    descriptions = read_corpus(args.corpus, args.format)
    embedder = _embedder_for_kb(args)
    with KnowledgeBase.load(args.kb, embedder) as kb:
        added = kb.add(descriptions, embedder, batch_size=args.batch_size, progress=True)
        sys.stdout.write(f"added {added} of {len(descriptions)} descriptions to {kb}\n")
    return 0


def _embedder_for_kb(args: argparse.Namespace) -> ClipEmbedder:
    """The embedder given on the command line, else the one the KB's manifest records."""
    embedder = _embedder_from_args(args)
    return embedder or ClipEmbedder.from_spec(read_manifest(args.kb).embedder, args.device)


def _run_query(args: argparse.Namespace) -> int:
    embedder = _embedder_for_kb(args)
    with KnowledgeBase.load(args.kb, embedder) as kb:
        retriever = Retriever(kb, embedder)
        if args.image is not None:
            evidence = retriever.retrieve_for_image(_read_image(args.image), args.k)
        else:
            evidence = retriever.retrieve_for_text(args.text, args.k)
        sys.stdout.write(
            f"{kb}: top {args.k} for "
            f"{'image ' + str(args.image) if args.image else repr(args.text)}\n")
        for rank, item in enumerate(evidence, start=1):
            sys.stdout.write(
                f"{rank:3d}. {item.score:+.4f}  {item.source}  [{item.level or '-'}]  {item.text}\n")
    return 0


def _run_info(args: argparse.Namespace) -> int:
    sys.stdout.write(f"{json.dumps(read_manifest(args.kb).to_json(), indent=2)}\n")
    return 0


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"cannot read image {path}: {exc}; give a PNG/JPEG/TIFF file") from exc
