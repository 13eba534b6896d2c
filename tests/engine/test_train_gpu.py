"""QLoRA on CUDA: a 4-bit NF4 base with LoRA, experts and prompter trains under bf16 autocast,
saves a checkpoint and resumes. Skipped without a CUDA GPU (conftest's ``gpu`` marker)."""

from __future__ import annotations

import pytest

from engine.training import TrainConfig, Trainer
from tests.engine.tiny import cached_tiny_model_dir

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from lab.synthetic import build_dataset

    out = tmp_path_factory.mktemp("gpu-train-data")
    build_dataset(out, 3, seed=6, crop_px=96, scene_px=192)
    return out


@pytest.mark.parametrize("backbone", ["qwen2.5-vl", "paper"])
def test_qlora_trains_with_bf16_autocast_and_resumes(backbone, tmp_path, data_dir):
    import bitsandbytes as bnb
    import torch

    raw = {
        "output_dir": str(tmp_path / "run"),
        "model": {
            "backbone": backbone,
            "model_path": str(cached_tiny_model_dir(backbone)),
            "device": "cuda",
            "prompter": {"num_tokens": 4, "width": 32},
            "experts": {"rank": 8},
            "lora": {"rank": 8, "alpha": 16, "dropout": 0.05},
            "quant": {"mode": "nf4"},
        },
        "data": {"train": [{"path": str(data_dir / "train.jsonl"), "limit": 32}]},
        "optim": {"batch_size": 4, "grad_accum": 2, "max_steps": 4, "save_every": 2, "seed": 1},
    }
    config = TrainConfig.from_dict(raw, stage="instruct")
    trainer = Trainer(config)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in trainer.vlm.backbone.decoder.modules())
    assert trainer._autocast().fast_dtype == torch.bfloat16
    lora_before = [p.detach().clone() for p in trainer.vlm.parameter_groups()["lora"]]
    result = trainer.run()
    assert all(torch.isfinite(torch.tensor(result.losses)))
    lora_after = trainer.vlm.parameter_groups()["lora"]
    assert any(not torch.equal(a, b) for a, b in zip(lora_before, lora_after))
    resumed = Trainer(config).run(resume=True)  # from step 2: steps 3 and 4 again
    assert len(resumed.losses) == 2
