"""``python -m lab.synthetic OUT_DIR --scenes N --seed S``: write a synthetic dataset."""

from lab.synthetic.dataset import main

main()
