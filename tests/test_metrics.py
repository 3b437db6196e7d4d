"""The application metrics against values computed by hand."""

import math

import numpy as np
import pytest
import torch

from lstm import metrics
from lstm.models.forecaster import pinball_loss


def test_classification_metrics_by_hand():
    y, p = [1, 0, 1, 1, 0], [1, 0, 0, 1, 1]
    assert metrics.accuracy(y, p) == pytest.approx(3 / 5)
    # rows true, columns predicted: true 0 -> (0: 1, 1: 1); true 1 -> (0: 1, 1: 2)
    assert metrics.confusion_matrix(y, p, 2).tolist() == [[1, 1], [1, 2]]
    # positive class: TP 2, FP 1, FN 1 -> 2*2 / (4 + 1 + 1)
    assert metrics.f1_score(y, p) == pytest.approx(4 / 6)
    # three classes, macro: class 0: TP1 FP0 FN1 -> 2/3; class 1: TP1 FP1 FN0 -> 2/3; class 2: 1
    assert metrics.f1_score([0, 0, 1, 2], [0, 1, 1, 2], 3) == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


def test_forecast_metrics_by_hand():
    y, p = [1.0, 2.0, 3.0], [2.0, 2.0, 1.0]
    assert metrics.mae(y, p) == pytest.approx(1.0)
    assert metrics.rmse(y, p) == pytest.approx(math.sqrt(5 / 3))
    assert metrics.smape(y, p) == pytest.approx(200 / 3 * (1 / 3 + 0 + 2 / 4))
    # in-sample seasonal naive (period 1) on [1, 3, 2, 4]: |2|, |1|, |2| -> 5/3
    assert metrics.seasonal_naive_scale([1, 3, 2, 4], 1) == pytest.approx(5 / 3)
    assert metrics.mase(y, p, history=[1, 3, 2, 4], period=1) == pytest.approx(0.6)
    # period 2 on [1, 3, 2, 4]: |1|, |1| -> 1
    assert metrics.mase(y, p, history=[1, 3, 2, 4], period=2) == pytest.approx(1.0)
    # pinball at 0.9: errors +1 (under) and -1 (over): 0.9 and 0.1
    assert metrics.pinball([1.0, 2.0], [0.0, 3.0], 0.9) == pytest.approx(0.5)
    assert metrics.coverage([1, 2, 3, 4], [0, 2.5, 2, 5], [2, 3, 3, 6]) == pytest.approx(0.5)


def test_torch_pinball_matches_numpy():
    rng = np.random.default_rng(0)
    y, pred = rng.normal(size=(4, 6)), rng.normal(size=(4, 6, 3))
    q = (0.1, 0.5, 0.9)
    ours = float(pinball_loss(torch.tensor(pred), torch.tensor(y), q))
    ref = np.mean([metrics.pinball(y, pred[..., k], level) for k, level in enumerate(q)])
    assert ours == pytest.approx(ref, rel=1e-12)


def test_metric_errors_name_the_problem():
    with pytest.raises(ValueError, match="shape"):
        metrics.mae([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="too short"):
        metrics.seasonal_naive_scale([1, 2], 2)
    with pytest.raises(ValueError, match="constant"):
        metrics.seasonal_naive_scale([1, 1, 1], 1)
