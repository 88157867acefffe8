"""Every engine against the stock-autograd reference, in float64."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import doublebackprop as dbp

from .nets import families, param_grads, penalties, run

FAMILIES = families()
PENALTIES = penalties()
SEQUENTIAL = {"mlp", "mlp_leaky", "cnn1d", "cnn2d", "smooth"}


def _data(shape, classes):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (shape[0],), generator=g)
    return x, y


def _rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("pname", sorted(PENALTIES))
def test_adjoint_matches_autograd(family, pname, mode):
    model, shape, classes = copy.deepcopy(FAMILIES[family])
    model.train(mode == "train")
    x, y = _data(shape, classes)
    w = torch.rand(shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ref, g_ref = run(model, x, y, PENALTIES[pname], "autograd", weight=w)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every module of these families has a rule
        fast = dbp.adjoint(model)
    res, g = run(fast, x, y, PENALTIES[pname], "adjoint", weight=w)
    assert torch.allclose(res.total, ref.total, rtol=1e-12, atol=0)
    assert torch.allclose(res.penalty, ref.penalty, rtol=1e-12, atol=0)
    assert _rel(g, g_ref) <= 1e-8


@pytest.mark.parametrize("family", sorted(SEQUENTIAL))
@pytest.mark.parametrize("pname", sorted(PENALTIES))
def test_sweeps_match_autograd(family, pname):
    model, shape, classes = copy.deepcopy(FAMILIES[family])
    model.eval()
    x, y = _data(shape, classes)
    ref, g_ref = run(model, x, y, PENALTIES[pname], "autograd")
    res, g = run(model, x, y, PENALTIES[pname], dbp.Sweeps())
    # the explicit B1 sums in another order than autograd: agreement to rounding, not bits
    assert torch.allclose(res.total, ref.total, rtol=1e-10, atol=0)
    assert _rel(g, g_ref) <= 1e-12  # float64 rounding; a float32 constant would show at ~1e-9


@pytest.mark.parametrize("family", ["mlp", "cnn1d", "smooth"])
@pytest.mark.parametrize("pname", ["gradnorm_loss", "drr", "jacobian"])
def test_finite_difference_is_close(family, pname):
    """Documented bound: with h = 1e-5 (float64) the relative error is below 1e-3 on these nets
    (ReLU nets: exact unless the step crosses a kink)."""
    model, shape, classes = copy.deepcopy(FAMILIES[family])
    model.eval()
    x, y = _data(shape, classes)
    ref, g_ref = run(model, x, y, PENALTIES[pname], "autograd")
    res, g = run(model, x, y, PENALTIES[pname], dbp.FiniteDifference(step=1e-5, central=True))
    assert torch.allclose(res.total, ref.total, rtol=1e-12, atol=0)  # the value is exact
    assert _rel(g, g_ref) <= 1e-3


def test_finite_difference_error_shrinks_with_step():
    model, shape, classes = copy.deepcopy(FAMILIES["smooth"])
    model.eval()
    x, y = _data(shape, classes)
    pen = PENALTIES["gradnorm_loss"]
    _, g_ref = run(model, x, y, pen, "autograd")
    errs = [
        _rel(run(model, x, y, pen, dbp.FiniteDifference(step=h))[1], g_ref) for h in (1e-1, 1e-3)
    ]
    assert errs[1] < errs[0]


def test_plain_objective_without_penalty():
    model, shape, classes = copy.deepcopy(FAMILIES["mlp"])
    x, y = _data(shape, classes)
    res = dbp.objective(model, x, y)
    assert float(res.penalty) == 0.0
    assert torch.allclose(res.total, nn.functional.cross_entropy(model(x), y))


def test_sample_weight_convention():
    model, shape, classes = copy.deepcopy(FAMILIES["mlp"])
    x, y = _data(shape, classes)
    pen = dbp.RelevancePenalty(l1=0.1, l2=0.1)
    w = torch.arange(1, shape[0] + 1, dtype=torch.float64)
    res = dbp.objective(model, x, y, penalty=pen, sample_weight=w)
    ce = nn.functional.cross_entropy(model(x), y, reduction="none")
    g = dbp.input_gradient(model, x, target=y)
    r = (x * g).flatten(1)
    per = 0.1 * r.abs().sum(1) + 0.1 * r.pow(2).sum(1)
    assert torch.allclose(res.task, (w * ce).mean())
    assert torch.allclose(res.penalty, (w * per).mean())
    assert torch.allclose(res.total, (w * (ce + per)).mean())


def test_batch_mean_convention_is_one_over_n_squared():
    model, shape, classes = copy.deepcopy(FAMILIES["mlp"])
    model.eval()
    x, y = _data(shape, classes)
    per = dbp.objective(model, x, y, penalty=dbp.InputGradientPenalty(weight=1.0)).penalty
    mean = dbp.objective(
        model, x, y, penalty=dbp.InputGradientPenalty(weight=1.0, reduction="batch_mean")
    ).penalty
    assert torch.allclose(mean, per / shape[0] ** 2)


def test_jacobian_projection_estimator_is_unbiased():
    model, shape, classes = copy.deepcopy(FAMILIES["mlp"])
    x, y = _data(shape, classes)
    exact = dbp.objective(model, x, y, penalty=dbp.JacobianPenalty(weight=1.0)).penalty
    gen = torch.Generator().manual_seed(3)
    est = dbp.objective(
        model, x, y, penalty=dbp.JacobianPenalty(weight=1.0, projections=4000, generator=gen)
    ).penalty
    assert abs(float((est / exact).detach()) - 1) < 0.1


def test_jacobian_rows_batched_equals_loop():
    model, shape, classes = copy.deepcopy(FAMILIES["cnn1d"])
    x, y = _data(shape, classes)
    pen = PENALTIES["jacobian"]
    _, g_batched = run(model, x, y, pen, dbp.Autograd(batched_rows=True))
    _, g_loop = run(model, x, y, pen, dbp.Autograd(batched_rows=False))
    assert _rel(g_batched, g_loop) <= 1e-10


def test_input_gradient_matches_autograd_and_keeps_graph():
    model, shape, classes = copy.deepcopy(FAMILIES["resnet_bn"])
    model.eval()
    x, y = _data(shape, classes)
    xr = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(model(xr).gather(1, y[:, None]).sum(), xr)
    g = dbp.input_gradient(model, x, target=y)
    assert torch.allclose(g, ref, rtol=1e-12, atol=1e-14)
    assert not g.requires_grad and not x.requires_grad
    pred = dbp.input_gradient(model, x)  # default: predicted class
    (ref_pred,) = torch.autograd.grad(model(xr).max(1).values.sum(), xr)
    assert torch.allclose(pred, ref_pred, rtol=1e-12, atol=1e-14)
    g2 = dbp.input_gradient(model, x, target=y, create_graph=True)
    g2.pow(2).sum().backward()
    assert param_grads(model).abs().sum() > 0


def test_gradients_reach_through_inputs_that_require_grad():
    model, shape, classes = copy.deepcopy(FAMILIES["mlp"])
    x, y = _data(shape, classes)
    delta = torch.zeros_like(x, requires_grad=True)
    g = dbp.input_gradient(model, x + delta, target=y, create_graph=True)
    assert g.requires_grad


def test_dropout_train_mode_same_masks_same_gradients():
    model, shape, classes = copy.deepcopy(FAMILIES["isotopenet"])
    model.train()
    x, y = _data(shape, classes)
    pen = PENALTIES["drr"]
    _, g1 = run(model, x, y, pen, "adjoint", seed=5)
    _, g2 = run(model, x, y, pen, "autograd", seed=5)
    assert _rel(g1, g2) <= 1e-8


def test_finite_difference_with_train_mode_batchnorm_keeps_buffers():
    """The extra forwards must leave running statistics as the main forward left them."""
    model, shape, classes = copy.deepcopy(FAMILIES["resnet_bn"])
    model.train()
    x, y = _data(shape, classes)
    reference = copy.deepcopy(model)
    reference(x)  # one forward: what the buffers should read afterwards
    ref_stats = [b.clone() for b in reference.buffers()]
    fd = dbp.FiniteDifference(step=1e-5, central=True)
    _, g = run(model, x, y, dbp.JacobianPenalty(weight=0.1), fd)
    assert all(torch.equal(a, b) for a, b in zip(ref_stats, model.buffers()))
    _, g_ref = run(reference, x, y, dbp.JacobianPenalty(weight=0.1), "autograd")
    assert _rel(g, g_ref) <= 1e-3  # batch-coupled directional derivative, still approximated


def test_finite_difference_replays_dropout_masks():
    """Train mode with dropout: the perturbed forwards must reuse the main forward's masks."""
    model, shape, classes = copy.deepcopy(FAMILIES["isotopenet"])
    model.train()
    x, y = _data(shape, classes)
    pen = PENALTIES["drr"]
    _, g_ref = run(copy.deepcopy(model), x, y, pen, "autograd", seed=3)
    _, g = run(model, x, y, pen, dbp.FiniteDifference(step=1e-6, central=True), seed=3)
    assert _rel(g, g_ref) <= 1e-3


def test_penalty_result_repr_is_compact():
    model, shape, classes = copy.deepcopy(FAMILIES["mlp"])
    x, y = _data(shape, classes)
    res = dbp.objective(model, x, y, penalty=dbp.InputGradientPenalty(weight=0.3))
    text = repr(res)
    assert text == (
        f"PenaltyResult(total={float(res.total):.6g}, task={float(res.task):.6g}, "
        f"penalty={float(res.penalty):.6g}, logits=({shape[0]}, {classes}))"
    )
    assert "grad_fn" not in text and "\n" not in text
