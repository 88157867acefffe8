"""``RelevancePenalty(reduction="batch_sum")``, the DRR authors' convention, against the loss
written out with stock autograd in float64: every sample's cross-entropy gets the *batch's* summed
relevance norms, then the class-weighted mean is taken."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import doublebackprop as dbp

DT = torch.float64


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(1, 4, 5, padding=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 30, 3)
    ).to(DT)


def _explicit(model, x, y, w, lam):
    """The Keras loss: mean_i w_i (CE_i + λ Σ_j (‖r_j‖₁ + ‖r_j‖₂²)), r = x ⊙ ∇_x z_y."""
    x = x.clone().requires_grad_()
    z = model(x)
    (g,) = torch.autograd.grad(z.gather(1, y[:, None]).sum(), x, create_graph=True)
    r = (x * g).flatten(1)
    batch_total = lam * (r.abs().sum() + r.pow(2).sum())
    per = F.cross_entropy(z, y, reduction="none") + batch_total
    return (w * per).mean()


@pytest.mark.parametrize("engine", ["autograd", "adjoint", "sweeps", "finite_difference"])
def test_batch_sum_equals_the_keras_loss(engine):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 1, 30, dtype=DT, generator=g)
    y = torch.randint(0, 3, (8,), generator=g)
    w = torch.rand(8, dtype=DT, generator=g) + 0.5
    lam = 0.05
    ref_model = _net()
    ref = _explicit(ref_model, x, y, w, lam)
    grads_ref = torch.autograd.grad(ref, list(ref_model.parameters()))

    model = copy.deepcopy(ref_model)
    net = dbp.adjoint(model) if engine == "adjoint" else model
    eng = dbp.Sweeps() if engine == "sweeps" else engine
    pen = dbp.RelevancePenalty(l1=lam, l2=lam, reduction="batch_sum")
    res = dbp.objective(net, x, y, penalty=pen, engine=eng, sample_weight=w)
    grads = torch.autograd.grad(res.total, list(model.parameters()))
    tol = 1e-4 if engine == "finite_difference" else 1e-10  # a difference quotient
    torch.testing.assert_close(res.total, ref, rtol=tol, atol=0)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * float(b.abs().max()))


def test_batch_sum_is_batch_size_times_per_sample_on_average():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(6, 1, 30, dtype=DT, generator=g)
    y = torch.randint(0, 3, (6,), generator=g)
    model = _net()
    per = dbp.objective(model, x, y, penalty=dbp.RelevancePenalty(l1=0.1, l2=0.1)).penalty
    batch = dbp.objective(
        model, x, y, penalty=dbp.RelevancePenalty(l1=0.1, l2=0.1, reduction="batch_sum")
    ).penalty
    torch.testing.assert_close(batch, 6 * per)
    with pytest.raises(ValueError, match="reduction must be 'per_sample' or 'batch_sum'"):
        dbp.RelevancePenalty(l1=0.1, l2=0.1, reduction="mean")  # type: ignore[arg-type]
