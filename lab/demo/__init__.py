"""Building the demo model (a tiny ``paper``-architecture model trained on synthetic scenes).

- :mod:`lab.demo.recipe`: :class:`~lab.demo.recipe.DemoRecipe`, every size, seed and budget;
- :mod:`lab.demo.build`: the build steps (``python assets/build_demo.py``);
- :mod:`lab.demo.tokenizer`, :mod:`lab.demo.base`, :mod:`lab.demo.clip`,
  :mod:`lab.demo.vision_pretrain`: the tokenizer, the random base, the tiny CLIP, stage 0;
- :mod:`lab.demo.export`: the shipped copy in ``assets/demo`` and its ``demo.json``;
- :mod:`lab.demo.raster`: the demo raster (a GeoTIFF, through ``tiles``);
- :mod:`lab.demo.synthetic_eval`: scores on fresh synthetic scenes (recorded in ``demo.json``);
- :mod:`lab.demo.layout_probe`: linear probes of the image tokens' layout through the LLM.

Loading the shipped demo is :mod:`engine.demo` (the app needs it; it never imports ``lab``).
"""
