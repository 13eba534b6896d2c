"""``python -m engine.data OUT_DIR --scenes N --seed S``: write a synthetic instruction dataset."""

from engine.data.synthetic_dataset import main

main()
