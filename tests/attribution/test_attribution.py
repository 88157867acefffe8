"""Attributions against closed forms, explicit layer-wise LRP and Captum (test peers)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import doublebackprop as dbp
from doublebackprop import attribution as at
from doublebackprop.attribution.lrp_graph import _lrp_model

DT = torch.float64


def mlp(seed: int, bias: bool = True, d: int = 6, h: int = 10, m: int = 4) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(d, h, bias=bias),
        nn.ReLU(),
        nn.Linear(h, h, bias=bias),
        nn.ReLU(),
        nn.Linear(h, m, bias=bias),
    ).to(DT)


def cnn(seed: int, bias: bool = True) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=bias),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1, bias=bias),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(6 * 2 * 2, 5, bias=bias),
    ).to(DT)
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 2.0)
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.1, 0.1) if bias else net[1].bias.zero_()
    return net.eval()


def explicit_lrp(net: nn.Sequential, x: torch.Tensor, t: torch.Tensor, rule: str, eps: float = 0.0):
    """Layer-by-layer LRP on a Linear/ReLU MLP, the textbook formulas (no gradient trick)."""
    acts = [x]
    for layer in net:
        acts.append(layer(acts[-1]))
    rel = torch.zeros_like(acts[-1])
    rel[torch.arange(x.shape[0]), t] = acts[-1][torch.arange(x.shape[0]), t]
    for i in range(len(net) - 1, -1, -1):
        layer, a = net[i], acts[i]
        if isinstance(layer, nn.ReLU):
            continue
        w, b = layer.weight, layer.bias
        if rule == "eps":
            z = a @ w.T + (b if b is not None else 0)
            z = z + eps * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
            rel = a * ((rel / z) @ w)
        elif rule == "zplus":
            wp = w.clamp(min=0)
            z = a @ wp.T + 1e-9
            rel = a * ((rel / z) @ wp)
        elif rule == "alphabeta":
            wp, wn = w.clamp(min=0), w.clamp(max=0)
            bp = b.clamp(min=0) if b is not None else 0
            bn = b.clamp(max=0) if b is not None else 0
            zp, zn = a @ wp.T + bp + 1e-9, a @ wn.T + bn - 1e-9
            rel = a * (2 * (rel / zp) @ wp - 1 * (rel / zn) @ wn)
    return rel


def test_gradient_variants_closed_form():
    lin = nn.Linear(5, 3).to(DT)
    x = torch.randn(4, 5, dtype=DT)
    y = torch.tensor([0, 1, 2, 1])
    w = lin.weight.detach()
    torch.testing.assert_close(at.gradient(lin, x, y), w[y])
    p = torch.softmax(lin(x), 1).detach()
    expect_loss = p @ w - w[y]  # ∇(−log p_y) = Σ_c p_c w_c − w_y
    torch.testing.assert_close(at.gradient(lin, x, y, output="loss"), expect_loss)
    py = p[torch.arange(4), y].unsqueeze(1)
    torch.testing.assert_close(at.gradient(lin, x, y, output="probability"), py * (w[y] - p @ w))
    pred = lin(x).argmax(1)
    torch.testing.assert_close(at.gradient(lin, x), w[pred])
    torch.testing.assert_close(at.gradient_x_input(lin, x, 2), x * w[2])


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_lrp0_equals_gradient_x_input_on_bias_free_relu_nets(seed):
    net = mlp(seed, bias=False)
    x = torch.randn(5, 6, dtype=DT, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(
        at.lrp(net, x, rule=at.Epsilon(0.0)), at.gradient_x_input(net, x), rtol=1e-9, atol=1e-12
    )
    conv = cnn(seed, bias=False)
    xi = torch.rand(3, 1, 8, 8, dtype=DT, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(
        at.lrp(conv, xi, rule=at.Epsilon(0.0)), at.gradient_x_input(conv, xi), rtol=1e-8, atol=1e-10
    )
    # conservation: Σ R = z_t for a bias-free ReLU net (BatchNorm's shift would be a bias)
    z = net(x)
    t = z.argmax(1)
    torch.testing.assert_close(
        at.lrp(net, x, rule=at.Epsilon(0.0)).sum(1), z[torch.arange(5), t], rtol=1e-8, atol=1e-10
    )


@pytest.mark.parametrize(
    "rule,name",
    [(at.Epsilon(0.1), "eps"), (at.ZPlus(), "zplus"), (at.AlphaBeta(2, 1), "alphabeta")],
)
def test_lrp_rules_match_explicit_layerwise_implementation(rule, name):
    net = mlp(3)
    x = torch.rand(6, 6, dtype=DT)  # non-negative inputs (z+ and αβ assume them)
    t = net(x).argmax(1)
    expect = explicit_lrp(net, x, t, name, eps=getattr(rule, "epsilon", 0.0))
    torch.testing.assert_close(at.lrp(net, x, t, rule=rule), expect, rtol=1e-7, atol=1e-9)


def test_gamma_rule_limits():
    net = mlp(4, bias=False)
    x = torch.rand(3, 6, dtype=DT)
    torch.testing.assert_close(
        at.lrp(net, x, rule=at.Gamma(0.0)), at.lrp(net, x, rule=at.Epsilon(1e-9))
    )
    big = at.lrp(net, x, rule=at.Gamma(1e6))
    torch.testing.assert_close(big, at.lrp(net, x, rule=at.ZPlus()), rtol=1e-4, atol=1e-6)


def test_bn_folding_keeps_forward_and_raises_on_unsupported():
    conv = cnn(1)
    x = torch.rand(2, 1, 8, 8, dtype=DT)
    torch.testing.assert_close(_lrp_model(conv, at.Epsilon(), None)(x), conv(x))
    with pytest.raises(TypeError, match=r"unsupported module '1' \(Tanh\)"):
        at.lrp(nn.Sequential(nn.Linear(3, 3), nn.Tanh()).to(DT), torch.rand(2, 3, dtype=DT))
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        at.AlphaBeta(1.0, 1.0)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_integrated_gradients_completeness(seed):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 12), nn.Softplus(), nn.Linear(12, 3)).to(
        DT
    )  # smooth: quadrature converges
    x = torch.randn(4, 6, dtype=DT)
    base = torch.randn(1, 6, dtype=DT) * 0.1
    ig = at.integrated_gradients(net, x, 1, baseline=base, steps=32)
    gap = net(x)[:, 1] - net(base.expand_as(x))[:, 1]
    torch.testing.assert_close(ig.sum(1), gap.detach(), rtol=1e-6, atol=1e-8)
    tr = at.integrated_gradients(net, x, 1, baseline=base, steps=400, method="trapezoid")
    torch.testing.assert_close(tr.sum(1), gap.detach(), rtol=1e-3, atol=1e-4)


def test_smoothgrad_seeded_and_sigma_zero_is_gradient():
    net = mlp(2)
    x = torch.randn(3, 6, dtype=DT)
    torch.testing.assert_close(at.smoothgrad(net, x, sigma=0.0, samples=3), at.gradient(net, x))
    a = at.smoothgrad(net, x, generator=torch.Generator().manual_seed(1))
    b = at.smoothgrad(net, x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "fn", [at.gradient, at.gradient_x_input, at.integrated_gradients, at.smoothgrad, at.lrp]
)
def test_create_graph_makes_attribution_trainable(fn):
    net = mlp(5)
    x = torch.rand(4, 6, dtype=DT)
    y = torch.tensor([0, 1, 2, 3])
    r = fn(net, x, y, create_graph=True)
    r.pow(2).sum().backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert net[0].weight.grad is not None  # the first layer's weights shape every attribution


def test_bad_inputs():
    net = mlp(0)
    with pytest.raises(ValueError, match="output"):
        at.gradient(net, torch.rand(2, 6, dtype=DT), output="margin")
    with pytest.raises(ValueError, match="steps"):
        at.integrated_gradients(net, torch.rand(2, 6, dtype=DT), steps=1)
    with pytest.raises(ValueError, match=r"target must lie in \[0, 3\]"):
        at.gradient(net, torch.rand(2, 6, dtype=DT), torch.tensor([0, 7]))
    with pytest.raises(TypeError, match="LRPRule"):
        at.lrp(net, torch.rand(2, 6, dtype=DT), rule="epsilon")


@pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")
def test_matches_captum():
    captum = pytest.importorskip("captum.attr")
    net = cnn(7).float()
    x = torch.rand(4, 1, 8, 8)
    t = torch.tensor([0, 1, 2, 3])
    ref = captum.InputXGradient(net).attribute(x, target=t)
    torch.testing.assert_close(at.gradient_x_input(net, x, t), ref, rtol=1e-5, atol=1e-6)
    ref = captum.IntegratedGradients(net).attribute(x, target=t, n_steps=40, method="gausslegendre")
    torch.testing.assert_close(
        at.integrated_gradients(net, x, t, steps=40), ref, rtol=1e-4, atol=1e-5
    )


def test_saliency_goes_through_engine_with_adjoint_model():
    net = cnn(9)
    x = torch.rand(2, 1, 8, 8, dtype=DT)
    torch.testing.assert_close(at.gradient(dbp.adjoint(net), x, 1), at.gradient(net, x, 1))
