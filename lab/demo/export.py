"""The shipped copy of a demo build: ``assets/demo`` (model, adapter, CLIP, KB) and ``demo.json``.

:func:`export_model` copies a trained run (the base as fp16) with the work folder's CLIP and
knowledge base; :func:`write_manifest` writes ``demo.json`` (its layout:
:mod:`engine.demo.manifest`, which is what the app reads); :func:`engine_from_dirs` builds an
engine from a run's folders for scoring and probing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from engine.atomic import write_text_atomic
from engine.config import EngineConfig, GenerationConfig, RetrievalConfig
from lab.synthetic.scene import SCENE_CLASSES

__all__ = [
    "DEMO_LABEL",
    "engine_from_dirs",
    "export_model",
    "export_trained_adapter",
    "export_trained_model",
    "write_manifest",
]

DEMO_LABEL = "GeoLens demo model — tiny, trained on synthetic scenes; not for real imagery"


def engine_from_dirs(
    model_dir: Path,
    adapter_dir: Path,
    embedder_dir: Path | None,
    kb_dir: Path | None,
    top_k: int = 3,
    max_new_tokens: int = 96,
):
    """An engine on CPU from a base directory, an adapter and (optionally) a retriever."""
    from engine.engine import Engine
    from engine.retrieval import ClipEmbedder, KnowledgeBase, Retriever

    config = EngineConfig(
        backbone="paper",
        model_path=model_dir,
        adapter_path=adapter_dir,
        device="cpu",
        retrieval=RetrievalConfig(top_k=top_k),
        generation=GenerationConfig(max_new_tokens=max_new_tokens),
    )
    retriever = None
    if embedder_dir and kb_dir:
        embedder = ClipEmbedder.load(embedder_dir)
        retriever = Retriever(KnowledgeBase.load(kb_dir, embedder), embedder)
    return Engine.from_config(config, retriever=retriever)


def export_model(final: Path, work: Path, out: Path) -> None:
    """Copy a training run's ``final/`` (base as fp16) and the work folder's CLIP + KB to ``out``."""
    from lab.demo.fp16 import copy_safetensors_fp16

    out.mkdir(parents=True, exist_ok=True)
    for name in ("model", "adapter", "clip", "kb"):
        shutil.rmtree(out / name, ignore_errors=True)
    shutil.copytree(final / "base", out / "model")
    for part in ("llm", "vision"):
        copy_safetensors_fp16(
            final / "base" / part / "model.safetensors", out / "model" / part / "model.safetensors"
        )
    shutil.copytree(final / "adapter", out / "adapter")
    config_path = out / "adapter" / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["base_model"] = "model"  # the shipped base beside it, not the build folder
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    copy_safetensors_fp16(
        final / "adapter" / "adapter.safetensors", out / "adapter" / "adapter.safetensors"
    )
    shutil.copytree(work / "clip", out / "clip")
    shutil.copytree(work / "kb", out / "kb")


def export_trained_model(final: Path, out: Path) -> None:
    """Replace ``out/model`` (base as fp16) and ``out/adapter`` by a training run's ``final/``,
    each directory swapped in atomically (:func:`engine.atomic.atomic_directory`); CLIP and the
    knowledge base in ``out`` stay (a stage that continued from the shipped model, e.g. the
    change stage, :mod:`lab.demo.change_stage`)."""
    from engine.atomic import atomic_directory
    from lab.demo.fp16 import copy_safetensors_fp16

    for needed in (final / "base" / "llm", final / "base" / "vision", final / "adapter"):
        if not needed.is_dir():
            raise FileNotFoundError(f"{needed} is missing: is {final} a finished training run?")
    with atomic_directory(out / "model") as tmp:
        shutil.copytree(final / "base", tmp, dirs_exist_ok=True)
        for part in ("llm", "vision"):
            copy_safetensors_fp16(
                final / "base" / part / "model.safetensors", tmp / part / "model.safetensors"
            )
    _swap_adapter(final, out)


def export_trained_adapter(final: Path, out: Path) -> None:
    """Replace only ``out/adapter`` (fp16, atomically) by a training run's ``final/adapter``:
    a run that trained no base weights, e.g. the change stage's task-routed LoRA on the frozen
    shipped base (``out/model`` stays)."""
    for needed in (final / "adapter", out / "model"):
        if not needed.is_dir():
            raise FileNotFoundError(
                f"{needed} is missing: export a finished training run onto a shipped model"
            )
    if (final / "base").exists():
        raise ValueError(f"{final} trained base weights: export it with export_trained_model")
    _swap_adapter(final, out)


def _swap_adapter(final: Path, out: Path) -> None:
    """``final/adapter`` (fp16, base_model "model") atomically in place of ``out/adapter``."""
    from engine.atomic import atomic_directory
    from lab.demo.fp16 import copy_safetensors_fp16

    with atomic_directory(out / "adapter") as tmp:
        shutil.copytree(final / "adapter", tmp, dirs_exist_ok=True)
        config_path = tmp / "adapter_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["base_model"] = "model"
        config_path.write_text(
            json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        copy_safetensors_fp16(
            final / "adapter" / "adapter.safetensors", tmp / "adapter.safetensors"
        )


def write_manifest(out: Path, work: Path, recipe, scores: dict, extra: dict | None = None) -> Path:
    """Write ``out/demo.json`` (layout: :mod:`engine.demo.manifest`); returns its path."""
    data_manifest = json.loads((work / "data" / "manifest.json").read_text(encoding="utf-8"))
    training = {}
    for run in sorted((work / "runs").iterdir()):
        meta = run / "final" / "meta.json"
        if meta.is_file():
            training[run.name] = {
                **json.loads(meta.read_text(encoding="utf-8")),
                **_timing(run),
            }
    manifest = {
        "label": DEMO_LABEL,
        "backbone": "paper",
        "model": "model",
        "adapter": "adapter",
        "retrieval": {"embedder": "clip", "kb": "kb", "top_k": recipe.top_k},
        "raster": "demo_scene.tif",
        "recommended_region_m": recipe.crop_px * 0.5,
        "scene_classes": list(SCENE_CLASSES),
        "recipe": recipe.to_json(),
        "training_data": {
            "train_scene_seeds": _seed_range(data_manifest["seeds"]["train"]),
            "val_scene_seeds": _seed_range(data_manifest["seeds"]["val"]),
            "test_scene_seeds": f"{recipe.test_seed}_000_000 + [0, {recipe.test_scenes})",
            "counts": data_manifest["counts"],
        },
        "training": training,
        "metrics": scores,
        **(extra or {}),
    }
    path = out / "demo.json"
    previous = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    # written by assets/build_demo.py (the raster and its before twin)
    for key in ("raster_info", "before_raster", "change_truth", "before_raster_info"):
        if key in previous:
            manifest[key] = previous[key]
    write_text_atomic(path, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return path


def _seed_range(seeds: list[int]) -> str:
    return f"{min(seeds)}..{max(seeds)} ({len(seeds)} scenes)" if seeds else "none"


def _timing(run: Path) -> dict:
    path = run / "timing.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
