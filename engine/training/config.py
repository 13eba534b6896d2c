"""Typed training configuration, read once from a JSON or YAML file (``engine.train --config``).

Layout of a config file (every section optional except ``output_dir``, ``model`` and ``data``)::

    output_dir: runs/instruct
    model:                       # what engine.EngineConfig takes, plus where to start from
      backbone: paper
      model_path: /models/paper  # llm/ + vision/ (or model_path + vision_path)
      init_adapter: runs/align/final/adapter   # e.g. the stage-1 result (optional)
      prompter: {num_tokens: 144}
      experts: {rank: 64}
      lora: {rank: 64, alpha: 128, dropout: 0.05}   # null: no LoRA
      quant: {mode: auto}        # auto = 4-bit NF4 base on CUDA (QLoRA), unquantized on CPU
    data:
      train: [{path: data/train.jsonl, format: jsonl}]
      val: [{path: data/val.jsonl}]
      tasks: null                # null = stage default (align: caption only)
      weights: {ground: 3.0}     # oversampling per question type or task name
    retrieval:                   # optional: retrieved descriptions for the prompter
      kb_dir: kb/
      embedder_dir: clip/        # a ClipEmbedder.save directory (or clip_arch + clip_checkpoint)
      top_k: 3
    optim:
      lr: {prompter: 2.0e-4, projector: 2.0e-4, experts: 2.0e-4, lora: 2.0e-4}
      batch_size: 4
      grad_accum: 8
      max_steps: 2000            # or epochs: 1
      warmup_steps: 50

Learning rates: the seed paper's exact values were lost in its text; the defaults are the usual
ones for this recipe (LLaVA-style projector alignment at 1e-3, LoRA instruction tuning at 2e-4,
vision tower at a tenth of that). The groups named in ``optim.lr`` are the ones trained; the
stage picks a default set (:data:`STAGE_DEFAULT_LR`). Unknown keys are errors that list the
known ones; paths are checked when the run starts.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import EngineConfig, _jsonable, build_config
from engine.errors import ConfigError
from engine.types import Task

__all__ = [
    "PRECISIONS",
    "STAGES",
    "STAGE_DEFAULT_LR",
    "DataConfig",
    "DataSource",
    "MODEL_KEYS",
    "ModelSection",
    "OptimConfig",
    "RetrievalSection",
    "TrainConfig",
    "load_train_config",
]

STAGES = ("align", "instruct")
PRECISIONS = ("auto", "bf16", "fp32")
LOSS_REDUCTIONS = ("token", "sample")
TRAINABLE_GROUPS = ("prompter", "projector", "experts", "lora", "vision", "llm")
STAGE_DEFAULT_LR = {
    "align": {"prompter": 1e-3, "projector": 1e-3},
    "instruct": {"prompter": 2e-4, "projector": 2e-4, "experts": 2e-4, "lora": 2e-4},
}
STAGE_DEFAULT_TASKS = {"align": ("caption",), "instruct": None}


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True)
class DataSource:
    """One dataset: a path and its format (``engine.data.FORMATS``); ``options`` go to the
    loader; ``limit`` keeps the first N samples."""

    path: Path
    format: str = "jsonl"
    options: dict = field(default_factory=dict)
    limit: int | None = None

    def __post_init__(self) -> None:
        from engine.data.formats import FORMATS

        object.__setattr__(self, "path", Path(self.path))
        _need(
            self.format in FORMATS,
            f"data format {self.format!r} is unknown; use one of {', '.join(sorted(FORMATS))}",
        )
        _need(self.limit is None or self.limit > 0, f"data limit must be > 0, got {self.limit}")


@dataclass(frozen=True)
class DataConfig:
    """Training/validation data. ``tasks``: task names to keep (``None``: the stage default).
    ``weights``: sampling weight per question type or task name (default 1; 0 drops them)."""

    train: tuple[DataSource, ...]
    val: tuple[DataSource, ...] = ()
    tasks: tuple[str, ...] | None = None
    weights: dict = field(default_factory=dict)
    val_limit: int = 256

    def __post_init__(self) -> None:
        for name in ("train", "val"):
            sources = tuple(
                s if isinstance(s, DataSource) else build_config(DataSource, s, f"data.{name}[{i}]")
                for i, s in enumerate(getattr(self, name) or ())
            )
            object.__setattr__(self, name, sources)
        _need(bool(self.train), "data.train must list at least one dataset")
        if self.tasks is not None:
            object.__setattr__(self, "tasks", tuple(self.tasks))
            for task in self.tasks:
                Task.parse(task)
        for key, weight in self.weights.items():
            _need(
                isinstance(weight, (int, float)) and weight >= 0,
                f"data.weights[{key!r}] must be a number >= 0, got {weight!r}",
            )
        _need(self.val_limit > 0, f"data.val_limit must be > 0, got {self.val_limit}")


# the EngineConfig fields a model section sets (adapter_path: use init_adapter; retrieval: the
# run's own retrieval section; generation: training does not generate)
MODEL_KEYS = tuple(
    f.name
    for f in dataclasses.fields(EngineConfig)
    if f.name not in ("adapter_path", "retrieval", "generation")
)
TRAINING_MODEL_KEYS = ("init_adapter", "gradient_checkpointing")


@dataclass(frozen=True)
class ModelSection:
    """The model to train: ``engine``, the :class:`engine.config.EngineConfig` of the base and of
    the new adapter modules (its ``lora`` ``None``: no LoRA, e.g. when the whole LLM trains),
    plus ``init_adapter`` (an adapter directory whose weights initialise the new modules, e.g.
    stage 1's result) and ``gradient_checkpointing``. In a file the section is flat: the keys of
    :data:`MODEL_KEYS` and :data:`TRAINING_MODEL_KEYS` (``backbone`` defaults to ``paper``)."""

    engine: EngineConfig = field(default_factory=lambda: EngineConfig(backbone="paper"))
    init_adapter: Path | None = None
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        _need(
            isinstance(self.engine, EngineConfig),
            f"model.engine must be an EngineConfig, got {type(self.engine).__name__}",
        )
        _need(
            self.engine.adapter_path is None,
            "model: a training run starts from init_adapter, not adapter_path",
        )
        if self.init_adapter is not None:
            object.__setattr__(self, "init_adapter", Path(self.init_adapter))

    @classmethod
    def from_dict(cls, data: Any, where: str = "model") -> ModelSection:
        """Build from the flat mapping of a config file (see the class docstring)."""
        _need(isinstance(data, dict), f"{where} must be a mapping, got {type(data).__name__}")
        known = (*MODEL_KEYS, *TRAINING_MODEL_KEYS)
        unknown = sorted(set(data) - set(known))
        _need(not unknown, f"unknown key(s) {unknown} in {where}; known keys: {sorted(known)}")
        extras = {k: data[k] for k in TRAINING_MODEL_KEYS if k in data}
        engine = {"backbone": "paper", **{k: v for k, v in data.items() if k in MODEL_KEYS}}
        return cls(EngineConfig.from_dict(engine, where), **extras)

    def to_json(self) -> dict:
        """The flat, JSON-ready mapping :meth:`from_dict` reads."""
        engine = self.engine.to_dict()
        return {
            **{k: engine[k] for k in MODEL_KEYS},
            "init_adapter": str(self.init_adapter) if self.init_adapter is not None else None,
            "gradient_checkpointing": self.gradient_checkpointing,
        }


@dataclass(frozen=True)
class RetrievalSection:
    """Retrieved descriptions for the prompter during training (paper III-A1).

    The embedder is a saved :class:`engine.retrieval.ClipEmbedder` directory (``embedder_dir``)
    or an open_clip architecture + checkpoint. ``exclude_same_source`` drops descriptions whose
    source is the training image's own source (e.g. ``synthetic:<scene seed>``), so the model
    never learns to copy a caption of its own image, which it will not find at test time.
    """

    kb_dir: Path
    embedder_dir: Path | None = None
    clip_arch: str = "ViT-B-32"
    clip_checkpoint: Path | None = None
    top_k: int = 3
    exclude_same_source: bool = True

    def __post_init__(self) -> None:
        for name in ("kb_dir", "embedder_dir", "clip_checkpoint"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        _need(self.top_k > 0, f"retrieval.top_k must be > 0, got {self.top_k}")


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and schedule. ``lr``: learning rate per trained group (``None``: the stage
    default); AdamW; linear warmup then cosine decay to ``min_lr_ratio`` x lr. ``max_steps``
    (optimizer steps) wins over ``epochs``. ``precision`` ``auto``: bf16 autocast on CUDA, fp32
    on CPU. ``loss``: ``token`` averages the next-token loss over all answer tokens of a batch
    (the usual recipe, long answers weigh more); ``sample`` averages per answer first, so a
    one-word answer ("yes") weighs as much as a 20-token box."""

    lr: dict | None = None
    batch_size: int = 4
    grad_accum: int = 1
    max_steps: int | None = None
    epochs: float = 1.0
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float | None = 1.0
    precision: str = "auto"
    loss: str = "token"
    seed: int = 0
    log_every: int = 10
    eval_every: int | None = None
    save_every: int | None = None
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        if self.lr is not None:
            unknown = sorted(set(self.lr) - set(TRAINABLE_GROUPS))
            _need(
                not unknown,
                f"optim.lr names unknown parameter groups {unknown}; use {TRAINABLE_GROUPS}",
            )
            for group, value in self.lr.items():
                _need(
                    isinstance(value, (int, float)) and value > 0,
                    f"optim.lr[{group!r}] must be > 0, got {value!r}",
                )
        for name in ("batch_size", "grad_accum", "log_every", "keep_checkpoints"):
            value = getattr(self, name)
            _need(isinstance(value, int) and value > 0, f"optim.{name} must be > 0, got {value!r}")
        for name in ("max_steps", "eval_every", "save_every"):
            value = getattr(self, name)
            _need(
                value is None or (isinstance(value, int) and value > 0),
                f"optim.{name} must be a positive integer or null, got {value!r}",
            )
        _need(self.epochs > 0, f"optim.epochs must be > 0, got {self.epochs}")
        _need(self.warmup_steps >= 0, f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        _need(
            0 <= self.min_lr_ratio <= 1,
            f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}",
        )
        _need(self.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        _need(
            self.precision in PRECISIONS,
            f"optim.precision={self.precision!r}; use one of {', '.join(PRECISIONS)}",
        )
        _need(
            self.loss in LOSS_REDUCTIONS,
            f"optim.loss={self.loss!r}; use one of {', '.join(LOSS_REDUCTIONS)}",
        )
        object.__setattr__(self, "betas", tuple(self.betas))

    def lr_for(self, stage: str) -> dict[str, float]:
        """The learning rate of each trained group for ``stage``."""
        return dict(self.lr) if self.lr is not None else dict(STAGE_DEFAULT_LR[stage])


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs (see the module docstring for the file layout)."""

    stage: str
    output_dir: Path
    model: ModelSection
    data: DataConfig
    optim: OptimConfig = field(default_factory=OptimConfig)
    retrieval: RetrievalSection | None = None

    def __post_init__(self) -> None:
        _need(self.stage in STAGES, f"stage={self.stage!r}; use one of {', '.join(STAGES)}")
        object.__setattr__(self, "output_dir", Path(self.output_dir))
        lr = self.optim.lr_for(self.stage)
        if "lora" in lr:
            _need(
                self.model.engine.lora is not None,
                "optim.lr trains 'lora' but model.lora is null; add a model.lora section or "
                "drop 'lora' from optim.lr",
            )
        if "llm" in lr and "lora" in lr:
            raise ConfigError("train either the whole LLM ('llm') or LoRA ('lora'), not both")

    @property
    def tasks(self) -> tuple[str, ...] | None:
        """Task names to train on (``None`` = all)."""
        return self.data.tasks if self.data.tasks is not None else STAGE_DEFAULT_TASKS[self.stage]

    @property
    def group_lr(self) -> dict[str, float]:
        return self.optim.lr_for(self.stage)

    def to_json(self) -> dict:
        """JSON-ready dict (paths as strings), written next to the run as ``train_config.json``;
        :meth:`from_dict` reads it back."""
        return {**_jsonable(dataclasses.asdict(self)), "model": self.model.to_json()}

    @classmethod
    def from_dict(cls, data: dict, stage: str | None = None, where: str = "config") -> TrainConfig:
        """Build from a parsed file; ``stage`` (the CLI's ``--stage``) overrides the file's."""
        _need(isinstance(data, dict), f"{where} must be a mapping at the top level")
        data = dict(data)
        if stage is not None:
            if data.get("stage") not in (None, stage):
                raise ConfigError(
                    f"--stage {stage} but {where} says stage: {data['stage']}; make them agree"
                )
            data["stage"] = stage
        _need("stage" in data, f"{where} has no stage; pass --stage align|instruct")
        for key in ("output_dir", "model", "data"):
            _need(key in data, f"{where} lacks the required key {key!r}")
        if isinstance(data.get("model"), dict):
            data["model"] = ModelSection.from_dict(data["model"], f"{where}: model")
        sections = {"data": DataConfig, "optim": OptimConfig, "retrieval": RetrievalSection}
        for key, kind in sections.items():
            if isinstance(data.get(key), dict):
                data[key] = build_config(kind, data[key], f"{where}: {key}")
        return build_config(cls, data, where)


def load_train_config(path: str | Path, stage: str | None = None) -> TrainConfig:
    """Read a ``.json`` / ``.yaml`` / ``.yml`` training config; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"training config {str(path)!r} not found; pass --config PATH")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"training config {str(path)!r} must end in .json, .yaml or .yml")
    except (json.JSONDecodeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"cannot parse {str(path)!r}: {err}") from err
    except Exception as err:  # yaml.YAMLError: yaml is imported lazily above
        raise ConfigError(f"cannot parse {str(path)!r}: {err}") from err
    return TrainConfig.from_dict(data, stage, where=str(path))
