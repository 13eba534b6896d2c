"""The demo model's recipe: every size, seed and training choice in one frozen dataclass.

:class:`DemoRecipe` is what ``python assets/build_demo.py`` executes; :func:`train_config`
turns it into the :class:`engine.training.TrainConfig` of one variant (stage 1), and
:func:`continue_config` into its later stages (the same run continued at a lower learning rate,
seven times; :func:`scale_steps` makes every stage longer, ``train_device`` runs them on a GPU):

* ``full``: the paper architecture with retrieval (prompter cross-attends to the top-k
  descriptions the demo CLIP retrieves from the demo knowledge base) and semantic experts;
* ``no_retrieval``: the same without retrieved descriptions (ablation);
* ``no_experts``: the same without semantic experts (ablation).

Everything is trained from scratch (no pretrained weights exist offline): the vision tower is
first pretrained on the training crops (:mod:`lab.demo.vision_pretrain`: contrastive
image-caption loss as SigLIP towers are made, plus per-patch kind/colour labels), then it stays
frozen while the ``llm``, ``projector``, ``prompter`` and ``experts`` groups train together with
``engine.train`` (no LoRA: the whole small LLM trains). Freezing matters: while the LLM still
answers from its language prior, the gradients reaching the tower are noise that AdamW turns into
full-size updates, and a trainable tower lost most of its image-dependent signal within 1200 steps
(measured: the share of last-layer feature variance that varies across tokens fell from 23 % to
2.5 %), so presence stayed at chance. Sampling weights
oversample grounding (the hardest task for a small model) and thin out the plentiful presence
questions and captions; the test set is the generator's normal distribution.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from engine.config import EngineConfig, ExpertConfig, PrompterConfig, QuantConfig
from engine.errors import ConfigError
from engine.training.config import (
    DataConfig,
    DataSource,
    ModelSection,
    OptimConfig,
    RetrievalSection,
    TrainConfig,
)
from lab.demo.base import DemoArch

__all__ = [
    "VARIANTS",
    "ContinueStage",
    "DemoRecipe",
    "continue_config",
    "scale_steps",
    "train_config",
]

VARIANTS = ("full", "no_retrieval", "no_experts")

SAMPLE_WEIGHTS = {
    "ground": 4.0,
    "count": 1.0,
    "presence": 0.5,
    "caption_scene": 0.3,
    "caption_object": 0.3,
    "region": 0.5,
    "scene": 1.0,
}


@dataclass(frozen=True)
class ContinueStage:
    """One more run after stage 1, starting from the previous stage's trained base and adapter,
    with a new warm-up + cosine schedule: ``steps`` at ``lr``; ``vision_lr`` > 0 also trains the
    vision tower in this stage at that rate (the paper's optional tower tuning at a smaller
    rate; 0: the tower stays frozen)."""

    steps: int
    lr: float
    vision_lr: float = 0.0

    def __post_init__(self) -> None:
        if self.steps <= 0 or self.lr <= 0 or self.vision_lr < 0:
            raise ConfigError(
                f"continue stage needs steps > 0, lr > 0, vision_lr >= 0; got {self}"
            )


@dataclass(frozen=True)
class DemoRecipe:
    """Sizes, seeds and budgets of the demo build (defaults: the shipped demo)."""

    data_seed: int = 11  # training scenes: seeds 11_000_000 + i
    n_scenes: int = 3000
    crop_px: int = 128
    test_seed: int = 97  # fresh test scenes: seeds 97_000_000 + i, never trained on
    test_scenes: int = 60
    vocab_size: int = 1024
    max_number_token: int = 1000  # every integer 0..1000 is one token (lab.demo.tokenizer)
    box_grid_step: int = 10  # training box answers snapped to multiples of 10 on the 0-1000 grid
    arch: DemoArch = field(default_factory=DemoArch)
    prompter_tokens: int = 4  # N_a per level (the paper: 144); 3 levels -> 12 tokens
    expert_rank: int = 32
    expert_every: int = 2  # experts in decoder layers 1 and 3 of 4
    top_k: int = 3
    steps: int = 3000
    # stages 2, 3, ...: each continues the one before (see ContinueStage); () stops at stage 1
    continue_stages: tuple[ContinueStage, ...] = (
        *(ContinueStage(3000, 5e-4) for _ in range(6)),
        ContinueStage(3000, 5e-4, vision_lr=5e-5),  # stage 8: the tower trains too
    )
    ablation_steps: int | None = None  # None: the same budget as the full model
    batch_size: int = 16
    lr: float = 1.5e-3
    warmup_steps: int = 100
    weight_decay: float = 0.05
    seed: int = 0
    clip_steps: int = 800
    vision_pretrain_steps: int = 600
    clip_batch_size: int = 64
    kb_scene_every: int = 6  # KB: descriptions of every 6th training scene (size)
    raster_seed: int = 7
    # where engine.train runs: "cpu" (fp32, the shipped build) or "cuda" (bf16 autocast,
    # optim.precision "auto"); not part of what a work folder's runs depend on
    train_device: str = "cpu"

    def __post_init__(self) -> None:
        if self.train_device not in ("cpu", "cuda"):
            raise ConfigError(
                f"train_device={self.train_device!r}; use 'cpu' or 'cuda' "
                "(CUDA_VISIBLE_DEVICES picks the GPU)"
            )
        if self.crop_px != self.arch.image_px:
            raise ConfigError(
                f"crop_px {self.crop_px} must equal the vision input {self.arch.image_px} px"
            )

    def to_json(self) -> dict:
        return asdict(self)


def train_config(
    recipe: DemoRecipe, variant: str, work: Path, steps: int | None = None
) -> TrainConfig:
    """The training run of ``variant`` (:data:`VARIANTS`) under ``work`` (see module docstring)."""
    if variant not in VARIANTS:
        raise ConfigError(f"unknown demo variant {variant!r}; use one of {', '.join(VARIANTS)}")
    groups = ("llm", "projector", "prompter", "experts")  # the pretrained tower stays frozen
    if variant == "no_experts":
        groups = tuple(g for g in groups if g != "experts")
    experts = ExpertConfig(rank=recipe.expert_rank, every=recipe.expert_every)
    if variant == "no_experts":
        experts = ExpertConfig(rank=recipe.expert_rank, every=10_000)  # no decoder layer
    retrieval = None
    if variant != "no_retrieval":
        retrieval = RetrievalSection(
            kb_dir=work / "kb", embedder_dir=work / "clip", top_k=recipe.top_k
        )
    data = work / "data"
    return TrainConfig(
        stage="instruct",
        output_dir=work / "runs" / variant,
        model=ModelSection(
            EngineConfig(
                backbone="paper",
                model_path=work / "base",
                device=recipe.train_device,
                prompter=PrompterConfig(
                    num_tokens=recipe.prompter_tokens,
                    num_heads=recipe.arch.llm_heads,
                    max_query_tokens=64,
                    max_semantic_tokens=160,
                ),
                experts=experts,
                lora=None,
                quant=QuantConfig(mode="none"),
            )
        ),
        data=DataConfig(
            train=(DataSource(data / "train.jsonl"),),
            val=(DataSource(data / "val.jsonl"),),
            weights=dict(SAMPLE_WEIGHTS),
            val_limit=256,
        ),
        optim=OptimConfig(
            lr={g: recipe.lr for g in groups},
            batch_size=recipe.batch_size,
            grad_accum=1,
            max_steps=steps or recipe.steps,
            warmup_steps=recipe.warmup_steps,
            min_lr_ratio=0.05,
            weight_decay=recipe.weight_decay,
            precision="fp32" if recipe.train_device == "cpu" else "auto",  # auto: bf16 on CUDA
            loss="sample",
            seed=recipe.seed,
            log_every=10,
            eval_every=300,
            save_every=100,
            keep_checkpoints=2,
        ),
        retrieval=retrieval,
    )


def continue_config(
    recipe: DemoRecipe, first: TrainConfig, previous_final: Path, index: int = 0
) -> TrainConfig:
    """Continuation stage ``index`` (0: stage 2) of a variant: ``first`` (its stage-1 config)
    continued from ``previous_final`` (the trained base and adapter of the stage before) with
    ``recipe.continue_stages[index]``, written to ``<first output>_cont`` (stage 2) or
    ``<first output>_cont<index + 2>`` (the stage number). Measured (docs/BENCHMARKS.md, "Demo
    model"): each stage lifted the full model's grounding Acc@0.5 by about 0.1 up to stage 4
    (0.07 after stage 1, 0.17, 0.27, 0.37), then less (0.41, 0.43, 0.48, 0.52 after stage 8,
    which also trains the tower: 0.51 with it frozen)."""
    if not 0 <= index < len(recipe.continue_stages):
        raise ConfigError(
            f"continue stage {index} does not exist; the recipe has {len(recipe.continue_stages)}"
        )
    stage = recipe.continue_stages[index]
    model = replace(
        first.model,
        engine=replace(first.model.engine, model_path=previous_final / "base"),
        init_adapter=previous_final / "adapter",
    )
    lr = {g: stage.lr for g in first.optim.lr}
    if stage.vision_lr > 0:
        lr["vision"] = stage.vision_lr
    optim = replace(first.optim, lr=lr, max_steps=stage.steps)
    suffix = "_cont" if index == 0 else f"_cont{index + 2}"  # stage number
    out = first.output_dir.with_name(first.output_dir.name + suffix)
    return replace(first, model=model, optim=optim, output_dir=out)


def scale_steps(recipe: DemoRecipe, factor: float) -> DemoRecipe:
    """``recipe`` with every LLM training stage ``factor`` times as long (stage 1, each continue
    stage, and ``ablation_steps`` when set; at least one step each); schedules, rates and the
    vision/CLIP pretraining stay. The budget lever the CPU builds lacked (docs/BENCHMARKS.md,
    "Demo model": the models underfit): ``python assets/build_demo.py --device cuda
    --steps-scale 20 --work <a new folder>``."""
    if not factor > 0:
        raise ConfigError(f"steps scale must be > 0, got {factor!r}")

    def scaled(steps: int) -> int:
        return max(1, round(steps * factor))

    return replace(
        recipe,
        steps=scaled(recipe.steps),
        continue_stages=tuple(
            replace(stage, steps=scaled(stage.steps)) for stage in recipe.continue_stages
        ),
        ablation_steps=None if recipe.ablation_steps is None else scaled(recipe.ablation_steps),
    )

