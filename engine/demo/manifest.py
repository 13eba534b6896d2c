"""The shipped demo: ``assets/demo/demo.json`` and loading the engine it describes.

``demo.json`` (paths relative to it)::

    {"label": "GeoLens demo model — tiny, trained on synthetic scenes; not for real imagery",
     "backbone": "paper", "model": "model", "adapter": "adapter",
     "retrieval": {"embedder": "clip", "kb": "kb", "top_k": 3},
     "raster": "demo_scene.tif", "recommended_region_m": 64,
     "recipe": {...}, "training": {...}, "metrics": {...}}

:func:`load_demo_engine` returns a ready :class:`engine.Engine` (the demo model with its
retriever); :func:`demo_engine_config` gives the :class:`engine.EngineConfig` alone, and
:func:`load_demo_retriever` the retriever, for callers that build the engine themselves
(``Engine.from_config(config, retriever=...)``): the demo CLIP is a saved
:class:`engine.retrieval.ClipEmbedder` directory, not an open_clip checkpoint file.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from engine.config import EngineConfig, GenerationConfig, RetrievalConfig
from engine.errors import ConfigError, WeightsNotFoundError

__all__ = [
    "DEMO_DIR",
    "DEMO_LABEL",
    "DEMO_MANIFEST",
    "DemoManifest",
    "demo_engine_config",
    "engine_from_dirs",
    "export_model",
    "load_demo_engine",
    "load_demo_retriever",
    "read_demo_manifest",
    "write_manifest",
]

DEMO_DIR = Path(__file__).resolve().parents[2] / "assets" / "demo"
DEMO_MANIFEST = DEMO_DIR / "demo.json"
DEMO_LABEL = "GeoLens demo model — tiny, trained on synthetic scenes; not for real imagery"


@dataclass(frozen=True)
class DemoManifest:
    """``demo.json`` with its paths resolved against the file's folder."""

    path: Path
    label: str
    model_dir: Path
    adapter_dir: Path
    embedder_dir: Path | None
    kb_dir: Path | None
    top_k: int
    raster: Path | None
    data: dict

    @classmethod
    def read(cls, path: str | Path) -> DemoManifest:
        path = Path(path)
        if not path.is_file():
            raise WeightsNotFoundError(
                f"demo manifest {str(path)!r} not found; build the demo with "
                "`python assets/build_demo.py` (see docs/BENCHMARKS.md, 'Demo model')"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            root = path.parent
            retrieval = data.get("retrieval") or {}
            return cls(
                path=path,
                label=data["label"],
                model_dir=root / data["model"],
                adapter_dir=root / data["adapter"],
                embedder_dir=root / retrieval["embedder"] if retrieval else None,
                kb_dir=root / retrieval["kb"] if retrieval else None,
                top_k=int(retrieval.get("top_k", 3)),
                raster=root / data["raster"] if data.get("raster") else None,
                data=data,
            )
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ConfigError(f"{path} is not a valid GeoLens demo manifest: {err!r}") from err


def read_demo_manifest(path: str | Path = DEMO_MANIFEST) -> DemoManifest:
    """The shipped (or given) demo manifest."""
    return DemoManifest.read(path)


def demo_engine_config(
    path: str | Path = DEMO_MANIFEST,
    device: str = "auto",
    generation: GenerationConfig | None = None,
) -> EngineConfig:
    """The :class:`EngineConfig` of the demo model (retrieval comes from :func:`load_demo_retriever`)."""
    manifest = read_demo_manifest(path)
    return EngineConfig(
        backbone="paper",
        model_path=manifest.model_dir,
        adapter_path=manifest.adapter_dir,
        device=device,
        retrieval=RetrievalConfig(top_k=manifest.top_k),
        generation=generation or GenerationConfig(max_new_tokens=96),
    )


def load_demo_retriever(path: str | Path = DEMO_MANIFEST, device: str = "cpu"):
    """The demo's :class:`engine.retrieval.Retriever` (tiny CLIP + knowledge base), or None."""
    manifest = read_demo_manifest(path)
    if manifest.embedder_dir is None or manifest.kb_dir is None:
        return None
    return _retriever(manifest.embedder_dir, manifest.kb_dir, device)


def _retriever(embedder_dir: Path, kb_dir: Path, device: str = "cpu"):
    from engine.retrieval import ClipEmbedder, KnowledgeBase, Retriever

    embedder = ClipEmbedder.load(embedder_dir, device)
    return Retriever(KnowledgeBase.load(kb_dir, embedder), embedder)


def load_demo_engine(
    path: str | Path = DEMO_MANIFEST,
    device: str = "auto",
    generation: GenerationConfig | None = None,
):
    """A ready :class:`engine.Engine` running the demo model with its retriever."""
    from engine.engine import Engine

    config = demo_engine_config(path, device, generation)
    return Engine.from_config(config, retriever=load_demo_retriever(path))


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

    config = EngineConfig(
        backbone="paper",
        model_path=model_dir,
        adapter_path=adapter_dir,
        device="cpu",
        retrieval=RetrievalConfig(top_k=top_k),
        generation=GenerationConfig(max_new_tokens=max_new_tokens),
    )
    retriever = _retriever(embedder_dir, kb_dir) if embedder_dir and kb_dir else None
    return Engine.from_config(config, retriever=retriever)


def export_model(final: Path, work: Path, out: Path) -> None:
    """Copy a training run's ``final/`` (base as fp16) and the work folder's CLIP + KB to ``out``."""
    from engine.demo.fp16 import copy_safetensors_fp16

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


def write_manifest(out: Path, work: Path, recipe, scores: dict, extra: dict | None = None) -> Path:
    """Write ``out/demo.json`` (see the module docstring); returns its path."""
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
    for key in ("raster_info",):  # written by assets/build_demo.py
        if key in previous:
            manifest[key] = previous[key]
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _seed_range(seeds: list[int]) -> str:
    return f"{min(seeds)}..{max(seeds)} ({len(seeds)} scenes)" if seeds else "none"


def _timing(run: Path) -> dict:
    path = run / "timing.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
