"""``python -m engine.evaluate``: the evaluation CLI (see :mod:`engine.evaluation.cli`)."""

from engine.evaluation.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
