"""The training loop (paper IV-A3): next-token loss on answer tokens, AdamW per parameter group.

:class:`Trainer` builds the model of a :class:`~engine.training.config.TrainConfig` (a base with
fresh adapter modules, optionally initialised from an earlier adapter), freezes all but the
configured groups, and runs optimizer steps of ``batch_size x grad_accum`` samples in the
deterministic :class:`~engine.training.data.SampleOrder`:

* learning rate: linear warmup, then cosine decay to ``min_lr_ratio`` (one multiplier for every
  group, each with its own base rate);
* precision: bf16 autocast on CUDA (``optim.precision``), fp32 on CPU; with ``quant.mode``
  ``auto``/``nf4`` the LLM is 4-bit NF4 and LoRA trains on top (QLoRA);
* every ``log_every`` steps a row in ``<output_dir>/log.jsonl`` (loss, learning rates, gradient
  norm, samples/s); every ``eval_every`` steps the validation loss; every ``save_every`` steps an
  atomic checkpoint (:mod:`engine.training.checkpoint`); at the end ``<output_dir>/final``.

``run(resume=True)`` restores the newest complete checkpoint and continues at its exact step
with the same data order and RNG state, so the loss curve continues as if never interrupted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.atomic import atomic_directory
from engine.errors import ConfigError
from engine.model.build import new_trainable_vlm
from engine.model.loading import resolve_placement
from engine.prompts import load_prompt_set
from engine.training.checkpoint import (
    BASE_GROUPS,
    latest_checkpoint,
    load_checkpoint,
    load_partial_adapter,
    prune_checkpoints,
    save_base,
    save_checkpoint,
)
from engine.training.config import TrainConfig
from engine.training.data import BatchMaker, SampleOrder, load_samples, sample_weight
from engine.training.losses import answer_token_losses, reduce_answer_losses

__all__ = ["TrainResult", "Trainer", "lr_multiplier"]

logger = logging.getLogger(__name__)

LOG_FILE = "log.jsonl"
StepCallback = Callable[[int, float], None]


def lr_multiplier(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warmup over ``warmup`` steps, then cosine from 1 to ``min_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced."""

    output_dir: Path
    final_dir: Path
    steps: int
    losses: tuple[float, ...]  # training loss of each step run in this process
    val_loss: float | None


