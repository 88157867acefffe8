"""Converted models under the ``torch.func`` transforms, against the unconverted model."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, jacrev, vmap

import doublebackprop as dbp


def _net(batch_norm: bool) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [
        nn.Conv1d(1, 3, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Conv1d(3, 3, 3, padding=1),
    ]
    layers += [nn.BatchNorm1d(3)] if batch_norm else []
    layers += [nn.LeakyReLU(0.1), nn.AvgPool1d(2), nn.Flatten(), nn.Linear(9, 2)]
    return nn.Sequential(*layers).double().eval()


def _transforms(net, x):
    params = {k: v.detach() for k, v in net.named_parameters()}
    bufs = dict(net.named_buffers())

    def call(p, inp):
        return functional_call(net, {**p, **bufs}, (inp,))

    j_params = jacrev(lambda p: call(p, x))(params)
    per_sample = vmap(grad(lambda xi: call(params, xi[None])[0, 1]))(x)
    j_input = jacrev(lambda inp: call(params, inp))(x)

    def saliency_norm(p):  # double backprop inside torch.func
        g = grad(lambda inp: call(p, inp)[:, 0].sum())(x)
        return g.pow(2).sum()

    second = grad(saliency_norm)(params)
    return j_params, per_sample, j_input, second


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "bn_eval"])
def test_torch_func_transforms_match_unconverted(batch_norm):
    stock = _net(batch_norm)
    fast = dbp.adjoint(copy.deepcopy(stock))
    x = torch.randn(4, 1, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = _transforms(stock, x)
    got = _transforms(fast, x)
    for a, b in zip(got, ref):
        if isinstance(a, dict):
            assert a.keys() == b.keys()
            for k in a:
                assert torch.allclose(a[k], b[k], rtol=0, atol=1e-12), k
        else:
            assert torch.allclose(a, b, rtol=0, atol=1e-12)
