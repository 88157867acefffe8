"""Interpreting tumour-typing models: relevance spectra, sparsity, biomarker hits, ion images.

The relevance of a spot is the DRR paper's ``r = x ⊙ ∇_x z_y`` (gradient × input of the
true-class logit), computed with the model in eval mode. Summaries accumulate over spots so the
experiment never holds all relevance maps at once:

* mean relevance spectrum per class (``Σ r / n_c``), plotted against m/z;
* sparsity: the fraction of a spot's |r| mass in its top 1 % of bins, and the Gini coefficient
  of |r| (0 = uniform, → 1 = one bin), both averaged over spots;
* with simulated data, the fraction of all |r| mass within ± 0.5 Da of the true biomarker peaks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = [
    "RelevanceSummary",
    "model_relevance",
    "linear_relevance",
    "top_mass_fraction",
    "gini",
    "biomarker_mask",
    "prediction_images",
    "CoreImage",
]


def model_relevance(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 256,
    engine: str = "adjoint",
) -> np.ndarray:
    """``r = x ⊙ ∇_x z_y`` for every spot (eval mode), shape ``(N, L)``.

    Parameters
    ----------
    model : torch.nn.Module
        Returns logits ``(N, K)``; evaluated in eval mode (its flags are restored).
    x : ndarray or Tensor
        Spectra ``(N, L)``.
    y : ndarray or Tensor
        Class indices ``(N,)``: the logit whose gradient is taken (DRR's true class).
    batch_size : int, default 256
    engine : str, default "adjoint"
        The engine of :func:`doublebackprop.input_gradient`.

    Examples
    --------
    >>> from doublebackprop.msi.models import IsotopeNet
    >>> r = model_relevance(IsotopeNet(60, 2), np.random.rand(3, 60), np.array([0, 1, 0]))
    >>> r.shape
    (3, 60)
    """
    from doublebackprop.attribution import gradient_x_input
    from doublebackprop.common.training import eval_mode

    param = next(model.parameters())
    xt = torch.as_tensor(np.asarray(x), dtype=param.dtype)
    yt = torch.as_tensor(np.asarray(y)).long()
    if yt.shape != (xt.shape[0],):
        raise ValueError(f"y must have shape ({xt.shape[0]},), got {tuple(yt.shape)}")
    device = param.device
    out = []
    with eval_mode(model):
        for i in range(0, len(xt), batch_size):
            xb = xt[i : i + batch_size].to(device)
            yb = yt[i : i + batch_size].to(device)
            out.append(gradient_x_input(model, xb, yb, engine=engine).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, xt.shape[1]), np.float32)


def linear_relevance(fit: object, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``r = x ⊙ w_y`` of a fitted :class:`~doublebackprop.msi.models.LinearFit`."""
    return fit.relevance(x, y)  # type: ignore[attr-defined]


def top_mass_fraction(r: np.ndarray, fraction: float = 0.01) -> np.ndarray:
    """Per row: share of ``Σ|r|`` held by its top ``fraction`` of bins (at least one bin)."""
    a = np.abs(np.atleast_2d(r)).astype(np.float64)
    k = max(1, math.ceil(fraction * a.shape[1]))
    top = -np.partition(-a, k - 1, axis=1)[:, :k]
    total = a.sum(1)
    return np.divide(top.sum(1), total, out=np.zeros_like(total), where=total > 0)


def gini(r: np.ndarray) -> np.ndarray:
    """Per row: Gini coefficient of ``|r|`` (0 for a constant or all-zero row).

    Examples
    --------
    >>> gini(np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]])).round(3).tolist()
    [0.0, 0.75]
    """
    a = np.sort(np.abs(np.atleast_2d(r)).astype(np.float64), axis=1)
    n = a.shape[1]
    total = a.sum(1)
    i = np.arange(1, n + 1)
    g = (2 * (a * i).sum(1)) / np.where(total > 0, n * total, 1) - (n + 1) / n
    return np.where(total > 0, g, 0.0)


def biomarker_mask(mz: np.ndarray, peaks: np.ndarray, tolerance: float = 0.5) -> np.ndarray:
    """Bins of ``mz`` within ``±tolerance`` of any of ``peaks``, shape ``(L,)`` bool."""
    mz = np.asarray(mz, dtype=np.float64)
    peaks = np.asarray(peaks, dtype=np.float64).ravel()
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    mask = np.zeros(mz.shape, dtype=bool)
    for p in peaks:
        lo, hi = np.searchsorted(mz, [p - tolerance, p + tolerance], side="left")
        hi = np.searchsorted(mz, p + tolerance, side="right")
        mask[lo:hi] = True
    return mask


@dataclass(frozen=True)
class RelevanceSummary:
    """Accumulated relevance of a set of spots.

    Shapes
    ------
    ``sum_r``, ``sum_abs`` ``(K, L)`` per true class; ``count`` ``(K,)``; ``top_fraction`` and
    ``gini`` ``(n,)`` per spot.
    """

    sum_r: np.ndarray
    sum_abs: np.ndarray
    count: np.ndarray
    top_fraction: np.ndarray
    gini: np.ndarray

    @classmethod
    def from_relevance(cls, r: np.ndarray, y: np.ndarray, num_classes: int) -> RelevanceSummary:
        """Summarise relevance ``r`` ``(N, L)`` of spots with true classes ``y`` ``(N,)``."""
        r = np.asarray(r, dtype=np.float64)
        y = np.asarray(y)
        sum_r = np.zeros((num_classes, r.shape[1]))
        sum_abs = np.zeros_like(sum_r)
        np.add.at(sum_r, y, r)
        np.add.at(sum_abs, y, np.abs(r))
        return cls(
            sum_r=sum_r,
            sum_abs=sum_abs,
            count=np.bincount(y, minlength=num_classes),
            top_fraction=top_mass_fraction(r),
            gini=gini(r),
        )

    def merge(self, other: RelevanceSummary) -> RelevanceSummary:
        """The summary of both spot sets."""
        return RelevanceSummary(
            sum_r=self.sum_r + other.sum_r,
            sum_abs=self.sum_abs + other.sum_abs,
            count=self.count + other.count,
            top_fraction=np.concatenate([self.top_fraction, other.top_fraction]),
            gini=np.concatenate([self.gini, other.gini]),
        )

    @property
    def mean_relevance(self) -> np.ndarray:
        """Mean ``r`` per class, ``(K, L)``."""
        return self.sum_r / np.maximum(self.count, 1)[:, None]

    @property
    def top_fraction_mean(self) -> float:
        return float(self.top_fraction.mean()) if self.top_fraction.size else float("nan")

    @property
    def gini_mean(self) -> float:
        return float(self.gini.mean()) if self.gini.size else float("nan")

    def mass_fraction(self, mask: np.ndarray) -> float:
        """Share of all ``|r|`` mass on the bins of ``mask``."""
        total = self.sum_abs.sum()
        return float(self.sum_abs[:, mask].sum() / total) if total > 0 else float("nan")


@dataclass(frozen=True)
class CoreImage:
    """Annotation and prediction of one core as images (−1 = no spot), cropped to the core."""

    name: str
    truth: np.ndarray  # (H, W) int
    pred: np.ndarray  # (H, W) int
    accuracy: float


def prediction_images(
    core: np.ndarray, x: np.ndarray, y: np.ndarray, truth: np.ndarray, pred: np.ndarray
) -> list[CoreImage]:
    """Per core, the true class and the predicted class of every spot as small images.

    Parameters
    ----------
    core : ndarray
        Core (or file) name of every spot.
    x, y : ndarray
        Pixel coordinates.
    truth, pred : ndarray
        True and predicted class indices.

    Shapes
    ------
    all ``(N,)``: core name, pixel coordinates, true and predicted class indices.
    """
    core = np.asarray(core).astype(str)
    out = []
    for name in sorted(set(core.tolist())):
        sel = core == name
        xs, ys = np.asarray(x)[sel], np.asarray(y)[sel]
        x0, y0 = xs.min(), ys.min()
        shape = (int(ys.max() - y0 + 1), int(xs.max() - x0 + 1))
        t_img = np.full(shape, -1, dtype=np.int64)
        p_img = np.full(shape, -1, dtype=np.int64)
        t_img[ys - y0, xs - x0] = np.asarray(truth)[sel]
        p_img[ys - y0, xs - x0] = np.asarray(pred)[sel]
        acc = float(np.mean(np.asarray(truth)[sel] == np.asarray(pred)[sel]))
        out.append(CoreImage(name=name, truth=t_img, pred=p_img, accuracy=acc))
    return out
