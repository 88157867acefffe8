"""The linear baseline of the DRR paper: rank m/z bins by ROC AUC, keep the top N, LDA."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["LinearBaseline", "LinearFit", "roc_auc_per_feature"]


def roc_auc_per_feature(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """One-vs-rest ROC AUC of every feature (column) for every class, shape ``(K, L)``.

    Computed from average ranks (Mann–Whitney U), so ties count one half.

    Shapes
    ------
    ``x`` ``(N, L)``, ``y`` ``(N,)`` integer classes ``0..K-1``.
    """
    from scipy.stats import rankdata

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    ranks = rankdata(x, axis=0)
    classes = np.unique(y)
    out = np.empty((int(classes.max()) + 1, x.shape[1]))
    out.fill(np.nan)
    for c in classes:
        pos = y == c
        n1, n0 = int(pos.sum()), int((~pos).sum())
        if n1 == 0 or n0 == 0:
            continue
        out[c] = (ranks[pos].sum(0) - n1 * (n1 + 1) / 2) / (n1 * n0)
    return out


@dataclass(frozen=True)
class LinearFit:
    """A fitted linear baseline: selected features, the LDA and the validation scores."""

    features: np.ndarray  # (N_sel,) column indices into the spectrum
    n_features: int
    lda: object  # sklearn LinearDiscriminantAnalysis
    validation_scores: dict[int, float]

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """Class scores ``(N, K)`` (for two classes: ``[-s/2, s/2]`` with ``s`` LDA's score)."""
        s = self.lda.decision_function(np.asarray(x)[:, self.features])  # type: ignore[attr-defined]
        if s.ndim == 1:
            s = np.stack([-s / 2, s / 2], axis=1)
        return s

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted class indices ``(N,)`` of spectra ``x`` ``(N, L)``."""
        return self.decision_function(x).argmax(1)

    def coefficients(self, length: int) -> np.ndarray:
        """Linear weights ``(K, length)`` of each class score on the full spectrum."""
        coef = np.asarray(self.lda.coef_, dtype=np.float64)  # type: ignore[attr-defined]
        if coef.shape[0] == 1:
            coef = np.concatenate([-coef / 2, coef / 2])
        full = np.zeros((coef.shape[0], length))
        full[:, self.features] = coef
        return full

    def relevance(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Gradient × input of the true-class score, ``r = x ⊙ w_y``, shape ``(N, L)``."""
        x = np.asarray(x, dtype=np.float64)
        return x * self.coefficients(x.shape[1])[np.asarray(y)]


class LinearBaseline:
    """ROC-AUC feature ranking + LDA with uniform priors (the papers' baseline).

    Bins are ranked by ``max_c |AUC_c - 0.5|`` on the training data; the top ``N`` are kept, with
    ``N`` chosen from ``grid`` by balanced accuracy on validation data (or the largest grid value
    that fits without validation data); LDA ('svd' solver, no shrinkage) with uniform priors.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.random((40, 30)), np.repeat([0, 1], 20)
    >>> fit = LinearBaseline(grid=(5, 10)).fit(x, y)
    >>> fit.predict(x).shape
    (40,)
    """

    def __init__(self, *, grid: Sequence[int] = (5, 10, 20, 40, 60, 80, 100, 125, 150, 175, 200)):
        grid = tuple(int(g) for g in grid)
        if not grid or min(grid) < 1:
            raise ValueError(f"LinearBaseline: grid must hold ints >= 1, got {grid!r}")
        self.grid = tuple(sorted(set(grid)))

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        x_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
    ) -> LinearFit:
        """Rank features on ``(x, y)``, choose ``N`` on ``(x_val, y_val)``, fit the LDA."""
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y)
        k = int(y.max()) + 1
        if len(np.unique(y)) < 2:
            raise ValueError("LinearBaseline.fit: the training data hold a single class")
        auc = roc_auc_per_feature(x, y)
        score = np.nanmax(np.abs(auc - 0.5), axis=0)
        order = np.argsort(-score, kind="stable")
        priors = np.full(k, 1.0 / k)

        def fit_n(n: int):
            feats = np.sort(order[:n])
            lda = LinearDiscriminantAnalysis(solver="svd", priors=priors)
            lda.fit(x[:, feats], y)
            return feats, lda

        grid = [n for n in self.grid if n <= x.shape[1]] or [x.shape[1]]
        scores: dict[int, float] = {}
        if x_val is not None and y_val is not None and len(y_val):
            from doublebackprop.msi.experiment.metrics import balanced_accuracy

            best_n, best = grid[-1], -math.inf
            for n in grid:
                feats, lda = fit_n(n)
                pred = lda.predict(np.asarray(x_val, dtype=np.float64)[:, feats])
                scores[n] = balanced_accuracy(np.asarray(y_val), pred, num_classes=k)
                if scores[n] > best:
                    best_n, best = n, scores[n]
        else:
            best_n = grid[-1]
        feats, lda = fit_n(best_n)
        return LinearFit(features=feats, n_features=best_n, lda=lda, validation_scores=scores)
