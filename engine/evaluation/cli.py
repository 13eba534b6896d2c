"""``python -m engine.evaluate``: the paper's metrics for a model on a dataset.

Examples::

    python -m engine.evaluate --task ask --data data/rsvqa_lr --format rsvqa \\
        --model /models/qwen2.5-vl-3b --backbone qwen2.5-vl --average-over presence,comp
    python -m engine.evaluate --task ground --data data/test.jsonl --demo --out eval/ground
    python -m engine.evaluate --task change_caption --data Levir-CC-dataset --format levir_cc \
        --option split=test --demo
    python -m engine.evaluate --task change_ground --data pairs/test.jsonl --demo

Writes ``<out>/predictions.jsonl`` (one row per sample, with correctness or IoU) and
``<out>/metrics.json``, and prints the summary table. ``--demo`` uses the shipped demo model
(``assets/demo/demo.json``) with its retriever.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from engine.config import BACKBONE_NAMES
from engine.errors import EngineError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m engine.evaluate", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--task",
        required=True,
        choices=(
            "ask",
            "classify",
            "ground",
            "caption",
            "region",
            "change_caption",
            "change_ground",
            "change_ask",
        ),
    )
    p.add_argument("--data", required=True, help="dataset file or folder")
    p.add_argument("--format", default="jsonl", help="dataset format (engine.data.FORMATS)")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="loader option, e.g. image_root=DIR (repeatable)",
    )
    p.add_argument("--model", help="model directory or name (not with --demo)")
    p.add_argument("--backbone", default="paper", choices=BACKBONE_NAMES)
    p.add_argument("--vision", help="paper backbone: SigLIP directory, if not <model>/vision")
    p.add_argument("--adapter", help="adapter directory written by engine.train")
    p.add_argument("--kb", help="knowledge base directory (engine.retrieval build)")
    p.add_argument("--embedder", help="saved ClipEmbedder directory for --kb")
    p.add_argument("--clip-arch", default="ViT-B-32", help="open_clip architecture for --kb")
    p.add_argument("--clip-checkpoint", help="open_clip checkpoint file for --kb")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--demo", nargs="?", const="default", help="use the demo model (manifest path)")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    p.add_argument("--out", help="folder for predictions.jsonl and metrics.json")
    p.add_argument("--limit", type=int, help="evaluate the first N samples only")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--bertscore-model", help="local HF encoder directory for BERTScore")
    p.add_argument("--count-buckets", action="store_true", help="RSVQA-LR count ranges")
    p.add_argument("--area-buckets", action="store_true", help="RSVQA-HR area ranges")
    p.add_argument("--average-over", help="question types in Avg., e.g. presence,comp")
    return p


def _engine(args):
    from engine import Engine, EngineConfig, GenerationConfig, RetrievalConfig

    generation = GenerationConfig(max_new_tokens=args.max_new_tokens)
    if args.demo:
        from engine.demo import DEMO_MANIFEST, load_demo_engine

        manifest = DEMO_MANIFEST if args.demo == "default" else Path(args.demo)
        return load_demo_engine(manifest, device=args.device, generation=generation)
    if not args.model:
        raise EngineError("pass --model PATH (or --demo for the shipped demo model)")
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
        retrieval=RetrievalConfig(
            kb_dir=args.kb if retriever is None else None,
            clip_arch=args.clip_arch,
            clip_checkpoint=args.clip_checkpoint,
            top_k=args.top_k,
        ),
        generation=generation,
    )
    return Engine.from_config(config, retriever=retriever)


def _loader_options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise EngineError(f"--option needs KEY=VALUE, got {pair!r} (e.g. image_root=images/)")
        options[key] = value
    return options


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    from engine.data import load_dataset
    from engine.evaluation.report import EvalOptions, summarize
    from engine.evaluation.runner import predict, write_predictions
    from engine.types import Task

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        task = Task.parse(args.task)
        options = _loader_options(args.option)
        samples = [s for s in load_dataset(args.format, args.data, **options) if s.task is task]
        samples = samples[: args.limit] if args.limit else samples
        if not samples:
            raise EngineError(f"{args.data!r} ({args.format}) has no {task.value!r} samples")
        engine = _engine(args)
        predictions = predict(engine, samples, args.batch_size, progress=True)
        options = EvalOptions(
            count_buckets=args.count_buckets,
            area_buckets=args.area_buckets,
            average_over=tuple(args.average_over.split(",")) if args.average_over else None,
            bertscore_model=args.bertscore_model,
        )
        report = summarize(task, samples, predictions, options, name=engine.model_name)
    except EngineError as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    if args.out:
        out = Path(args.out)
        write_predictions(
            out / "predictions.jsonl", samples, predictions, report.per_sample or None
        )
        (out / "metrics.json").write_text(json.dumps(report.to_json(), indent=2), encoding="utf-8")
    sys.stdout.write(f"{report.table()}\n")
    if report.note:
        sys.stdout.write(f"{report.note}\n")
    return 0
