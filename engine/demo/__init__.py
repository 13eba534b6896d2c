"""The demo model: a tiny ``paper``-architecture model trained on synthetic scenes, shipped in
``assets/demo`` with its retriever and a demo raster (labelled a demo everywhere).

Use it::

    from engine.demo import load_demo_engine
    engine = load_demo_engine()                       # assets/demo/demo.json
    answer = engine.run(crop_rgb_uint8, "ground", question="the building with a red roof")

Rebuild it: ``python assets/build_demo.py`` (the build is ``lab.demo``, which the engine never
imports). Importing this package is cheap; torch loads when an engine is built.
"""

from engine.demo.manifest import (
    DEMO_DIR,
    DEMO_MANIFEST,
    DemoManifest,
    demo_engine_config,
    load_demo_engine,
    load_demo_retriever,
    read_demo_manifest,
)

__all__ = [
    "DEMO_DIR",
    "DEMO_MANIFEST",
    "DemoManifest",
    "demo_engine_config",
    "load_demo_engine",
    "load_demo_retriever",
    "read_demo_manifest",
]
