"""Jacobian penalties through batched and looped rows against a hand-written reference.

``Adjoint(batched_rows=True)`` is the default on CUDA; forcing it here puts that path under CI
on the CPU. The oracle is written inside the test: one ``autograd.grad(create_graph=True)`` per
row on an unconverted copy of the model, in float64.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import doublebackprop as dbp
from doublebackprop.tools import zoo

from .nets import families


def _zoo() -> dict[str, tuple[nn.Module, tuple[int, ...], int]]:
    torch.manual_seed(0)
    nets = {
        "zoo_mlp": (zoo.mlp(10, 8, 2, 3), (4, 10), 3),
        "zoo_cnn2d_avg": (zoo.cnn2d(1, 8, 3, widths=(3, 4), pool=nn.AvgPool2d), (3, 1, 8, 8), 3),
        "zoo_resnet18": (
            zoo.resnet18_like(1, 3, width=2, blocks=(1, 1)),
            (3, 1, 8, 8),
            3,
        ),
        "zoo_spectra": (
            zoo.spectra_cnn1d(3, stages=((3, 1), (4, 2)), kernel_size=3),
            (3, 1, 40),
            3,
        ),
    }
    return {k: (m.double(), s, c) for k, (m, s, c) in nets.items()}


MODELS = {**families(), **_zoo()}


def _reference(model, x, y, weight, rows):
    """CE + weight · mean_i Σ_r ‖J^T u_r‖², one create_graph backward per row (stock)."""
    leaf = x.detach().requires_grad_(True)
    logits = model(leaf)
    total = 0.0
    for seed in rows:
        (g,) = torch.autograd.grad(logits, leaf, seed, create_graph=True)
        total = total + g.flatten(1).pow(2).sum(1)
    return F.cross_entropy(logits, y) + weight * total.mean()


def _grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("engine", ["autograd", "adjoint"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_exact_jacobian_rows(name, engine, batched, mode):
    model, shape, classes = copy.deepcopy(MODELS[name])
    model.train(mode == "train")  # one forward each: the same masks and batch statistics
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    y = torch.randint(0, classes, (shape[0],), generator=gen)
    ref_model = copy.deepcopy(model)
    eye = torch.eye(classes, dtype=torch.float64)
    torch.manual_seed(7)
    _reference(
        ref_model, x, y, 0.05, [eye[c].expand(shape[0], classes) for c in range(classes)]
    ).backward()

    eng = (
        dbp.Autograd(batched_rows=batched)
        if engine == "autograd"
        else dbp.Adjoint(batched_rows=batched)
    )
    net = dbp.adjoint(model) if engine == "adjoint" else model
    torch.manual_seed(7)
    res = dbp.objective(net, x, y, penalty=dbp.JacobianPenalty(weight=0.05), engine=eng)
    res.total.backward()
    g, g_ref = _grads(model), _grads(ref_model)
    assert g.shape == g_ref.shape
    assert float((g - g_ref).norm() / g_ref.norm()) <= 1e-12


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("name", ["cnn1d", "zoo_spectra", "zoo_cnn2d_avg"])
def test_projected_jacobian_rows(name, batched):
    model, shape, classes = copy.deepcopy(MODELS[name])
    model.eval()
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    y = torch.randint(0, classes, (shape[0],), generator=gen)
    k = 3
    rows = torch.randn(
        k, shape[0], classes, generator=torch.Generator().manual_seed(6), dtype=torch.float64
    )
    ref_model = copy.deepcopy(model)
    _reference(ref_model, x, y, 0.05 / k, list(rows)).backward()
    pen = dbp.JacobianPenalty(
        weight=0.05, projections=k, generator=torch.Generator().manual_seed(6)
    )
    net = dbp.adjoint(model)
    dbp.objective(net, x, y, penalty=pen, engine=dbp.Adjoint(batched_rows=batched)).total.backward()
    g, g_ref = _grads(model), _grads(ref_model)
    assert float((g - g_ref).norm() / g_ref.norm()) <= 1e-12
