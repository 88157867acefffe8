"""Probability calibration: temperature scaling (Guo et al. 2017) and the expected calibration
error with its reliability curve.

Temperature scaling divides the logits by one scalar ``T > 0`` fitted by minimising the negative
log-likelihood of held-out labels. It leaves every predicted class unchanged (argmax is invariant)
and only makes the probabilities mean what they say.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "ReliabilityCurve",
    "expected_calibration_error",
    "fit_temperature",
    "reliability_curve",
    "softmax",
]


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise ``softmax(logits / temperature)`` in float64, shape of ``logits`` ``(N, K)``."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(logits: np.ndarray, y: np.ndarray, *, max_iter: int = 200) -> float:
    """The temperature ``T`` minimising the mean NLL of ``softmax(logits / T)`` on labels ``y``.

    Parameters
    ----------
    logits : ndarray
        Held-out logits ``(N, K)`` (patients the model was not trained on).
    y : ndarray
        Class indices ``(N,)``.
    max_iter : int
        L-BFGS iterations on ``log T`` (the NLL is smooth and one-dimensional).

    Returns
    -------
    float
        ``T`` in ``[1e-2, 1e2]``; 1.0 when ``logits`` is empty.

    Examples
    --------
    >>> z = np.array([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0], [0.0, 4.0]])
    >>> fit_temperature(z, np.array([0, 1, 1, 0])) > 1      # over-confident: T > 1 softens
    True
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if z.ndim != 2 or y.shape != (z.shape[0],):
        raise ValueError(f"logits must be (N, K) and y (N,), got {z.shape} and {y.shape}")
    if len(y) == 0:
        return 1.0
    if y.min() < 0 or y.max() >= z.shape[1]:
        raise ValueError(f"y must lie in [0, {z.shape[1] - 1}]")
    zt, yt = torch.from_numpy(z), torch.from_numpy(y)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(zt / log_t.exp(), yt)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    return float(min(max(t, 1e-2), 1e2)) if math.isfinite(t) else 1.0


@dataclass(frozen=True)
class ReliabilityCurve:
    """Per confidence bin: mean confidence, accuracy and the number of spectra.

    Shapes
    ------
    ``edges`` ``(B + 1,)``; ``confidence``, ``accuracy`` ``(B,)`` (NaN for empty bins);
    ``count`` ``(B,)``.
    """

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray

    @property
    def ece(self) -> float:
        """``Σ_b (n_b / N) |accuracy_b − confidence_b|`` over non-empty bins."""
        n = self.count.sum()
        if n == 0:
            return float("nan")
        full = self.count > 0
        gap = np.abs(self.accuracy[full] - self.confidence[full])
        return float((self.count[full] / n * gap).sum())


def reliability_curve(
    probabilities: np.ndarray, y: np.ndarray, *, bins: int = 15
) -> ReliabilityCurve:
    """Confidence (the top probability) against accuracy in ``bins`` equal-width bins on [0, 1].

    Parameters
    ----------
    probabilities : ndarray
        ``(N, K)``, rows summing to 1.
    y : ndarray
        ``(N,)`` true class indices.
    bins : int, default 15
    """
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(y)
    if p.ndim != 2 or y.shape != (p.shape[0],):
        raise ValueError(f"probabilities must be (N, K) and y (N,), got {p.shape} and {y.shape}")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    conf = p.max(axis=1) if len(p) else np.zeros(0)
    correct = (p.argmax(axis=1) == y) if len(p) else np.zeros(0, bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # bin b holds confidences in (edges[b], edges[b+1]]; a confidence of exactly 0 joins bin 0
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, weights=conf, minlength=bins) / count
        acc = np.bincount(which, weights=correct.astype(np.float64), minlength=bins) / count
    return ReliabilityCurve(edges, mean_conf, acc, count)


def expected_calibration_error(
    probabilities: np.ndarray, y: np.ndarray, *, bins: int = 15
) -> float:
    """ECE of ``probabilities`` ``(N, K)`` on labels ``y`` ``(N,)`` (see :class:`ReliabilityCurve`)."""
    return reliability_curve(probabilities, y, bins=bins).ece
