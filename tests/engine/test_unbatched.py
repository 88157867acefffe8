"""Unbatched inputs that stock modules accept work on converted modules, to second order."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import doublebackprop as dbp

CASES = [
    (nn.Conv1d(2, 3, 3, padding=1, stride=2), (2, 9)),
    (nn.Conv2d(2, 3, 3, padding=1), (2, 5, 6)),
    (nn.MaxPool1d(2), (2, 8)),
    (nn.MaxPool2d(2), (2, 6, 6)),
    (nn.AvgPool1d(3, stride=2, padding=1), (2, 9)),
    (nn.AvgPool2d(2), (2, 6, 6)),
    (nn.AdaptiveAvgPool1d(3), (2, 9)),
    (nn.AdaptiveAvgPool1d(1), (2, 9)),
    (nn.AdaptiveAvgPool2d((2, 3)), (2, 6, 7)),
    (nn.AdaptiveAvgPool2d(1), (2, 6, 7)),
]


def _second_order(module, x):
    """Output, input gradient of ⟨c, f(x)²⟩ and the parameter/input gradient of its norm."""
    xr = x.clone().requires_grad_(True)
    out = module(xr)
    c = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    (g,) = torch.autograd.grad((c * out * out).sum(), xr, create_graph=True)
    wrt = [xr, *module.parameters()]
    return out, g, torch.autograd.grad(g.pow(2).sum(), wrt, allow_unused=True)


@pytest.mark.parametrize("module,shape", CASES, ids=[f"{type(m).__name__}-{s}" for m, s in CASES])
def test_unbatched_input(module, shape):
    torch.manual_seed(0)
    stock = module.double()
    fast = dbp.adjoint(copy.deepcopy(stock))
    x = torch.randn(*shape, dtype=torch.float64)
    out_ref, g_ref, second_ref = _second_order(stock, x)
    out, g, second = _second_order(fast, x)
    assert torch.equal(out, out_ref)
    assert torch.allclose(g, g_ref, rtol=0, atol=1e-12)
    for a, b in zip(second, second_ref):
        if b is None:
            assert a is None or float(a.abs().max()) == 0.0
        else:
            assert torch.allclose(a, b, rtol=0, atol=1e-12)
