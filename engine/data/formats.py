"""Registry of dataset formats: a name -> the loader that turns files into samples.

``load_dataset("rsvqa", "data/rsvqa_lr")`` calls :func:`engine.data.rsvqa.load_rsvqa`; each
loader's own keyword options (``image_root=``, ``scale=``, ...) pass through unchanged. The
evaluation and training CLIs take ``--format NAME`` and resolve it here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from engine.data.captions import load_captions
from engine.data.dior import load_dior_obb, load_dior_rsvg
from engine.data.dota import load_dota
from engine.data.instructions import Sample, read_jsonl
from engine.data.levir_cc import load_levir_cc
from engine.data.rsvqa import load_rsvqa
from engine.data.scenes import load_scene_folders
from engine.errors import ConfigError

__all__ = ["FORMATS", "get_loader", "load_dataset"]

Loader = Callable[..., list[Sample]]

FORMATS: dict[str, Loader] = {
    "jsonl": read_jsonl,  # our own instruction format
    "rsvqa": load_rsvqa,  # RSVQA-LR / -HR: images/questions/answers JSON
    "dior_rsvg": load_dior_rsvg,  # VOC XML with <description>
    "dior_obb": load_dior_obb,  # DIOR <robndbox> XML
    "dota": load_dota,  # DOTA labelTxt: 8 corner coordinates, class, difficulty
    "scene_folders": load_scene_folders,  # root/<class>/<image>
    "captions": load_captions,  # <split>_caps.txt + <split>_filename.txt
    "levir_cc": load_levir_cc,  # LevirCCcaptions.json + <split>/A, <split>/B change pairs
}


def get_loader(name: str) -> Loader:
    """The loader registered under ``name``; the error lists the known formats."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ConfigError(
            f"unknown dataset format {name!r}; known formats: {', '.join(sorted(FORMATS))}"
        ) from None


def load_dataset(name: str, path: str | Path, **options) -> list[Sample]:
    """Samples of the dataset at ``path`` in format ``name`` (options go to that loader)."""
    loader = get_loader(name)
    params = list(inspect.signature(loader).parameters)[1:]
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ConfigError(f"format {name!r} has no option(s) {unknown}; its options are: {params}")
    return loader(path, **options)
