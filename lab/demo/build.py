"""Build the shipped demo model end to end: data, tokenizer, CLIP, knowledge base, training.

``python assets/build_demo.py`` runs these steps (:func:`build_demo`); each one writes into the
work folder (default ``workspace/demo_build``) and is skipped when its output already exists,
so an interrupted build continues where it stopped (training itself resumes from its newest
checkpoint); ``work/recipe.json`` records the recipe, and a folder built with another one is
refused (:func:`check_work_recipe`):

1. ``data/``: the synthetic instruction dataset (:func:`lab.synthetic.build_dataset`);
2. ``tokenizer/`` + ``base_init/``: BPE tokenizer on the generator's text, random base model;
3. ``clip/``: the tiny CLIP (:mod:`lab.demo.clip`); ``kb/``: the knowledge base built from
   the dataset's multi-level description corpus with :mod:`engine.retrieval` (the descriptions
   of every ``kb_scene_every``-th training scene, to keep the shipped index small);
4. ``base/``: the vision tower pretrained contrastively on crops + captions (stage 0,
   :mod:`lab.demo.vision_pretrain`);
5. ``runs/<variant>/``, ``runs/<variant>_cont/``, ``runs/<variant>_cont3/`` ... ``_cont8``:
   training with ``engine.train`` in eight stages (full model and the two ablations; stage 2
   continues stage 1 at a lower rate, each later stage continues the one before the same way;
   stage 8 also trains the vision tower at a tenth of the rate);
6. export to ``--out``: ``model/`` (trained base, fp16), ``adapter/``, ``clip/``, ``kb/``,
   then scores on fresh test scenes and ``demo.json``.

The demo raster (a GeoTIFF) is written by ``assets/build_demo.py`` through ``tiles``, since the
engine never imports rasterio.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

from engine.atomic import atomic_directory, write_text_atomic
from lab.demo.recipe import VARIANTS, DemoRecipe, continue_config, train_config

__all__ = [
    "build_data",
    "build_demo",
    "build_kb",
    "build_tokenizer_and_base",
    "check_work_recipe",
    "export_variant",
    "pretrain_base",
    "score_variant",
    "snap_box_answers",
    "tokenizer_texts",
    "train_variant",
    "variant_engine",
]

logger = logging.getLogger(__name__)

CHAT_WORDS = ("system", "user", "assistant")


def build_data(recipe: DemoRecipe, work: Path, workers: int = 2) -> Path:
    """``work/data``: train/val/test JSONL, PNG crops and ``corpus.jsonl``."""
    from lab.synthetic import build_dataset

    out = work / "data"
    if (out / "manifest.json").is_file():
        return out
    with atomic_directory(out) as tmp:
        build_dataset(
            tmp, recipe.n_scenes, recipe.data_seed, recipe.crop_px, 2 * recipe.crop_px,
            workers=workers,
        )
        for split in ("train", "val"):
            snap_box_answers(tmp / f"{split}.jsonl", recipe.box_grid_step)
    return out


_BOX = re.compile(r"\[(\d+), (\d+), (\d+), (\d+)")


def snap_box_answers(path: Path, step: int) -> int:
    """Rewrite the grounding answers in the JSONL ``path`` with x0, y0, x1, y1 rounded to
    multiples of ``step`` on the 0-1000 grid (an angle stays as it is); returns how many changed.

    With one token per coordinate (:mod:`lab.demo.tokenizer`), ``step`` 10 leaves 101
    coordinate classes, each seen ten times as often; the rounding moves an edge by at most
    0.5 % of the crop (0.6 px at 128 px). Test scoring compares with the exact boxes."""
    if step <= 1:
        return 0

    def snap(match: re.Match) -> str:
        return "[" + ", ".join(str(round(int(v) / step) * step) for v in match.groups())

    changed, lines = 0, []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("task") == "ground":
            answer = _BOX.sub(snap, record["answer"])
            changed += answer != record["answer"]
            record["answer"] = answer
        lines.append(json.dumps(record, ensure_ascii=False))
    write_text_atomic(path, "\n".join(lines) + "\n")
    return changed


def tokenizer_texts(data_dir: Path) -> Iterator[str]:
    """Every text the model reads or writes: rendered prompts, answers, corpus descriptions."""
    from engine.data.instructions import iter_jsonl
    from engine.prompts import load_prompt_set

    prompts = load_prompt_set("paper", "adapter")
    for _ in range(200):  # the system prompt and chat roles appear in every sequence
        yield prompts.system
        yield from CHAT_WORDS
    for sample in iter_jsonl(data_dir / "train.jsonl"):
        region = "[100, 200, 300, 400]" if sample.region_px is not None else ""
        yield prompts.render(
            sample.task, question=sample.question or None, labels=sample.labels, region_text=region
        )
        yield sample.answer
    with (data_dir / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)["text"]


def build_tokenizer_and_base(recipe: DemoRecipe, work: Path) -> Path:
    """``work/base_init``: the randomly initialised base (``llm/`` with the tokenizer, ``vision/``)."""
    from lab.demo.base import write_base_model
    from lab.demo.tokenizer import build_tokenizer, train_tokenizer_json

    out = work / "base_init"
    if (out / "vision" / "config.json").is_file():
        return out
    tokenizer_json = train_tokenizer_json(
        tokenizer_texts(work / "data"), recipe.vocab_size, recipe.max_number_token
    )
    tokenizer = build_tokenizer(tokenizer_json, work / "tokenizer")
    write_base_model(recipe.arch, tokenizer, out, seed=recipe.seed)
    return out


def build_kb(recipe: DemoRecipe, work: Path) -> Path:
    """``work/clip`` (trained tiny CLIP) and ``work/kb`` (the description corpus embedded)."""
    from lab.demo.clip import ClipTrainConfig, caption_pairs, train_clip
    from engine.retrieval import ClipEmbedder, KnowledgeBase, read_corpus

    if not (work / "clip" / "open_clip_config.json").is_file():
        pairs = caption_pairs(work / "data" / "train.jsonl")
        clip_config = ClipTrainConfig(
            steps=recipe.clip_steps, batch_size=recipe.clip_batch_size, seed=recipe.seed
        )
        embedder = train_clip(pairs, clip_config)
        embedder.model.half()  # ship fp16; loading casts back to the model's fp32
        embedder.save(work / "clip")
    if not (work / "kb" / "manifest.json").is_file():
        embedder = ClipEmbedder.load(work / "clip")
        corpus = read_corpus([work / "data" / "corpus.jsonl"])
        # scene classes cycle with the index: keep whole rural/urban/industrial triples
        kept = [d for d in corpus if (_scene_index(d.source) // 3) % recipe.kb_scene_every == 0]
        KnowledgeBase.build(kept, embedder, work / "kb", overwrite=True).close()
    return work / "kb"


def pretrain_base(recipe: DemoRecipe, work: Path) -> Path:
    """``work/base``: ``base_init`` with a contrastively pretrained vision tower (stage 0)."""
    from engine.data.instructions import iter_jsonl
    from lab.demo.vision_pretrain import (
        VisionPretrainConfig,
        pretrain_examples,
        pretrain_vision,
    )
    from engine.retrieval import ClipEmbedder

    out = work / "base"
    if (out / "vision" / "geolens_pretrain.json").is_file():
        return out
    captions = {
        s.id.rsplit(":", 1)[0]: s.answer
        for s in iter_jsonl(work / "data" / "train.jsonl")
        if s.question_type == "caption_scene"
    }
    manifest = json.loads((work / "data" / "manifest.json").read_text(encoding="utf-8"))
    examples = pretrain_examples(manifest, captions, recipe.arch.patch_px)
    config = VisionPretrainConfig(steps=recipe.vision_pretrain_steps, seed=recipe.seed)
    return pretrain_vision(
        work / "base_init", out, examples, ClipEmbedder.load(work / "clip"), config
    )


def _scene_index(source: str) -> int:
    """Scene number of a corpus source ``synthetic:<seed>`` (seed = data_seed * 10^6 + index)."""
    from lab.synthetic.dataset import SEED_STRIDE

    return int(source.rsplit(":", 1)[1]) % SEED_STRIDE


def train_variant(
    recipe: DemoRecipe, work: Path, variant: str, steps: int | None = None, suffix: str = ""
) -> Path:
    """Train ``variant`` with :class:`engine.training.Trainer` (resuming): stage 1, then each of
    the recipe's ``continue_stages`` (``runs/<variant>_cont``, ``_cont3``, ...); returns the last
    ``final/``. ``suffix`` names a separate run folder (``runs/<variant><suffix>``)."""
    import dataclasses

    from engine.training import Trainer

    config = train_config(recipe, variant, work, steps)
    if suffix:
        config = dataclasses.replace(config, output_dir=work / "runs" / f"{variant}{suffix}")
    final = _train_once(config, Trainer)
    for index in range(len(recipe.continue_stages)):  # stages 2, 3, ... (see DemoRecipe)
        final = _train_once(continue_config(recipe, config, final, index), Trainer)
    return final


def _train_once(config, trainer_cls) -> Path:
    """Run (or resume, or skip when finished) one training run; returns its ``final/``."""
    final = config.output_dir / "final"
    if (final / "meta.json").is_file():
        return final
    started = time.perf_counter()
    result = trainer_cls(config).run(resume=True)
    minutes = (time.perf_counter() - started) / 60
    (config.output_dir / "timing.json").write_text(
        json.dumps({"minutes_last_session": round(minutes, 1), "steps": result.steps}),
        encoding="utf-8",
    )
    return result.final_dir


def export_variant(final: Path, work: Path, out: Path) -> None:
    """Copy a trained variant (base in fp16, adapter) plus CLIP and KB into ``out``."""
    from lab.demo.export import export_model

    export_model(final, work, out)


def variant_engine(final: Path, work: Path, variant: str, recipe: DemoRecipe):
    """The engine of a trained run (with the work folder's retriever unless ``no_retrieval``)."""
    from lab.demo.export import engine_from_dirs

    with_retrieval = variant != "no_retrieval"
    return engine_from_dirs(
        final / "base",
        final / "adapter",
        work / "clip" if with_retrieval else None,
        work / "kb" if with_retrieval else None,
        recipe.top_k,
    )


def score_variant(engine, recipe: DemoRecipe, n_scenes: int | None = None) -> dict:
    """Scores of ``engine`` on fresh test scenes (:mod:`lab.demo.synthetic_eval`)."""
    from lab.demo.synthetic_eval import demo_scores, fresh_test_set

    samples, others = fresh_test_set(
        recipe.test_seed, n_scenes or recipe.test_scenes, recipe.crop_px
    )
    scores, _ = demo_scores(engine, samples, ground_min_frac=0.02, others=others)
    return scores.to_json()


RECIPE_FILE = "recipe.json"
# continue-stage options of earlier recipes, removed with the experiments (docs/lab.md): their
# defaults are what every stage does now
REMOVED_STAGE_DEFAULTS = {"number_sigma": 0.0, "image_positions": None, "image_attention": None}


def check_work_recipe(recipe: DemoRecipe, work: Path) -> None:
    """Record ``recipe`` in ``work/recipe.json``, or refuse a work folder built with another one.

    Every build step skips what already exists, so resuming a folder with, say, longer stages
    would silently keep the old runs. ``train_device`` is not compared, so a build may move to a
    GPU between sessions (resuming a CPU checkpoint on CUDA has not been run: no GPU yet). A
    folder from before this check has no record; it is taken as built with ``recipe``. A record
    from before the experiment options were removed (docs/lab.md) matches when its stages hold
    them at their defaults (:data:`REMOVED_STAGE_DEFAULTS`)."""
    from engine.errors import ConfigError

    path = work / RECIPE_FILE
    wanted = json.loads(json.dumps(recipe.to_json()))  # tuples as the file has them: lists
    wanted.pop("train_device")
    if path.is_file():
        recorded = json.loads(path.read_text(encoding="utf-8"))
        recorded.pop("train_device", None)
        for stage in recorded.get("continue_stages", ()):
            for key, default in REMOVED_STAGE_DEFAULTS.items():
                if stage.get(key, default) == default:
                    stage.pop(key, None)
        differ = sorted(
            k for k in wanted.keys() | recorded.keys() if wanted.get(k) != recorded.get(k)
        )
        if differ:
            raise ConfigError(
                f"work folder {str(work)!r} was built with another recipe (differs in: "
                f"{', '.join(differ)}); pass a new --work folder, or delete this one to rebuild"
            )
        return
    write_text_atomic(path, json.dumps(recipe.to_json(), indent=1) + "\n")


def build_demo(out: Path, work: Path, recipe: DemoRecipe | None = None, ablations: bool = True):
    """Run every step (see the module docstring); returns the path of ``demo.json``."""
    from lab.demo.export import engine_from_dirs, write_manifest

    recipe = recipe or DemoRecipe()
    work.mkdir(parents=True, exist_ok=True)
    check_work_recipe(recipe, work)
    build_data(recipe, work)
    build_tokenizer_and_base(recipe, work)
    build_kb(recipe, work)
    pretrain_base(recipe, work)
    final = train_variant(recipe, work, "full")
    export_variant(final, work, out)  # the shipped (fp16) copy is what gets scored
    shipped = engine_from_dirs(
        out / "model", out / "adapter", out / "clip", out / "kb", recipe.top_k
    )
    scores = {"full": score_variant(shipped, recipe)}
    if ablations:
        steps = recipe.ablation_steps
        tag = "" if steps is None else f"@{steps}"
        if steps is not None:  # a smaller budget: the full model is trained again at it
            variants = [("full", tag), *[(v, tag) for v in VARIANTS if v != "full"]]
        else:
            variants = [(v, "") for v in VARIANTS if v != "full"]
        for variant, suffix in variants:
            run = train_variant(recipe, work, variant, steps, suffix)
            engine = variant_engine(run, work, variant, recipe)
            scores[variant + suffix] = score_variant(engine, recipe)
            logger.info("%s%s: %s", variant, suffix, scores[variant + suffix])
    return write_manifest(out, work, recipe, scores)
