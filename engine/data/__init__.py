"""Datasets for training and evaluation: the instruction format and the benchmark loaders.

- :mod:`engine.data.instructions`: :class:`Sample` and JSONL read/write;
- :mod:`engine.data.boxes`: pixel boxes <-> the adapter's 0-1000 grid, oriented boxes;
- :mod:`engine.data.formats`: registry of benchmark loaders (RSVQA, DIOR-RSVG, DIOR OBB, DOTA,
  scene folders, caption files, LEVIR-CC change captions, our JSONL).

The synthetic scene generator the demo model is trained on is :mod:`lab.synthetic` (it writes
datasets in this instruction format).

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
from engine.data.levir_cc import load_levir_cc
from engine.data.rsvqa import load_rsvqa
from engine.data.scenes import load_scene_folders

__all__ = [
    "FORMATS",
    "GridBox",
    "Sample",
    "aabb_px",
    "box_to_grid",
    "get_loader",
    "grid_to_box",
    "iter_jsonl",
    "load_captions",
    "load_dataset",
    "load_dior_obb",
    "load_dior_rsvg",
    "load_dota",
    "load_levir_cc",
    "load_rsvqa",
    "load_scene_folders",
    "min_area_box_px",
    "oriented_box_px",
    "read_dota_labels",
    "read_jsonl",
    "read_rgb",
    "write_jsonl",
]
