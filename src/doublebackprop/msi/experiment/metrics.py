"""Balanced accuracy at spot and patient level, with bootstrap confidence intervals over patients.

Balanced accuracy is the mean of the per-class recalls over the classes present in the truth.
Patient-level predictions are the majority vote of a patient's spots (ties go to the lowest class
index, as in the authors' ``aggregate`` with ``'max'``). Confidence intervals resample *patients*
with replacement (spots of one patient are not independent) and recompute both levels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["balanced_accuracy", "patient_vote", "Score", "score_predictions"]


def balanced_accuracy(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    *,
    num_classes: int | None = None,
    weight: np.ndarray | None = None,
) -> float:
    """Mean per-class recall over the classes present in ``y_true`` (``weight``: sample counts).

    Parameters
    ----------
    y_true, y_pred : ndarray
        Class indices ``(N,)``.
    num_classes : int or None
        Number of classes (default: inferred from both arrays).
    weight : ndarray or None
        ``(N,)`` non-negative sample counts (e.g. spots behind a patient vote).

    Examples
    --------
    >>> balanced_accuracy(np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1]))
    0.8333333333333333
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    if y_true.size == 0:
        return float("nan")
    w = np.ones(len(y_true)) if weight is None else np.asarray(weight, dtype=np.float64)
    k = num_classes or int(max(y_true.max(), y_pred.max())) + 1
    total = np.bincount(y_true, weights=w, minlength=k)
    hit = np.bincount(y_true, weights=w * (y_true == y_pred), minlength=k)
    present = total > 0
    return float(np.mean(hit[present] / total[present]))


def patient_vote(
    y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Majority vote per group: ``(group_ids, true_label, voted_label)`` (ties → lowest class).

    Parameters
    ----------
    y_true, y_pred : ndarray
        Class indices ``(N,)`` per spot.
    groups : ndarray
        ``(N,)`` group (patient) of every spot.
    num_classes : int
    """
    groups = np.asarray(groups)
    uniq, inv = np.unique(groups, return_inverse=True)
    votes = np.zeros((len(uniq), num_classes))
    np.add.at(votes, (inv, np.asarray(y_pred)), 1)
    truth = np.zeros(len(uniq), dtype=np.int64)
    truth[inv] = np.asarray(y_true)
    return uniq, truth, votes.argmax(1)


@dataclass(frozen=True)
class Score:
    """Spot- and patient-level balanced accuracy with bootstrap percentile intervals."""

    spot: float
    spot_ci: tuple[float, float]
    patient: float
    patient_ci: tuple[float, float]
    n_spots: int
    n_patients: int


def _levels(
    y: np.ndarray, preds: np.ndarray, inv: np.ndarray, n_groups: int, k: int, counts: np.ndarray
) -> tuple[float, float]:
    """Balanced accuracies (mean over seeds) with per-group multiplicities ``counts``."""
    w = counts[inv].astype(np.float64)
    spot, patient = [], []
    truth = np.zeros(n_groups, dtype=np.int64)
    truth[inv] = y
    keep = counts > 0
    for p in preds:
        spot.append(balanced_accuracy(y, p, num_classes=k, weight=w))
        votes = np.zeros((n_groups, k))
        np.add.at(votes, (inv, p), 1)
        patient.append(
            balanced_accuracy(
                truth[keep], votes.argmax(1)[keep], num_classes=k, weight=counts[keep]
            )
        )
    return float(np.mean(spot)), float(np.mean(patient))


def score_predictions(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    groups: np.ndarray,
    *,
    num_classes: int,
    n_bootstrap: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Score:
    """Score spot predictions; ``y_pred`` is ``(N,)`` or ``(S, N)`` (several seeds: mean score).

    ``groups`` are the patient ids (for pooled directions, pass ``patient`` — a patient tested in
    two labs is one resampling unit and one vote per lab is made by passing ``patient@lab``).

    Parameters
    ----------
    y_true : ndarray
        ``(N,)`` class indices.
    y_pred : ndarray
        ``(N,)`` or ``(S, N)`` predicted class indices.
    groups : ndarray
        ``(N,)`` patient ids (the bootstrap's resampling unit and the voters).
    num_classes : int
    n_bootstrap : int, default 1000
        Bootstrap resamples of patients for the confidence intervals (0: none).
    seed : int, default 0
    level : float, default 0.95
        Confidence level of the intervals.

    Examples
    --------
    >>> s = score_predictions(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 0]),
    ...                       np.array(["a", "a", "b", "c"]), num_classes=2, n_bootstrap=10)
    >>> s.spot, s.patient
    (0.75, 0.75)
    """
    y = np.asarray(y_true).astype(np.int64)
    preds = np.atleast_2d(np.asarray(y_pred)).astype(np.int64)
    if preds.shape[1] != len(y):
        raise ValueError(f"y_pred has {preds.shape[1]} spots, y_true {len(y)}")
    uniq, inv = np.unique(np.asarray(groups), return_inverse=True)
    ones = np.ones(len(uniq), dtype=np.int64)
    spot, patient = _levels(y, preds, inv, len(uniq), num_classes, ones)
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(n_bootstrap):
        counts = np.bincount(rng.integers(0, len(uniq), len(uniq)), minlength=len(uniq))
        boot.append(_levels(y, preds, inv, len(uniq), num_classes, counts))
    if boot:
        arr = np.asarray(boot)
        q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
        s_lo, s_hi = (float(v) for v in np.nanpercentile(arr[:, 0], q))
        p_lo, p_hi = (float(v) for v in np.nanpercentile(arr[:, 1], q))
        s_ci, p_ci = (s_lo, s_hi), (p_lo, p_hi)
    else:
        s_ci = p_ci = (float("nan"), float("nan"))
    return Score(
        spot=spot,
        spot_ci=s_ci,
        patient=patient,
        patient_ci=p_ci,
        n_spots=len(y),
        n_patients=len(uniq),
    )
