"""Distance summaries keep failed attacks (inf) in the median, against numpy and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from doublebackprop import robustness as rb

INF = math.inf


def test_median_counts_failures_as_unbroken():
    d = torch.tensor([0.3, 0.0, 0.5, INF, INF, INF, 0.9])
    correct = torch.tensor([True, False, True, True, True, True, True])
    s = rb.summarize_distances(d, correct, epsilons=[0.0, 0.4, 1.0])
    mine = d[correct].numpy()
    assert s.median == float(np.median(mine)) == INF  # numpy keeps inf in the order
    assert (s.n_total, s.n, s.n_broken, s.n_failed) == (7, 6, 3, 3)
    # robust accuracy over all 7 samples: correct and not broken within ε
    for e, want in ((0.0, 6 / 7), (0.4, 5 / 7), (1.0, 3 / 7)):
        assert s.robust_accuracy[e] == pytest.approx(want)
    even = rb.summarize_distances(torch.tensor([1.0, 3.0, INF, 2.0]), torch.ones(4, dtype=bool))
    assert even.median == float(np.median([1.0, 3.0, INF, 2.0])) == 2.5


def test_median_ci_against_scipy_bootstrap():
    from scipy.stats import bootstrap

    rng = np.random.default_rng(0)
    v = rng.normal(1.0, 1.0, 300)
    lo, hi = rb.median_ci(torch.tensor(v), resamples=4000, seed=1)
    ref = bootstrap(
        (v,), np.median, method="percentile", n_resamples=4000, random_state=rng
    ).confidence_interval
    assert abs(lo - ref.low) < 0.05 and abs(hi - ref.high) < 0.05
    assert lo < float(np.median(v)) < hi
    lo, hi = rb.median_ci(torch.tensor([0.1, INF, INF, INF, INF, 0.2, INF]))
    assert hi == INF
    assert all(math.isnan(c) for c in rb.median_ci(torch.tensor([1.0])))


def test_bad_input():
    with pytest.raises(ValueError, match="bool"):
        rb.summarize_distances(torch.ones(3), torch.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        rb.summarize_distances(torch.tensor([math.nan]), torch.ones(1, dtype=bool))
    with pytest.raises(ValueError, match="epsilons"):
        rb.summarize_distances(torch.ones(2), torch.ones(2, dtype=bool), epsilons=[-1.0])
