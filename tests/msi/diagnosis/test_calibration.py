"""Temperature scaling and ECE against explicit implementations written here."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from doublebackprop.msi.diagnosis.calibration import (
    expected_calibration_error,
    fit_temperature,
    reliability_curve,
    softmax,
)


def _nll(logits: np.ndarray, y: np.ndarray, t: float) -> float:
    z = logits / t
    z = z - z.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


def _ece_loop(p: np.ndarray, y: np.ndarray, bins: int) -> float:
    conf, pred = p.max(1), p.argmax(1)
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        sel = (conf > lo) & (conf <= hi) if b else (conf >= lo) & (conf <= hi)
        if sel.any():
            total += sel.mean() * abs((pred[sel] == y[sel]).mean() - conf[sel].mean())
    return total


@pytest.mark.parametrize("scale", [0.3, 1.0, 4.0])
def test_temperature_minimises_the_nll_like_a_scalar_search(scale):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 400)
    logits = rng.normal(size=(400, 3)) + 2.0 * np.eye(3)[y]
    logits *= scale  # over- or under-confident versions of the same scores
    t = fit_temperature(logits, y)
    ref = minimize_scalar(lambda lt: _nll(logits, y, np.exp(lt)), bounds=(-4, 4), method="bounded")
    assert t == pytest.approx(np.exp(ref.x), rel=1e-3)
    assert _nll(logits, y, t) <= _nll(logits, y, 1.0) + 1e-12
    # the argmax never changes
    np.testing.assert_array_equal(softmax(logits, t).argmax(1), logits.argmax(1))


def test_ece_equals_the_binned_definition():
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(4) * 0.5, size=500)
    y = rng.integers(0, 4, 500)
    for bins in (1, 10, 15):
        assert expected_calibration_error(p, y, bins=bins) == pytest.approx(_ece_loop(p, y, bins))
    curve = reliability_curve(p, y, bins=10)
    assert curve.count.sum() == 500


def test_perfectly_calibrated_and_confidently_wrong():
    y = np.array([0, 1, 0, 1])
    wrong = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert expected_calibration_error(wrong, y) == pytest.approx(1.0)
    right = np.eye(2)[y]
    assert expected_calibration_error(right, y) == pytest.approx(0.0)


def test_bad_input():
    with pytest.raises(ValueError, match=r"logits must be \(N, K\)"):
        fit_temperature(np.zeros(3), np.zeros(3, int))
    with pytest.raises(ValueError, match="y must lie in"):
        fit_temperature(np.zeros((2, 2)), np.array([0, 2]))
    assert fit_temperature(np.zeros((0, 2)), np.zeros(0, int)) == 1.0
