"""The shipped demo: ``assets/demo/demo.json`` and loading the engine it describes.

``demo.json`` (paths relative to it)::

    {"label": "GeoLens demo model — tiny, trained on synthetic scenes; not for real imagery",
     "backbone": "paper", "model": "model", "adapter": "adapter",
     "retrieval": {"embedder": "clip", "kb": "kb", "top_k": 3},
     "raster": "demo_scene.tif", "recommended_region_m": 64,
     "scene_classes": ["rural", "urban", "industrial"],
     "recipe": {...}, "training": {...}, "metrics": {...}}

:func:`load_demo_engine` returns a ready :class:`engine.Engine` (the demo model with its
retriever); :func:`demo_engine_config` gives the :class:`engine.EngineConfig` alone, and
:func:`load_demo_retriever` the retriever, for callers that build the engine themselves
(``Engine.from_config(config, retriever=...)``): the demo CLIP is a saved
:class:`engine.retrieval.ClipEmbedder` directory, not an open_clip checkpoint file.

:class:`DemoManifest` also carries the facts the app shows: the label, the scene classes the
model was trained to name and the ground size of its training crops. The build that writes
``demo.json`` is ``lab.demo`` (``python assets/build_demo.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engine.config import EngineConfig, GenerationConfig, RetrievalConfig
from engine.errors import ConfigError, WeightsNotFoundError

__all__ = [
    "DEMO_DIR",
    "DEMO_MANIFEST",
    "DemoManifest",
    "demo_engine_config",
    "load_demo_engine",
    "load_demo_retriever",
    "read_demo_manifest",
]

DEMO_DIR = Path(__file__).resolve().parents[2] / "assets" / "demo"
DEMO_MANIFEST = DEMO_DIR / "demo.json"


@dataclass(frozen=True)
class DemoManifest:
    """``demo.json`` with its paths resolved against the file's folder. ``scene_classes``: the
    labels the model was trained to classify; ``recommended_region_m``: the ground size of its
    training crops (metres on a side)."""

    path: Path
    label: str
    scene_classes: tuple[str, ...]
    recommended_region_m: float
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
                scene_classes=tuple(str(name) for name in data["scene_classes"]),
                recommended_region_m=float(data["recommended_region_m"]),
                model_dir=root / data["model"],
                adapter_dir=root / data["adapter"],
                embedder_dir=root / retrieval["embedder"] if retrieval else None,
                kb_dir=root / retrieval["kb"] if retrieval else None,
                top_k=int(retrieval.get("top_k", 3)),
                raster=root / data["raster"] if data.get("raster") else None,
                data=data,
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
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
