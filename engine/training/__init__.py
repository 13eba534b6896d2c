"""Training (paper IV-A3): typed configs, deterministic data order, the loop, checkpoints.

``python -m engine.train --stage align|instruct --config CONFIG.yaml [--resume]``; in code::

    from engine.training import Trainer, load_train_config

    result = Trainer(load_train_config("instruct.yaml", stage="instruct")).run()
"""

from engine.training.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    load_partial_adapter,
    save_base,
    save_checkpoint,
)
from engine.training.config import (
    STAGE_DEFAULT_LR,
    STAGES,
    DataConfig,
    DataSource,
    ModelSection,
    OptimConfig,
    RetrievalSection,
    TrainConfig,
    load_train_config,
)
from engine.training.data import BatchMaker, SampleOrder, load_samples
from engine.training.trainer import Trainer, TrainResult, lr_multiplier

__all__ = [
    "STAGES",
    "STAGE_DEFAULT_LR",
    "BatchMaker",
    "DataConfig",
    "DataSource",
    "ModelSection",
    "OptimConfig",
    "RetrievalSection",
    "SampleOrder",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "latest_checkpoint",
    "load_checkpoint",
    "load_partial_adapter",
    "load_samples",
    "load_train_config",
    "lr_multiplier",
    "save_base",
    "save_checkpoint",
]
