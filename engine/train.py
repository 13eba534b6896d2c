"""``python -m engine.train``: the training CLI (see :mod:`engine.training.cli`)."""

from engine.training.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
