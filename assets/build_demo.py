"""Rebuild everything in ``assets/demo``: the demo model and the demo raster (see
:mod:`lab.demo.cli` for the options).

    python assets/build_demo.py                  # full build (about 9 h on 2 CPU cores)
    python assets/build_demo.py --raster-only    # only demo_scene.tif (+ ground truth), seconds
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.demo.cli import main  # noqa: E402  (after the repository is on sys.path)

if __name__ == "__main__":
    raise SystemExit(main())