class Trainer:
    """One training run; see the module docstring."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.out = config.output_dir
        _seed_everything(config.optim.seed)
        self.placement = resolve_placement(config.model.engine.device, config.model.engine.quant)
        self.groups = tuple(config.group_lr)
        self.vlm = self._build_model()
        self.prompts = load_prompt_set(config.model.engine.backbone, "adapter")
        self.train_samples = load_samples(config.data.train, config.tasks)
        if not self.train_samples:
            raise ConfigError(f"no training samples for tasks {config.tasks} in data.train")
        self.val_samples = load_samples(config.data.val, config.tasks)[: config.data.val_limit]
        retrieved = self._retrieve()
        self.make_batch = BatchMaker(self.vlm, self.prompts, retrieved)
        weights = tuple(sample_weight(s, config.data.weights) for s in self.train_samples)
        optim = config.optim
        self.order = SampleOrder(weights, optim.seed, optim.batch_size * optim.grad_accum)
        self.total_steps = optim.max_steps or self.order.total_steps(optim.epochs)
        self.optimizer = self._optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda step: lr_multiplier(
                step, self.total_steps, optim.warmup_steps, optim.min_lr_ratio
            ),
        )

    # --- setup -----------------------------------------------------------------------------
    def _build_model(self):
        cfg, model = self.config, self.config.model
        if self.placement.quantize and "llm" in self.groups:
            raise ConfigError(
                "optim.lr trains 'llm', but the LLM is loaded in 4-bit (quant.mode auto on CUDA "
                "or nf4); set model.quant.mode: none to train it, or train 'lora' instead"
            )
        vlm = new_trainable_vlm(model.engine, self.placement)
        if model.init_adapter is not None:
            loaded = load_partial_adapter(vlm, model.init_adapter)
            logger.info("initialised %d adapter tensors from %s", len(loaded), model.init_adapter)
        vlm.set_trainable(self.groups)
        empty = [
            g for g, params in vlm.parameter_groups().items() if g in self.groups and not params
        ]
        if empty:
            raise ConfigError(f"optim.lr trains {empty}, but this model has no such parameters")
        if model.gradient_checkpointing:
            vlm.backbone.decoder.gradient_checkpointing_enable()
        if cfg.stage == "align" and "lora" in self.groups:
            logger.warning("stage 'align' normally trains projector + prompter only")
        return vlm

    def _retrieve(self) -> dict[str, tuple[str, ...]] | None:
        section = self.config.retrieval
        if section is None:
            return None
        from engine.training.retrieval import retrieve_for_samples

        return retrieve_for_samples(self.train_samples + self.val_samples, section)

    def _optimizer(self) -> torch.optim.Optimizer:
        """AdamW with one decay and one no-decay (biases, norms, 1-D) group per trained group."""
        by_group = self.vlm.parameter_groups()
        optim, param_groups = self.config.optim, []
        for group, lr in self.config.group_lr.items():
            params = [p for p in by_group[group] if p.requires_grad]
            decay = [p for p in params if p.ndim >= 2]
            no_decay = [p for p in params if p.ndim < 2]
            for chosen, wd in ((decay, optim.weight_decay), (no_decay, 0.0)):
                if chosen:
                    param_groups.append(
                        {"params": chosen, "lr": lr, "weight_decay": wd, "name": group}
                    )
        return torch.optim.AdamW(param_groups, betas=optim.betas)

    # --- the loop ---------------------------------------------------------------------------
    def run(self, resume: bool = False, on_step: StepCallback | None = None) -> TrainResult:
        """Train to ``total_steps`` (from the newest checkpoint when ``resume``)."""
        from tqdm import tqdm

        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "train_config.json").write_text(
            json.dumps(self.config.to_json(), indent=2), encoding="utf-8"
        )
        step = self._resume() if resume else 0
        if not resume:
            (self.out / LOG_FILE).unlink(missing_ok=True)
        losses: list[float] = []
        val_loss = None
        optim = self.config.optim
        self.vlm.train()
        bar = tqdm(total=self.total_steps, initial=step, desc=f"train {self.config.stage}")
        started, last = time.perf_counter(), step
        while step < self.total_steps:
            loss, grad_norm = self._step(step)
            step += 1
            losses.append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if step % optim.log_every == 0 or step == self.total_steps:
                rate = (step - last) * self.order.global_batch / (time.perf_counter() - started)
                self._log(
                    {
                        "step": step,
                        "loss": loss,
                        "grad_norm": grad_norm,
                        "lr": self._lrs(),
                        "samples_per_s": round(rate, 2),
                    }
                )
                started, last = time.perf_counter(), step
            if optim.eval_every and step % optim.eval_every == 0 and self.val_samples:
                val_loss = self.evaluate_loss()
                self._log({"step": step, "val_loss": val_loss})
            if optim.save_every and step % optim.save_every == 0 and step < self.total_steps:
                self.save(step, loss)
            if on_step is not None:
                on_step(step, loss)
        bar.close()
        if self.val_samples:
            val_loss = self.evaluate_loss()
            self._log({"step": step, "val_loss": val_loss, "final": True})
        final = self.save_final(step)
        return TrainResult(self.out, final, step, tuple(losses), val_loss)

    def _step(self, step: int) -> tuple[float, float]:
        """One optimizer step over ``grad_accum`` micro-batches; returns (loss, grad norm)."""
        optim = self.config.optim
        indices = self.order.step_indices(step)
        total = 0.0
        for start in range(0, len(indices), optim.batch_size):
            batch = self.make_batch(
                [self.train_samples[i] for i in indices[start : start + optim.batch_size]]
            )
            with self._autocast():
                loss = self._loss(batch)
            (loss / optim.grad_accum).backward()
            total += float(loss.detach()) / optim.grad_accum
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        norm = torch.nn.utils.clip_grad_norm_(params, optim.max_grad_norm or float("inf"))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total, float(norm)

    def evaluate_loss(self) -> float:
        """Mean answer-token loss over the validation samples (no gradients)."""
        self.vlm.eval()
        size, total, count = self.config.optim.batch_size, 0.0, 0
        with torch.no_grad():
            for start in range(0, len(self.val_samples), size):
                chunk = self.val_samples[start : start + size]
                with self._autocast():
                    total += float(self._loss(self.make_batch(chunk))) * len(chunk)
                count += len(chunk)
        self.vlm.train()
        return total / max(1, count)

    def _loss(self, batch) -> torch.Tensor:
        """Next-token loss on the answer tokens, reduced per ``optim.loss``."""
        if self.config.optim.loss == "token":
            return self.vlm(batch).loss
        logits = self.vlm(dataclasses.replace(batch, labels=None)).logits  # (B, T, V)
        losses, mask = answer_token_losses(logits, batch.labels.to(logits.device))
        return reduce_answer_losses(losses, mask, self.config.optim.loss)

    def _autocast(self):
        precision, device = self.config.optim.precision, self.placement.device.type
        if precision == "bf16" or (precision == "auto" and device == "cuda"):
            return torch.autocast(device_type=device, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # --- persistence -------------------------------------------------------------------------
    @property
    def checkpoints_dir(self) -> Path:
        return self.out / "checkpoints"

    def save(self, step: int, loss: float) -> Path:
        path = save_checkpoint(
            self.checkpoints_dir / f"step-{step:07d}",
            self.vlm,
            self.optimizer,
            self.scheduler,
            step,
            self.groups,
            {"loss": loss, "stage": self.config.stage},
        )
        prune_checkpoints(self.checkpoints_dir, self.config.optim.keep_checkpoints)
        logger.info("saved checkpoint %s", path)
        return path

    def save_final(self, step: int) -> Path:
        """``<output_dir>/final``: ``adapter/`` and, when base weights trained, ``base/``."""
        from engine.model.adapter import save_adapter

        final = self.out / "final"
        with atomic_directory(final) as tmp:
            save_adapter(self.vlm, tmp / "adapter")
            if any(g in BASE_GROUPS for g in self.groups):
                save_base(self.vlm, tmp / "base")
            (tmp / "meta.json").write_text(
                json.dumps(
                    {"step": step, "groups": list(self.groups), "stage": self.config.stage},
                    indent=2,
                ),
                encoding="utf-8",
            )
        return final

    def _resume(self) -> int:
        path = latest_checkpoint(self.checkpoints_dir)
        if path is None:
            logger.warning(
                "--resume: no checkpoint in %s; starting at step 0", self.checkpoints_dir
            )
            (self.out / LOG_FILE).unlink(missing_ok=True)
            return 0
        step = load_checkpoint(path, self.vlm, self.optimizer, self.scheduler)
        _truncate_log(self.out / LOG_FILE, step)
        logger.info("resumed from %s at step %d", path, step)
        return step

    def _lrs(self) -> dict[str, float]:
        return {g["name"]: g["lr"] for g in self.optimizer.param_groups}

    def _log(self, row: dict) -> None:
        with (self.out / LOG_FILE).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


def _truncate_log(path: Path, step: int) -> None:
    """Keep only log rows up to ``step`` (rows after the checkpoint are redone)."""
    if not path.is_file():
        return
    rows = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = [line for line in rows if json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
