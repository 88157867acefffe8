"""``objective(..., loss=...)``: task losses other than cross-entropy, against explicit
float64 double backprop written in the test; and error messages that teach the fix."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import doublebackprop as dbp
from doublebackprop.tools import zoo


def soft_ce(z, q):
    return -(q * z.log_softmax(1)).sum(1)


def smoothed(z, y):
    return F.cross_entropy(z, y, label_smoothing=0.1, reduction="none")


def squared(z, t):
    return (z - t).pow(2).sum(1)


def _model(kind):
    torch.manual_seed(0)
    if kind == "mlp":
        return zoo.mlp(6, 8, 2, 3, nn.Softplus).double()
    return nn.Sequential(
        nn.Conv1d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(18, 3)
    ).double()


def _data(kind, target):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 6, generator=g, dtype=torch.float64)
    if kind == "cnn":
        x = x.view(5, 1, 6)
    if target == "soft":
        y = torch.softmax(torch.randn(5, 3, generator=g, dtype=torch.float64), 1)
    elif target == "regression":
        y = torch.randn(5, 3, generator=g, dtype=torch.float64)
    else:
        y = torch.randint(0, 3, (5,), generator=g)
    return x, y


LOSSES = {"soft": soft_ce, "smoothing": smoothed, "regression": squared}


def _reference(model, x, y, loss, weight, jacobian):
    leaf = x.clone().requires_grad_(True)
    z = model(leaf)
    per = loss(z, y)
    if jacobian:
        pen = 0.0
        for c in range(z.shape[1]):
            (g,) = torch.autograd.grad(z[:, c].sum(), leaf, create_graph=True)
            pen = pen + g.flatten(1).pow(2).sum(1)
    else:
        (g,) = torch.autograd.grad(per.sum(), leaf, create_graph=True)
        pen = g.flatten(1).pow(2).sum(1)
    return (per + weight * pen).mean()


@pytest.mark.parametrize("jacobian", [False, True], ids=["gradnorm_loss", "jacobian"])
@pytest.mark.parametrize("engine", ["autograd", "adjoint", "sweeps"])
@pytest.mark.parametrize("target", sorted(LOSSES))
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_task_loss_matches_explicit_double_backprop(kind, target, engine, jacobian):
    model = _model(kind)
    ref_model = copy.deepcopy(model)
    x, y = _data(kind, target)
    loss = LOSSES[target]
    _reference(ref_model, x, y, loss, 0.3, jacobian).backward()
    pen = (
        dbp.JacobianPenalty(weight=0.3)
        if jacobian
        else dbp.InputGradientPenalty(weight=0.3, target="loss")
    )
    net = dbp.adjoint(model) if engine == "adjoint" else model
    res = dbp.objective(net, x, y, penalty=pen, engine=engine, loss=loss)
    assert torch.allclose(res.task, loss(ref_model(x), y).mean(), rtol=1e-13, atol=0)
    res.total.backward()
    for p, q in zip(model.parameters(), ref_model.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=0, atol=1e-12)


def test_default_loss_is_cross_entropy():
    model = _model("mlp")
    x, y = _data("mlp", "indices")
    pen = dbp.InputGradientPenalty(weight=0.3)
    a = dbp.objective(model, x, y, penalty=pen)
    ce = lambda z, y: F.cross_entropy(z, y, reduction="none")  # noqa: E731
    b = dbp.objective(model, x, y, penalty=pen, loss=ce)
    assert torch.allclose(a.total, b.total, rtol=1e-14, atol=0)


def test_loss_must_be_per_sample():
    model = _model("mlp")
    x, y = _data("mlp", "regression")
    with pytest.raises(ValueError, match=r"one value per sample, shape \(5,\)"):
        dbp.objective(model, x, y, loss=lambda z, t: (z - t).pow(2).mean())


def test_true_logit_penalty_needs_class_indices():
    model = _model("mlp")
    x, q = _data("mlp", "soft")
    with pytest.raises(ValueError, match="needs class indices"):
        dbp.objective(model, x, q, penalty=dbp.RelevancePenalty(l1=0.1, l2=0.1), loss=soft_ce)


def test_one_hot_labels_teach_argmax():
    model = _model("mlp")
    x, y = _data("mlp", "indices")
    with pytest.raises(ValueError, match=r"pass class indices, e.g. y.argmax\(1\)"):
        dbp.objective(model, x, F.one_hot(y, 3).double())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"penalty": dbp.RelevancePenalty}, r"instantiate it, e.g. penalty=RelevancePenalty"),
        ({"engine": dbp.Sweeps}, r"instantiate it: engine=Sweeps\(\)"),
    ],
)
def test_classes_instead_of_instances(kwargs, match):
    model = _model("mlp")
    x, y = _data("mlp", "indices")
    with pytest.raises(TypeError, match=match):
        dbp.objective(model, x, y, **kwargs)


def test_image_without_batch_dimension():
    torch.manual_seed(0)
    net = zoo.cnn2d(3, 8, 3, widths=(2,))
    image = torch.randn(3, 8, 8)  # (C, H, W): C = 3 would be read as a batch of 3
    for label in (torch.tensor([1]), torch.tensor(1)):
        with pytest.raises(ValueError, match=r"add it: x.unsqueeze\(0\)"):
            dbp.objective(net, image, label)
    dbp.objective(net, image.unsqueeze(0), torch.tensor([1]))  # the fix works
