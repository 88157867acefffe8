"""Grouped stratified folds: patients never split, classes balanced, deterministic."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from doublebackprop.msi.data.splits import (
    assert_patient_disjoint,
    fold_indices,
    grouped_stratified_kfold,
    lab_split,
)


@settings(max_examples=40, deadline=None)
@given(st.integers(10, 40), st.integers(2, 6), st.integers(0, 1000))
def test_groups_never_split_and_deterministic(n_patients, k, seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 30, n_patients)
    groups = np.repeat([f"p{i}" for i in range(n_patients)], sizes)
    plabel = rng.integers(0, 2, n_patients)
    labels = np.repeat(plabel, sizes)
    folds = grouped_stratified_kfold(labels, groups, n_splits=k, seed=seed)
    assert_patient_disjoint(folds, groups)
    np.testing.assert_array_equal(folds, grouped_stratified_kfold(labels, groups, k, seed=seed))
    assert set(folds.tolist()) == set(range(k))
    for c in (0, 1):  # each class's patients spread over the folds (differ by <= 1 where possible)
        n_c = np.bincount(
            [folds[groups == f"p{i}"][0] for i in np.flatnonzero(plabel == c)], minlength=k
        )
        assert n_c.max() - n_c.min() <= 1


def test_balance_of_spots():
    groups = np.repeat([f"p{i}" for i in range(20)], 60)
    labels = np.repeat(np.arange(20) % 2, 60)
    folds = grouped_stratified_kfold(labels, groups, 5, seed=0)
    for f in range(5):
        assert np.bincount(labels[folds == f]).tolist() == [120, 120]
    tr, va = fold_indices(folds, 0)
    assert len(tr) + len(va) == 1200 and not set(tr) & set(va)


def test_assert_patient_disjoint_raises():
    with pytest.raises(ValueError, match="patient 'b' appears in folds 1 and 2"):
        assert_patient_disjoint([0, 1, 2], ["a", "b", "b"])


def test_errors():
    with pytest.raises(ValueError, match="patient 'p' has two labels"):
        grouped_stratified_kfold(["x", "y"], ["p", "p"], 2)
    with pytest.raises(ValueError, match="exceeds the number of patients"):
        grouped_stratified_kfold(["x", "y"], ["p", "q"], 3)


def test_lab_split():
    tr, te = lab_split(["A", "B", "A", "C"], "A", "B")
    assert tr.tolist() == [0, 2] and te.tolist() == [1]
    assert lab_split(["A", "B", "A", "C"], "A")[1].tolist() == [1, 3]
    with pytest.raises(ValueError, match="train_lab 'Z'"):
        lab_split(["A"], "Z")
