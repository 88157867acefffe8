"""Patient-grouped, class-stratified cross-validation and lab-wise train/test selection.

Spots of one patient are strongly correlated, so every split keeps a patient (group) whole:
a patient is never in two folds (docs/papers.md). Folds are balanced per class by a deterministic
greedy assignment (largest groups first, each to the fold holding the fewest spots of that class),
with ties broken by a seeded :class:`numpy.random.Generator`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

__all__ = ["assert_patient_disjoint", "fold_indices", "grouped_stratified_kfold", "lab_split"]

logger = logging.getLogger(__name__)


def _group_labels(labels: np.ndarray, groups: np.ndarray) -> dict[str, str]:
    out: dict[str, str] = {}
    for g, lab in zip(groups.tolist(), labels.tolist()):
        if out.setdefault(g, lab) != lab:
            raise ValueError(f"groups: patient {g!r} has two labels ({out[g]!r} and {lab!r})")
    return out


def grouped_stratified_kfold(
    labels: Sequence | np.ndarray, groups: Sequence | np.ndarray, n_splits: int = 5, seed: int = 0
) -> np.ndarray:
    """Fold id (0..n_splits-1) of every sample; groups never split, classes spread evenly.

    Parameters
    ----------
    labels, groups : (N,) class labels and patient ids; every group must have one label.
    n_splits : number of folds (at most the number of groups).
    seed : tie-breaking seed; the result is a pure function of the inputs.

    Returns
    -------
    (N,) int64 fold ids.

    Examples
    --------
    >>> folds = grouped_stratified_kfold(["a", "a", "b", "b"], ["p1", "p1", "p2", "p3"], 2)
    >>> sorted(set(folds.tolist()))
    [0, 1]
    """
    labels = np.asarray(labels).astype(str)
    groups = np.asarray(groups).astype(str)
    if labels.shape != groups.shape or labels.ndim != 1:
        raise ValueError(
            f"labels {labels.shape} and groups {groups.shape} must be equal 1-D shapes"
        )
    if n_splits < 2:
        raise ValueError(f"n_splits must be >= 2, got {n_splits}")
    g_label = _group_labels(labels, groups)
    uniq, counts = np.unique(groups, return_counts=True)
    if len(uniq) < n_splits:
        raise ValueError(f"n_splits={n_splits} exceeds the number of patients ({len(uniq)})")
    size = dict(zip(uniq.tolist(), counts.tolist()))
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    spots = np.zeros(n_splits)  # spots per fold over all classes (secondary balance)
    for cls in sorted(set(g_label.values())):
        members = [g for g in uniq.tolist() if g_label[g] == cls]
        if len(members) < n_splits:
            logger.warning(
                "class %r has only %d patients for %d folds", cls, len(members), n_splits
            )
        members = [members[i] for i in rng.permutation(len(members))]
        members.sort(key=lambda g: -size[g])  # stable: random order among equal sizes
        per_class = np.zeros(n_splits)
        n_groups = np.zeros(n_splits)
        for g in members:
            key = np.lexsort((rng.random(n_splits), spots, per_class, n_groups))
            f = int(key[0])
            fold_of[g] = f
            per_class[f] += size[g]
            n_groups[f] += 1
            spots[f] += size[g]
    return np.asarray([fold_of[g] for g in groups.tolist()], dtype=np.int64)


def assert_patient_disjoint(folds: Sequence | np.ndarray, groups: Sequence | np.ndarray) -> None:
    """Raise :class:`ValueError` naming the patient if any patient appears in two folds."""
    folds = np.asarray(folds)
    groups = np.asarray(groups).astype(str)
    if folds.shape != groups.shape:
        raise ValueError(f"folds {folds.shape} and groups {groups.shape} differ in shape")
    seen: dict[str, int] = {}
    for g, f in zip(groups.tolist(), folds.tolist()):
        if seen.setdefault(g, f) != f:
            raise ValueError(f"patient {g!r} appears in folds {seen[g]} and {f}")


def fold_indices(folds: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) sample indices for fold ``k``."""
    folds = np.asarray(folds)
    return np.flatnonzero(folds != k), np.flatnonzero(folds == k)


def lab_split(
    labs: Sequence | np.ndarray, train_lab: str, test_lab: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the samples of ``train_lab`` and of ``test_lab`` (default: all other labs)."""
    labs = np.asarray(labs).astype(str)
    if train_lab not in labs:
        raise ValueError(f"train_lab {train_lab!r} not among labs {sorted(set(labs.tolist()))}")
    if test_lab is not None and test_lab not in labs:
        raise ValueError(f"test_lab {test_lab!r} not among labs {sorted(set(labs.tolist()))}")
    test = labs != train_lab if test_lab is None else labs == test_lab
    return np.flatnonzero(labs == train_lab), np.flatnonzero(test)
