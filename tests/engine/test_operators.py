"""Adjoint identities ⟨K(θ,x),y⟩ = ⟨x,K^T(θ,y)⟩ = ⟨θ,K^□(y,x)⟩ on random float64 inputs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from doublebackprop import LocallyConnected1d
from doublebackprop.engine.operators import (
    activation,
    bilinear_operator,
    conv_padding,
    linear_map,
    pad_last_dims,
)

F64 = torch.float64


def _check_bilinear(module: nn.Module, x: torch.Tensor) -> None:
    op = bilinear_operator(module)
    assert op is not None
    theta = module.weight.detach()
    pre: list[tuple[int, int]] = []
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        pre, _ = conv_padding(module.padding, module.kernel_size, module.dilation)
    xp = pad_last_dims(x, pre)
    z = op.apply(theta, xp)
    # K agrees with the module's own forward (without bias)
    bias = module.bias
    module.bias = None  # type: ignore[assignment]
    assert torch.allclose(z, module(x), rtol=1e-12, atol=1e-12)
    module.bias = bias
    y = torch.randn_like(z)
    lhs = (z * y).sum()
    via_input = (xp * op.input_adjoint(theta, y, xp.shape)).sum()
    via_param = (theta * op.param_adjoint(y, xp, theta.shape)).sum()
    assert torch.allclose(lhs, via_input, rtol=1e-10, atol=1e-10)
    assert torch.allclose(lhs, via_param, rtol=1e-10, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 3),
    cin=st.integers(1, 3),
    cout=st.integers(1, 4),
    extra=st.integers(0, 3),
)
def test_linear(n, cin, cout, extra):
    layer = nn.Linear(cin, cout).double()
    x = torch.randn(n, *([2] * extra), cin, dtype=F64)
    _check_bilinear(layer, x)


@settings(max_examples=40, deadline=None)
@given(
    nd=st.sampled_from([1, 2]),
    n=st.integers(1, 3),
    groups=st.sampled_from([1, 2]),
    cmul=st.integers(1, 2),
    k=st.integers(1, 4),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 2),
    padding=st.sampled_from(["int", "same", "valid"]),
    length=st.integers(8, 13),
)
def test_conv(nd, n, groups, cmul, k, stride, dilation, padding, length):
    if padding == "same":
        stride = 1  # torch forbids 'same' with stride > 1
    cin, cout = groups * cmul, groups * 2
    pad = k // 2 if padding == "int" else padding
    conv = (nn.Conv1d if nd == 1 else nn.Conv2d)(
        cin, cout, k, stride=stride, padding=pad, dilation=dilation, groups=groups
    ).double()
    x = torch.randn(n, cin, *([length] * nd), dtype=F64)
    _check_bilinear(conv, x)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 3),
    cin=st.integers(1, 3),
    cout=st.integers(1, 3),
    k=st.integers(1, 5),
    padding=st.integers(0, 2),
    stride=st.integers(1, 3),
    length=st.integers(6, 15),
)
def test_locally_connected(n, cin, cout, k, padding, stride, length):
    layer = LocallyConnected1d(cin, cout, length, k, padding=padding, stride=stride).double()
    x = torch.randn(n, cin, length, dtype=F64)
    _check_bilinear(layer, x)


def test_locally_connected_weights_are_unshared():
    layer = LocallyConnected1d(1, 1, 6, 3, padding=1, bias=False).double()
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[2, 0, 0, 1] = 1.0  # only position 2 sees its centre input
    x = torch.arange(6, dtype=F64).view(1, 1, 6)
    assert layer(x).flatten().tolist() == [0, 0, 2, 0, 0, 0]


def test_locally_connected_rejects_wrong_shape():
    layer = LocallyConnected1d(1, 1, 6, 3)
    with pytest.raises(ValueError, match=r"\(N, 1, 6\)"):
        layer(torch.randn(2, 1, 7))


@pytest.mark.parametrize(
    "module,shape",
    [
        (nn.Flatten(), (3, 2, 4)),
        (nn.AvgPool1d(3, stride=2, padding=1), (2, 3, 11)),
        (nn.AvgPool2d(2), (2, 3, 6, 6)),
        (nn.AdaptiveAvgPool1d(4), (2, 3, 10)),
        (nn.AdaptiveAvgPool2d((2, 3)), (2, 1, 7, 8)),
        (nn.Identity(), (2, 5)),
    ],
)
def test_linear_maps(module, shape):
    lin = linear_map(module)
    x = torch.randn(*shape, dtype=F64)
    z = lin.apply(x)
    assert torch.allclose(z, module(x), rtol=0, atol=1e-12)
    y = torch.randn_like(z)
    assert torch.allclose((z * y).sum(), (x * lin.adjoint(y, x.shape)).sum(), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "module",
    [
        nn.ReLU(),
        nn.LeakyReLU(0.1),
        nn.LeakyReLU(0.01),
        nn.Softplus(beta=1.5),
        nn.Tanh(),
        nn.Sigmoid(),
        nn.ELU(0.7),
        nn.GELU(),
    ],
)
def test_activation_derivatives(module):
    act = activation(module)
    z = torch.linspace(-3, 3, 101, dtype=F64).requires_grad_(True)
    z = z[(z.detach().abs() > 1e-6)]  # away from the kink of piecewise-linear maps
    out = act.phi(z)
    assert torch.allclose(out, module(z), rtol=0, atol=1e-12)
    (d1,) = torch.autograd.grad(module(z).sum(), z, create_graph=True)
    assert act.dphi(z).dtype == F64
    assert torch.allclose(act.dphi(z), d1, rtol=0, atol=1e-12)
    (d2,) = torch.autograd.grad(d1.sum(), z, allow_unused=True)
    d2 = torch.zeros_like(z) if d2 is None else d2
    expected = torch.zeros_like(z) if act.ddphi is None else act.ddphi(z)
    assert torch.allclose(expected, d2, rtol=0, atol=1e-12)
    assert act.locally_linear == isinstance(module, (nn.ReLU, nn.LeakyReLU))
