"""Synthetic georeferenced scenes with known footprints, their instruction samples and datasets.

- :mod:`lab.synthetic.scene`: :class:`SceneObject`, :class:`SyntheticScene`, the scene builder;
- :mod:`lab.synthetic.canvas`, :mod:`lab.synthetic.draw`, :mod:`lab.synthetic.layouts`: drawing
  and the rural / urban / industrial layouts; :func:`generate_scene`;
- :mod:`lab.synthetic.mosaic`: several scenes in one raster (the demo raster);
- :mod:`lab.synthetic.views`, :mod:`lab.synthetic.text`, :mod:`lab.synthetic.tasks`: crops,
  phrases and the instruction samples (:class:`engine.data.instructions.Sample`) of a scene;
- :mod:`lab.synthetic.dataset`: datasets on disk (``python -m lab.synthetic OUT_DIR``);
- :mod:`lab.synthetic.change`: before/after change pairs with change truth
  (``python -m lab.synthetic.change OUT_DIR``); :mod:`lab.synthetic.twin`: the demo raster's
  "before" twin.

Pure numpy (+ PIL to write PNGs): nothing here imports rasterio, torch or ``tiles``.
"""

from lab.synthetic.dataset import DatasetManifest, build_dataset
from lab.synthetic.layouts import generate_scene
from lab.synthetic.mosaic import generate_mosaic
from lab.synthetic.scene import SCENE_CLASSES, SceneObject, SyntheticScene
from lab.synthetic.tasks import corpus_records, make_samples

__all__ = [
    "SCENE_CLASSES",
    "DatasetManifest",
    "SceneObject",
    "SyntheticScene",
    "build_dataset",
    "corpus_records",
    "generate_mosaic",
    "generate_scene",
    "make_samples",
]
