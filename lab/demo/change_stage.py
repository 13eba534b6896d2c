"""The demo model's change stage: teach the shipped model change captioning and grounding.

One more training run (:class:`ChangeStage`) that continues from the *shipped* model
(``assets/demo``: base, adapter, CLIP, knowledge base) on a mix of

- synthetic change pairs (:mod:`lab.synthetic.change`: before/after crops of the same scene,
  true change + nuisance, about 30 % no-change pairs), seeds ``change_seed * 10**6 + i``;
- single-image samples of the scenes the model was trained on (``DemoRecipe.data_seed``), so
  it does not forget its single-image tasks (replay),

at ``change_share`` of the sampling mass for the change samples. Scoring
(:func:`change_scores`) uses *fresh* pairs (``eval_seed``, never trained on):

- change / no-change accuracy from the caption (a caption saying "no change" = no change),
  and from "has anything changed?";
- change-grounding Acc@0.5: each true box matched one-to-one (greedy by IoU) to a predicted box
  with IoU >= 0.5, over all true boxes (precision over the predicted boxes alongside);
- change-caption BLEU-1 and ROUGE-1 F against the generator's caption.

The single-image scores before and after the stage are :func:`lab.demo.synthetic_eval.demo_scores`
on the same fresh scenes. CLI::

    python -m lab.demo.change_stage data  --work workspace/change_stage   # pairs + replay data
    python -m lab.demo.change_stage train --work workspace/change_stage   # the run (resumes)
    python -m lab.demo.change_stage score --work workspace/change_stage   # both models' scores
    python -m lab.demo.change_stage export --work workspace/change_stage  # into assets/demo

``--mode lora`` (train): a *task-routed* LoRA instead (docs/DESIGN.md): the shipped model and
adapter stay frozen, a LoRA on the LLM decoder (``lora_rank``, alpha 2 x rank) trains on the
change samples only, and its adapter records ``lora.tasks`` = the change tasks, so the engine
runs single-image requests with the LoRA off, exactly as the shipped model (no forgetting by
construction). Such a run has no ``final/base``: ``score`` and ``export`` use the shipped base
(``export`` then replaces only ``assets/demo/adapter``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from engine.types import BoxPx, Task

__all__ = [
    "ChangeStage",
    "build_change_data",
    "change_config",
    "change_scores",
    "fresh_pairs",
    "match_boxes",
]

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "assets" / "demo"

# relative weights inside the change samples (question types of lab.synthetic.change)
CHANGE_WEIGHTS = {"change_caption": 1.0, "change_presence": 0.4, "change_ground": 1.6}
# the tasks a task-routed LoRA (--mode lora) runs for
CHANGE_TASKS = ("change_caption", "change_ground", "change_ask")
MODES = ("full", "lora")


@dataclass(frozen=True)
class ChangeStage:
    """Sizes, seeds and budget of the change stage (defaults: the run recorded in
    docs/BENCHMARKS.md, "Demo model: change")."""

    change_seed: int = 31  # training pairs: 31_000_000 + i
    change_pairs: int = 1200
    val_seed: int = 32
    val_pairs: int = 40
    replay_seed: int = 11  # = DemoRecipe.data_seed: scenes the shipped model trained on
    replay_scenes: int = 240
    eval_seed: int = 59  # fresh pairs: 59_000_000 + i, never trained on
    eval_pairs: int = 60
    single_eval_seed: int = 97  # = DemoRecipe.test_seed
    single_eval_scenes: int = 60  # the demo's own test set (demo.json "metrics")
    crop_px: int = 128
    box_grid_step: int = 10
    # sized for <= 40 min on a shared 2-core machine under nice -n 10 (1-11 s a step there,
    # with the load); the first run (220 steps at 5e-4, change_share 0.5) forgot more
    steps: int = 500
    lr: float = 2e-4
    batch_size: int = 8
    warmup_steps: int = 20
    change_share: float = 0.4  # of the sampling mass; the rest replays single-image samples
    seed: int = 0
    # --mode lora: a task-routed LoRA on the frozen shipped model, change samples only
    lora_rank: int = 16
    lora_lr: float = 1e-3

    def to_json(self) -> dict:
        return asdict(self)


def build_change_data(stage: ChangeStage, work: Path, workers: int = 1) -> Path:
    """``work/data``: ``change_train/``, ``change_val/`` (pairs) and ``replay/`` (single-image
    train/val of the shipped model's own training scenes, box answers snapped like its build).
    Each part is skipped when it exists."""
    from engine.atomic import atomic_directory
    from lab.demo.build import snap_box_answers
    from lab.synthetic import build_dataset
    from lab.synthetic.change import build_change_dataset

    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name, seed, n in (
        ("change_train", stage.change_seed, stage.change_pairs),
        ("change_val", stage.val_seed, stage.val_pairs),
    ):
        if not (data / name / "manifest.json").is_file():
            with atomic_directory(data / name) as tmp:
                build_change_dataset(
                    tmp,
                    n,
                    seed,
                    stage.crop_px,
                    box_grid_step=stage.box_grid_step,
                    workers=workers,
                )
    if not (data / "replay" / "manifest.json").is_file():
        with atomic_directory(data / "replay") as tmp:
            build_dataset(
                tmp,
                stage.replay_scenes,
                stage.replay_seed,
                stage.crop_px,
                2 * stage.crop_px,
                fractions=(0.95, 0.05, 0.0),
                workers=workers,
            )
            for split in ("train", "val"):
                snap_box_answers(tmp / f"{split}.jsonl", stage.box_grid_step)
    return data


def sampling_weights(stage: ChangeStage, data: Path) -> dict[str, float]:
    """Weights per question type: the demo recipe's for the single-image samples, and the
    change types scaled so that change samples get ``change_share`` of the sampling mass."""
    from lab.demo.recipe import SAMPLE_WEIGHTS

    def counts(path: Path) -> Counter:
        found: Counter = Counter()
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                found[row.get("question_type") or row["task"]] += 1
        return found

    single = counts(data / "replay" / "train.jsonl")
    change = counts(data / "change_train" / "pairs.jsonl")
    single_mass = sum(SAMPLE_WEIGHTS.get(k, 1.0) * n for k, n in single.items())
    change_mass = sum(CHANGE_WEIGHTS[k] * n for k, n in change.items())
    scale = stage.change_share / (1 - stage.change_share) * single_mass / change_mass
    return {**SAMPLE_WEIGHTS, **{k: w * scale for k, w in CHANGE_WEIGHTS.items()}}


def change_config(
    stage: ChangeStage,
    work: Path,
    shipped: Path = SHIPPED,
    steps: int | None = None,
    start: Path | None = None,
    name: str = "change",
    lr: float | None = None,
    mode: str = "full",
):
    """The :class:`engine.training.TrainConfig` of the stage: the shipped base and adapter
    (or ``start``: a run's ``final/``, to continue a change run with a new schedule) trained on
    pairs + replay (``work/runs/<name>``); the tower stays frozen. ``mode="lora"``: only a
    task-routed LoRA trains, on the change pairs alone (module docstring)."""
    from engine.config import EngineConfig, ExpertConfig, LoraConfig, PrompterConfig, QuantConfig
    from engine.training.config import (
        DataConfig,
        DataSource,
        ModelSection,
        OptimConfig,
        RetrievalSection,
        TrainConfig,
    )
    from lab.demo.recipe import DemoRecipe

    recipe = DemoRecipe()
    data = work / "data"
    adapter = json.loads((shipped / "adapter" / "adapter_config.json").read_text("utf-8"))
    experts = adapter.get("experts") or {}
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not a change-stage mode; use one of {MODES}")
    lora_mode = mode == "lora"
    if lora_mode and start is not None and not (start / "base").is_dir():
        start_model = shipped / "model"  # a LoRA run's final/ has no base: the shipped one
    else:
        start_model = start / "base" if start else shipped / "model"
    groups = ("lora",) if lora_mode else ("llm", "projector", "prompter", "experts")
    lora = (
        LoraConfig(rank=stage.lora_rank, alpha=2 * stage.lora_rank, dropout=0.0, tasks=CHANGE_TASKS)
        if lora_mode
        else None
    )
    train_sources = (DataSource(data / "change_train" / "pairs.jsonl"),)
    val_sources = (DataSource(data / "change_val" / "pairs.jsonl"),)
    if not lora_mode:  # replay the single-image samples against forgetting
        train_sources = (DataSource(data / "replay" / "train.jsonl"), *train_sources)
        val_sources = (DataSource(data / "replay" / "val.jsonl"), *val_sources)
    rate = lr or (stage.lora_lr if lora_mode else stage.lr)
    return TrainConfig(
        stage="instruct",
        output_dir=work / "runs" / name,
        model=ModelSection(
            EngineConfig(
                backbone="paper",
                model_path=start_model,
                device="cpu",
                prompter=PrompterConfig(
                    num_tokens=recipe.prompter_tokens,
                    num_heads=recipe.arch.llm_heads,
                    max_query_tokens=64,
                    max_semantic_tokens=160,
                ),
                experts=ExpertConfig(
                    rank=experts.get("rank", recipe.expert_rank),
                    every=experts.get("every", recipe.expert_every),
                ),
                lora=lora,
                quant=QuantConfig(mode="none"),
            ),
            init_adapter=start / "adapter" if start else shipped / "adapter",
        ),
        data=DataConfig(
            train=train_sources,
            val=val_sources,
            weights=dict(CHANGE_WEIGHTS) if lora_mode else sampling_weights(stage, data),
            val_limit=128,
        ),
        optim=OptimConfig(
            lr={g: rate for g in groups},
            batch_size=stage.batch_size,
            grad_accum=1,
            max_steps=steps or stage.steps,
            warmup_steps=stage.warmup_steps,
            min_lr_ratio=0.05,
            weight_decay=recipe.weight_decay,
            precision="fp32",
            loss="sample",
            seed=stage.seed,
            log_every=10,
            eval_every=110,
            save_every=100 if lora_mode else 20,  # a LoRA step is fast, a checkpoint is not
            keep_checkpoints=2,
        ),
        retrieval=RetrievalSection(
            kb_dir=shipped / "kb", embedder_dir=shipped / "clip", top_k=recipe.top_k
        ),
    )


# ------------------------------------------------------------------ scoring


def fresh_pairs(seed: int, n: int, crop_px: int = 128):
    """The fresh evaluation pairs (``pair_seed(seed, i)``), in memory."""
    from lab.synthetic.change import make_pair, pair_seed

    return [make_pair(pair_seed(seed, i), crop_px) for i in range(n)]


def match_boxes(predicted, truth, threshold: float = 0.5) -> int:
    """How many true boxes a one-to-one greedy matching (highest IoU first) pairs with a
    predicted box at IoU >= ``threshold``."""
    from engine.metrics import box_iou

    pairs = sorted(
        ((box_iou(p, t), i, j) for i, p in enumerate(predicted) for j, t in enumerate(truth)),
        reverse=True,
    )
    used_p, used_t, hits = set(), set(), 0
    for iou, i, j in pairs:
        if iou < threshold:
            break
        if i in used_p or j in used_t:
            continue
        used_p.add(i), used_t.add(j)
        hits += 1
    return hits


def _says_no_change(text: str) -> bool:
    t = text.lower()
    return any(p in t for p in ("no change", "nothing changed", "unchanged"))


def change_scores(engine, pairs, progress: bool = False) -> dict:
    """Change scores of ``engine`` on ``pairs`` (see the module docstring)."""
    from engine.metrics import bleu1, rouge1_f
    from lab.synthetic.change import PRESENCE_QUESTION, pair_records

    captions, refs, changed_refs, changed_caps = [], [], [], []
    right_caption = right_ask = 0
    hits = truth_n = pred_n = questions = all_found = 0
    per_kind: dict[str, list[int]] = {}
    started = time.perf_counter()
    for k, pair in enumerate(pairs):
        before, after = pair.before, pair.after
        caption = engine.run(after, Task.CHANGE_CAPTION, before=before).text.strip()
        captions.append(caption)
        refs.append([pair.caption])
        if pair.changed:
            changed_caps.append(caption)
            changed_refs.append([pair.caption])
        right_caption += (not _says_no_change(caption)) == pair.changed
        said = engine.run(after, Task.CHANGE_ASK, PRESENCE_QUESTION, before=before).text
        right_ask += said.strip().lower().startswith("yes") == pair.changed
        for rec in pair_records(pair, str(pair.seed), "b", "a"):
            if rec["task"] != "change_ground":
                continue
            truth = [BoxPx(b["x0"], b["y0"], b["x1"], b["y1"]) for b in rec["boxes_px"]]
            answer = engine.run(after, Task.CHANGE_GROUND, rec["question"], before=before)
            found = match_boxes(list(answer.boxes_px), truth)
            hits += found
            truth_n += len(truth)
            pred_n += len(answer.boxes_px)
            questions += 1
            all_found += found == len(truth) and len(answer.boxes_px) == len(truth)
            stats = per_kind.setdefault(rec["question"], [0, 0])
            stats[0] += found
            stats[1] += len(truth)
        if progress and (k + 1) % 25 == 0:
            logger.info(
                "scored %d/%d pairs (%.0f s)", k + 1, len(pairs), time.perf_counter() - started
            )
    n = len(pairs)
    return {
        "pairs": n,
        "changed_pairs": sum(p.changed for p in pairs),
        "change_accuracy_caption": right_caption / n,
        "change_accuracy_ask": right_ask / n,
        "ground_acc50": hits / max(1, truth_n),
        "ground_precision50": hits / max(1, pred_n),
        "ground_exact_questions": all_found / max(1, questions),
        "ground_boxes": truth_n,
        "ground_questions": questions,
        "ground_acc50_by_phrase": {
            k: {"acc50": v[0] / v[1], "n": v[1]} for k, v in sorted(per_kind.items())
        },
        "caption_bleu1": bleu1(captions, refs),
        "caption_rouge1": rouge1_f(captions, refs),
        "caption_bleu1_changed": bleu1(changed_caps, changed_refs) if changed_caps else None,
        "caption_rouge1_changed": rouge1_f(changed_caps, changed_refs) if changed_caps else None,
        "examples": [
            {"reference": r[0], "prediction": c} for c, r in list(zip(captions, refs))[:12]
        ],
    }


def single_scores(engine, stage: ChangeStage) -> dict:
    """The single-image scores (:func:`lab.demo.synthetic_eval.demo_scores`) on fresh scenes."""
    from lab.demo.synthetic_eval import demo_scores, fresh_test_set

    samples, others = fresh_test_set(
        stage.single_eval_seed, stage.single_eval_scenes, stage.crop_px
    )
    scores, _ = demo_scores(engine, samples, ground_min_frac=0.02, others=others)
    full = scores.to_json()
    keys = ("presence_accuracy", "count_accuracy", "scene_accuracy", "grounding_acc50", "n")
    return {k: full[k] for k in keys if k in full}


def _base_of(final: Path) -> Path:
    """A run's base: ``final/base``, or the shipped base for a run that trained none."""
    return final / "base" if (final / "base").is_dir() else SHIPPED / "model"


def _engine(model_dir: Path, adapter_dir: Path, shipped: Path = SHIPPED):
    from lab.demo.export import engine_from_dirs

    return engine_from_dirs(model_dir, adapter_dir, shipped / "clip", shipped / "kb", 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.demo.change_stage", description=__doc__.split("\n")[0]
    )
    parser.add_argument("step", choices=("data", "train", "score", "export"))
    parser.add_argument("--work", type=Path, default=REPO / "workspace" / "change_stage")
    parser.add_argument("--steps", type=int, default=None, help="override the stage's steps")
    parser.add_argument(
        "--run", default="change", help="run name under WORK/runs (train, score, export)"
    )
    parser.add_argument("--start", default=None, help="continue from this run's final/ (train)")
    parser.add_argument("--lr", type=float, default=None, help="override the stage's rate (train)")
    parser.add_argument("--change-share", type=float, default=None, help="override change_share")
    parser.add_argument("--pairs", type=int, default=None, help="override eval_pairs (score)")
    parser.add_argument("--scenes", type=int, default=None, help="override single_eval_scenes")
    parser.add_argument("--which", default="both", choices=("both", "shipped", "trained"))
    parser.add_argument(
        "--mode",
        default="full",
        choices=MODES,
        help="train: full fine-tuning with replay, or a task-routed LoRA on change pairs only",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    import torch

    torch.set_num_threads(args.threads)
    stage = ChangeStage()
    if args.pairs:
        stage = replace(stage, eval_pairs=args.pairs)
    if args.scenes:
        stage = replace(stage, single_eval_scenes=args.scenes)
    if args.change_share is not None:
        stage = replace(stage, change_share=args.change_share)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    if args.step == "data":
        build_change_data(stage, work, args.workers)
        return 0
    if args.step == "train":
        from engine.training import Trainer

        start = work / "runs" / args.start / "final" if args.start else None
        config = change_config(
            stage, work, steps=args.steps, start=start, name=args.run, lr=args.lr, mode=args.mode
        )
        record = {
            **stage.to_json(),
            "mode": args.mode,
            "steps": config.optim.max_steps,
            "start": args.start,
            "lr": next(iter(config.optim.lr.values())),
        }
        (work / f"stage_{args.run}.json").write_text(json.dumps(record, indent=1))
        started = time.perf_counter()
        result = Trainer(config).run(resume=True)
        minutes = (time.perf_counter() - started) / 60
        (config.output_dir / "timing.json").write_text(
            json.dumps({"minutes_last_session": round(minutes, 1), "steps": result.steps})
        )
        print(result.final_dir)
        return 0
    if args.step == "score":
        out = {}
        pairs = fresh_pairs(stage.eval_seed, stage.eval_pairs, stage.crop_px)
        final = work / "runs" / args.run / "final"
        models = {
            "shipped": (SHIPPED / "model", SHIPPED / "adapter"),
            # a LoRA run (--mode lora) trained no base: the shipped one
            "trained": (_base_of(final), final / "adapter"),
        }
        for name, (model_dir, adapter_dir) in models.items():
            if args.which not in ("both", name):
                continue
            engine = _engine(model_dir, adapter_dir)
            started = time.perf_counter()
            result = {"change": change_scores(engine, pairs, progress=True)}
            result["single"] = single_scores(engine, stage)
            result["seconds"] = round(time.perf_counter() - started, 1)
            out[name] = result
            logger.info(
                "%s: %s", name, json.dumps({k: v for k, v in result.items()}, default=str)[:2000]
            )
            path = work / f"scores_{name if name == 'shipped' else args.run}.json"
            path.write_text(
                json.dumps({"stage": stage.to_json(), **result}, indent=1), encoding="utf-8"
            )
        print(json.dumps(out, indent=1, default=str))
        return 0
    if args.step == "export":
        from lab.demo.export import export_trained_adapter, export_trained_model

        final = work / "runs" / args.run / "final"
        if (final / "base").is_dir():
            export_trained_model(final, SHIPPED)
        else:  # a task-routed LoRA on the frozen shipped base: only the adapter changes
            export_trained_adapter(final, SHIPPED)
        return 0
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
