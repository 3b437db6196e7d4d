"""Metrics of the applications: classification (accuracy, F1, confusion matrix) and point and
interval forecasts (MAE, RMSE, sMAPE, MASE, pinball loss, coverage).

Plain numpy on arrays, each a few lines, so a reader can check them by hand; the tests compare
them with hand-computed values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "accuracy",
    "confusion_matrix",
    "coverage",
    "f1_score",
    "mae",
    "mase",
    "pinball",
    "rmse",
    "seasonal_naive_scale",
    "smape",
]


def _pair(y_true, y_pred, name: str = "y_pred") -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(y_true), np.asarray(y_pred)
    if a.shape != b.shape:
        raise ValueError(f"{name} should have the shape of y_true {a.shape}, got {b.shape}")
    if a.size == 0:
        raise ValueError("y_true is empty")
    return a, b


# --------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """The fraction of predictions equal to the labels."""
    a, b = _pair(y_true, y_pred)
    return float(np.mean(a == b))


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """``(num_classes, num_classes)`` counts: row = true label, column = predicted label."""
    a, b = _pair(y_true, y_pred)
    out = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(out, (a.astype(int), b.astype(int)), 1)
    return out


def f1_score(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int = 2) -> float:
    """F1 of the positive class (label 1) for two classes; the macro average (the unweighted mean
    of each class's F1) for more. ``F1 = 2 TP / (2 TP + FP + FN)``, 0 for a class never seen."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(float)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    denom = 2 * tp + fp + fn
    per_class = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(per_class[1]) if num_classes == 2 else float(per_class.mean())


# --------------------------------------------------------------------------------------------
# Forecasts
# --------------------------------------------------------------------------------------------


def mae(y_true, y_pred) -> float:
    """Mean absolute error."""
    a, b = _pair(y_true, y_pred)
    return float(np.mean(np.abs(a - b)))


def rmse(y_true, y_pred) -> float:
    """Root mean squared error."""
    a, b = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((a - b) ** 2)))


def smape(y_true, y_pred) -> float:
    """Symmetric MAPE in percent: ``200/n Σ |F - A| / (|A| + |F|)`` (a term with ``A = F = 0``
    counts 0)."""
    a, b = _pair(y_true, y_pred)
    num, den = np.abs(b - a), np.abs(a) + np.abs(b)
    return float(200 * np.mean(np.divide(num, den, out=np.zeros_like(num, float), where=den > 0)))


def seasonal_naive_scale(history, period: int) -> float:
    """MASE's denominator: the in-sample MAE of the seasonal naive forecast ``y[t-period]``,
    ``mean |y[t] - y[t-period]|`` over ``history``."""
    h = np.asarray(history, dtype=float)
    if period < 1 or len(h) <= period:
        raise ValueError(f"history of {len(h)} values is too short for period {period}")
    scale = float(np.mean(np.abs(h[period:] - h[:-period])))
    if not scale > 0:
        raise ValueError("history is constant at the seasonal lag: MASE is undefined")
    return scale


def mase(y_true, y_pred, history=None, period: int = 1, scale: float | None = None) -> float:
    """Mean absolute scaled error: ``MAE / seasonal_naive_scale(history, period)`` (or ``scale``
    when given). Below 1: better than the in-sample seasonal naive forecast."""
    if scale is None:
        if history is None:
            raise ValueError("mase needs history (the in-sample values) or scale")
        scale = seasonal_naive_scale(history, period)
    return mae(y_true, y_pred) / scale


def pinball(y_true, y_quantile, q: float) -> float:
    """Mean pinball (quantile) loss at level ``q``: ``max(q (y - ŷ), (q - 1)(y - ŷ))``."""
    a, b = _pair(y_true, y_quantile)
    if not 0 < q < 1:
        raise ValueError(f"q should be in (0, 1), got {q}")
    d = a - b
    return float(np.mean(np.maximum(q * d, (q - 1) * d)))


def coverage(y_true, lower, upper) -> float:
    """The fraction of ``y_true`` inside ``[lower, upper]``."""
    a, lo = _pair(y_true, lower, "lower")
    _, hi = _pair(y_true, upper, "upper")
    return float(np.mean((a >= lo) & (a <= hi)))
