"""Datasets for training and evaluation: instruction format, benchmark loaders, synthetic scenes.

- :mod:`engine.data.instructions`: :class:`Sample` and JSONL read/write;
- :mod:`engine.data.boxes`: pixel boxes <-> the adapter's 0-1000 grid, oriented boxes;
- :mod:`engine.data.formats`: registry of benchmark loaders (RSVQA, DIOR-RSVG, DIOR OBB, DOTA,
  scene folders, caption files, our JSONL);
- :mod:`engine.data.synthetic` (+ ``synthetic_tasks``, ``synthetic_dataset``): georeferenced
  synthetic scenes with known footprints, their instruction samples and datasets on disk.

Images are read with PIL; nothing here imports rasterio, torch or the ``tiles`` package.
"""

from engine.data.boxes import (
    GridBox,
    aabb_px,
    box_to_grid,
    grid_to_box,
    min_area_box_px,
    oriented_box_px,
)
from engine.data.captions import load_captions
from engine.data.dior import load_dior_obb, load_dior_rsvg
from engine.data.dota import load_dota, read_dota_labels
from engine.data.formats import FORMATS, get_loader, load_dataset
from engine.data.images import read_rgb
from engine.data.instructions import Sample, iter_jsonl, read_jsonl, write_jsonl
from engine.data.rsvqa import load_rsvqa
from engine.data.scenes import load_scene_folders
from engine.data.synthetic import SceneObject, SyntheticScene, generate_scene
from engine.data.synthetic_dataset import DatasetManifest, build_dataset
from engine.data.synthetic_mosaic import generate_mosaic
from engine.data.synthetic_tasks import corpus_records, make_samples

__all__ = [
    "FORMATS",
    "DatasetManifest",
    "GridBox",
    "Sample",
    "SceneObject",
    "SyntheticScene",
    "aabb_px",
    "box_to_grid",
    "build_dataset",
    "corpus_records",
    "generate_mosaic",
    "generate_scene",
    "get_loader",
    "grid_to_box",
    "iter_jsonl",
    "load_captions",
    "load_dataset",
    "load_dior_obb",
    "load_dior_rsvg",
    "load_dota",
    "load_rsvqa",
    "load_scene_folders",
    "make_samples",
    "min_area_box_px",
    "oriented_box_px",
    "read_dota_labels",
    "read_jsonl",
    "read_rgb",
    "write_jsonl",
]
