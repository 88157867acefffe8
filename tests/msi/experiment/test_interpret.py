"""Relevance summaries, sparsity measures, biomarker masks and prediction images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from doublebackprop.msi.experiment.interpret import (
    RelevanceSummary,
    biomarker_mask,
    gini,
    model_relevance,
    prediction_images,
    top_mass_fraction,
)
from doublebackprop.msi.models import IsotopeNet


def test_model_relevance_is_gradient_times_input_of_true_logit_in_eval_mode():
    torch.manual_seed(0)
    net = IsotopeNet(50, 3).double().train()
    x = np.random.default_rng(0).random((7, 50))
    y = np.array([0, 1, 2, 0, 1, 2, 0])
    r = model_relevance(net, x, y, batch_size=3)  # batches must not matter in eval mode
    assert net.training  # flag restored
    net.eval()
    xt = torch.tensor(x, requires_grad=True)
    z = net(xt)
    (g,) = torch.autograd.grad(z[torch.arange(7), torch.tensor(y)].sum(), xt)
    np.testing.assert_allclose(r, (xt * g).detach().numpy(), rtol=1e-6, atol=1e-9)


def test_sparsity_measures_known_values():
    r = np.zeros((2, 200))
    r[0] = 1.0  # uniform
    r[1, 5], r[1, 7] = 3.0, -1.0  # two bins (top 1 % = 2 bins)
    np.testing.assert_allclose(top_mass_fraction(r), [0.01, 1.0])
    # sorted |r| = (0 × 198, 1, 3): G = 2·Σ i·a_(i) / (n·Σa) − (n+1)/n
    np.testing.assert_allclose(gini(r), [0.0, 2 * (199 * 1 + 200 * 3) / (200 * 4) - 201 / 200])
    assert gini(np.zeros((1, 10)))[0] == 0.0 and top_mass_fraction(np.zeros((1, 10)))[0] == 0.0


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, (3, 50), elements=st.floats(-10, 10)))
def test_sparsity_measures_are_bounded_and_scale_invariant(r):
    g, t = gini(r), top_mass_fraction(r)
    assert np.all((g >= -1e-12) & (g <= 1)) and np.all((t >= 0) & (t <= 1 + 1e-12))
    np.testing.assert_allclose(gini(3.5 * r), g, atol=1e-9)
    np.testing.assert_allclose(top_mass_fraction(-2 * r), t, atol=1e-9)


def test_biomarker_mask_window():
    mz = np.arange(700.0, 710.0, 0.25)
    mask = biomarker_mask(mz, [702.0, 708.1], tolerance=0.5)
    assert mz[mask].tolist() == [701.5, 701.75, 702.0, 702.25, 702.5, 707.75, 708.0, 708.25, 708.5]
    with pytest.raises(ValueError):
        biomarker_mask(mz, [702.0], tolerance=-1)


def test_relevance_summary_merge_and_mass_fraction():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(10, 20))
    y = np.array([0, 1] * 5)
    whole = RelevanceSummary.from_relevance(r, y, 2)
    merged = RelevanceSummary.from_relevance(r[:4], y[:4], 2).merge(
        RelevanceSummary.from_relevance(r[4:], y[4:], 2)
    )
    np.testing.assert_allclose(merged.sum_r, whole.sum_r)
    np.testing.assert_allclose(merged.mean_relevance[1], r[y == 1].mean(0))
    mask = np.zeros(20, bool)
    mask[:5] = True
    assert merged.mass_fraction(mask) == pytest.approx(np.abs(r[:, :5]).sum() / np.abs(r).sum())
    assert merged.gini_mean == pytest.approx(gini(r).mean())


def test_prediction_images_place_spots_per_core():
    core = np.array(["c1"] * 3 + ["c2"] * 2)
    xs = np.array([10, 11, 10, 50, 52])
    ys = np.array([5, 5, 6, 7, 7])
    truth = np.array([0, 0, 0, 1, 1])
    pred = np.array([0, 1, 0, 1, 1])
    imgs = {im.name: im for im in prediction_images(core, xs, ys, truth, pred)}
    assert imgs["c1"].pred.tolist() == [[0, 1], [0, -1]]
    assert imgs["c1"].truth.tolist() == [[0, 0], [0, -1]]
    assert imgs["c2"].pred.tolist() == [[1, -1, 1]]
    assert imgs["c1"].accuracy == pytest.approx(2 / 3) and imgs["c2"].accuracy == 1.0
