"""GeoLens lab: what builds, trains and diagnoses the demo model; nothing a user runs in the app.

- :mod:`lab.synthetic`: the synthetic scene generator (georeferenced scenes with known
  footprints), its instruction samples and datasets on disk (``python -m lab.synthetic``);
- :mod:`lab.demo`: the demo model's recipe and build (``python assets/build_demo.py``), the demo
  raster, the scores on fresh synthetic scenes and the layout probe
  (``python -m lab.demo.layout_probe``).

Dependency rule (tested on the import graph): ``lab`` uses ``engine`` and ``tiles``; ``app``,
``engine`` and ``tiles`` never import ``lab``. What the app needs to *load* the shipped demo
(``assets/demo/demo.json``) lives in :mod:`engine.demo`. The history of the experiments run with
this code is in ``docs/lab.md``.
"""
