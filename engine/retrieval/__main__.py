"""Entry point for ``python -m engine.retrieval`` (see :mod:`engine.retrieval.cli`)."""

import sys

from engine.retrieval.cli import main

sys.exit(main())
