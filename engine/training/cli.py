"""``python -m engine.train --stage align|instruct --config CONFIG [--resume]``.

Stage 1 (``align``, paper IV-A3) trains the projector and the prompter on captions; stage 2
(``instruct``) adds LoRA on the LLM and the semantic experts (and, with a ``vision`` learning
rate, the vision tower) on every task. The result is ``<output_dir>/final/adapter`` (plus
``final/base`` when base weights trained), loadable with ``EngineConfig(adapter_path=...)``.
Ctrl-C stops the run; ``--resume`` continues from the newest checkpoint at its exact step.
"""

from __future__ import annotations

import argparse
import logging
import sys

from engine.errors import EngineError

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine.train",
        description="Train the GeoLens adapter (stage 1 align, stage 2 instruct).",
    )
    parser.add_argument("--stage", required=True, choices=("align", "instruct"))
    parser.add_argument("--config", required=True, help="training config (.json, .yaml, .yml)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    parser.add_argument("--max-steps", type=int, default=None, help="override optim.max_steps")
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    import dataclasses

    from engine.training.config import load_train_config
    from engine.training.trainer import Trainer

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_train_config(args.config, stage=args.stage)
        if args.max_steps is not None:
            optim = dataclasses.replace(config.optim, max_steps=args.max_steps)
            config = dataclasses.replace(config, optim=optim)
        trainer = Trainer(config)
        result = trainer.run(resume=args.resume)
    except EngineError as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(
            "interrupted; run the same command with --resume to continue from the last "
            f"checkpoint in {config.output_dir / 'checkpoints'}\n")
        return 130
    sys.stdout.write(f"trained {result.steps} steps; adapter: {result.final_dir / 'adapter'}\n")
    if result.val_loss is not None:
        sys.stdout.write(f"validation loss: {result.val_loss:.4f}\n")
    return 0
