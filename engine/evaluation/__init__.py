"""Evaluation (paper IV-A2): run an engine over a dataset, score it, print the paper's table.

``python -m engine.evaluate --task ask|classify|ground|caption|region --data PATH ...``; in code::

    from engine.evaluation import predict, summarize

    predictions = predict(engine, samples)
    table = summarize("ground", samples, predictions).table()  # the paper's table, as text
"""

from engine.evaluation.report import EvalOptions, EvalReport, summarize
from engine.evaluation.runner import Prediction, predict, write_predictions

__all__ = ["EvalOptions", "EvalReport", "Prediction", "predict", "summarize", "write_predictions"]
