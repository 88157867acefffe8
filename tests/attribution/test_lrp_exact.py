"""LRP: exact parameter gradients (against an explicit, non-detached LRP and finite differences),
rules applied per module in any architecture, and Captum's LRP as a peer."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from doublebackprop import attribution as at

DT = torch.float64


def mlp(seed: int, bias: bool = True) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(5, 7, bias=bias),
        nn.ReLU(),
        nn.Linear(7, 6, bias=bias),
        nn.ReLU(),
        nn.Linear(6, 3, bias=bias),
    ).to(DT)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=DT) * 0.6)
    return net


def _rule_parts(name: str, w, b, eps: float):
    """The textbook rules, written out: ``[(c, W', b', ε)]`` (mirrors no project code)."""
    zero = torch.zeros_like(b) if b is not None else 0
    if name == "eps":
        return [(1.0, w, b if b is not None else zero, eps)]
    if name == "zplus":
        return [(1.0, w.clamp(min=0), zero, 1e-9)]
    if name == "alphabeta":
        return [
            (2.0, w.clamp(min=0), b.clamp(min=0) if b is not None else zero, 1e-9),
            (-1.0, w.clamp(max=0), b.clamp(max=0) if b is not None else zero, 1e-9),
        ]
    if name == "gamma":
        return [(1.0, w + 0.25 * w.clamp(min=0), b + 0.25 * b.clamp(min=0), 1e-9)]
    raise ValueError(name)


def explicit_lrp(net: nn.Sequential, x, t, name: str, eps: float = 0.0):
    """Layer-by-layer LRP recursion on a Linear/ReLU MLP; nothing detached, so autograd through
    it gives the true derivative of the relevance."""
    acts = [x]
    for layer in net:
        acts.append(layer(acts[-1]))
    out = acts[-1]
    rel = torch.zeros_like(out).scatter(1, t.view(-1, 1), out.gather(1, t.view(-1, 1)))
    for i in range(len(net) - 1, -1, -1):
        layer, a = net[i], acts[i]
        if isinstance(layer, nn.ReLU):
            continue
        new = torch.zeros_like(a)
        for c, wp, bp, e in _rule_parts(name, layer.weight, layer.bias, eps):
            zp = a @ wp.T + bp
            den = zp + e * torch.where(zp >= 0, 1.0, -1.0).to(DT)
            new = new + c * a * ((rel / den) @ wp)
        rel = new
    return rel


RULES = [
    (at.Epsilon(0.01), "eps", 0.01),
    (at.Epsilon(0.25), "eps", 0.25),
    (at.ZPlus(), "zplus", 0.0),
    (at.AlphaBeta(2, 1), "alphabeta", 0.0),
    (at.Gamma(0.25), "gamma", 0.0),
]


def _loss(r: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (weights * r).sum() + 0.5 * r.pow(2).sum()


@pytest.mark.parametrize("rule,name,eps", RULES, ids=[n + str(e) for _, n, e in RULES])
def test_lrp_parameter_gradient_is_exact(rule, name, eps):
    """|relative error| < 1e-8 against autograd through the explicit recursion (float64)."""
    net = mlp(11)
    x = torch.rand(6, 5, dtype=DT, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 1, 2, 0, 1, 2])
    wts = torch.randn(6, 5, dtype=DT, generator=torch.Generator().manual_seed(2))
    ref_r = explicit_lrp(net, x, t, name, eps)
    ref = torch.autograd.grad(_loss(ref_r, wts), list(net.parameters()))
    r = at.lrp(net, x, t, rule=rule, create_graph=True)
    torch.testing.assert_close(r, ref_r, rtol=1e-9, atol=1e-11)
    got = torch.autograd.grad(_loss(r, wts), list(net.parameters()))
    for (pname, _), g, e in zip(net.named_parameters(), got, ref):
        torch.testing.assert_close(g, e, rtol=1e-8, atol=1e-10, msg=f"parameter {pname}")


@pytest.mark.parametrize("rule,name,eps", RULES, ids=[n + str(e) for _, n, e in RULES])
def test_lrp_parameter_gradient_matches_finite_differences(rule, name, eps):
    """Central differences along a random parameter direction, step 1e-6, float64."""
    net = mlp(5)
    x = torch.rand(4, 5, dtype=DT, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([2, 1, 0, 2])
    wts = torch.randn(4, 5, dtype=DT, generator=torch.Generator().manual_seed(4))
    params = list(net.parameters())
    gen = torch.Generator().manual_seed(6)
    v = [torch.randn(p.shape, generator=gen, dtype=DT) for p in params]
    grads = torch.autograd.grad(_loss(at.lrp(net, x, t, rule=rule, create_graph=True), wts), params)
    directional = sum(float((g * d).sum()) for g, d in zip(grads, v))

    def value(s: float) -> float:
        shifted = copy.deepcopy(net)
        with torch.no_grad():
            for p, d in zip(shifted.parameters(), v):
                p.add_(s * d)
        return float(_loss(at.lrp(shifted, x, t, rule=rule), wts))

    h = 1e-6
    fd = (value(h) - value(-h)) / (2 * h)
    assert abs(fd - directional) <= 1e-5 * max(1.0, abs(fd)), (fd, directional)


def test_lrp_input_gradient_is_exact():
    net = mlp(2)
    x = torch.rand(3, 5, dtype=DT, generator=torch.Generator().manual_seed(0)).requires_grad_()
    t = torch.tensor([0, 1, 2])
    r = at.lrp(net, x, t, rule=at.Epsilon(0.25), create_graph=True)
    (g,) = torch.autograd.grad(r.pow(2).sum(), x)
    (ref,) = torch.autograd.grad(explicit_lrp(net, x, t, "eps", 0.25).pow(2).sum(), x)
    torch.testing.assert_close(g, ref, rtol=1e-8, atol=1e-10)


class SkipSequential(nn.Sequential):
    """An ``nn.Sequential`` subclass with a residual forward of its own."""

    def forward(self, x):
        h = self[1](self[0](x))
        return self[3](self[2](h) + h)


def _skip_net(seed: int) -> SkipSequential:
    g = torch.Generator().manual_seed(seed)
    net = SkipSequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 6), nn.Linear(6, 3)).to(DT)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=DT) * 0.7)
    return net


def test_custom_forward_is_kept_not_flattened():
    """LRP-0 is gradient × input on any ReLU net; a flattened copy would drop the skip."""
    net = _skip_net(0)
    x = torch.rand(5, 5, dtype=DT, generator=torch.Generator().manual_seed(1)).requires_grad_()
    z = net(x)
    t = z.argmax(1)
    (g,) = torch.autograd.grad(z.gather(1, t.view(-1, 1)).sum(), x)
    torch.testing.assert_close(
        at.lrp(net, x.detach(), t, rule=at.Epsilon(0.0)), x.detach() * g, rtol=1e-9, atol=1e-12
    )


def test_residual_epsilon_rule_against_explicit_propagation():
    """ε-rule on a residual net, written out: rule layers scale by z/(z+ε), the sum passes."""
    net = _skip_net(3)
    x = torch.rand(4, 5, dtype=DT, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0, 1, 2, 1])
    eps = 0.1
    lin0, lin2, lin3 = net[0], net[2], net[3]

    def q(z):
        return z / (z + eps * torch.where(z >= 0, 1.0, -1.0).to(DT))

    z0 = lin0(x)
    h = torch.relu(z0)
    z2 = lin2(h)
    s = z2 + h
    z3 = lin3(s)
    g3 = torch.zeros_like(z3).scatter(1, t.view(-1, 1), 1.0)
    gs = (g3 * q(z3)) @ lin3.weight
    gh = gs + (gs * q(z2)) @ lin2.weight
    gx = ((gh * (z0 > 0)) * q(z0)) @ lin0.weight
    torch.testing.assert_close(
        at.lrp(net, x, t, rule=at.Epsilon(eps)), x * gx, rtol=1e-9, atol=1e-12
    )


def _randomise_bn(net: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g, dtype=DT) - 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g, dtype=DT) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g, dtype=DT) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g, dtype=DT) - 0.5)


def _grad_x_input(net: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    xr = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(net(xr).gather(1, t.view(-1, 1)).sum(), xr)
    return x * g


def test_small_resnet_and_isotopenet_get_lrp():
    from doublebackprop.msi.models.networks import IsotopeNet
    from doublebackprop.vision.models import SmallResNet

    torch.manual_seed(0)
    res = SmallResNet(width=0.25).to(DT).eval()
    _randomise_bn(res, 1)
    x = torch.rand(3, 1, 12, 12, dtype=DT, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 3, 7])
    torch.testing.assert_close(
        at.lrp(res, x, t, rule=at.Epsilon(0.0)), _grad_x_input(res, x, t), rtol=1e-7, atol=1e-10
    )
    r = at.lrp(res, x, t, rule=at.Epsilon(0.25))
    assert torch.isfinite(r).all() and not torch.allclose(r, _grad_x_input(res, x, t))
    for bn in ("channel", "scalar"):
        iso = IsotopeNet(input_length=90, num_classes=2, batch_norm=bn).to(DT).eval()
        _randomise_bn(iso, 2)
        s = torch.rand(4, 90, dtype=DT, generator=torch.Generator().manual_seed(3))
        t2 = torch.tensor([0, 1, 1, 0])
        torch.testing.assert_close(
            at.lrp(iso, s, t2, rule=at.Epsilon(0.0)),
            _grad_x_input(iso, s, t2),
            rtol=1e-7,
            atol=1e-10,
        )


class Swish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


class OwnParameter(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(3, dtype=DT))
        self.lin = nn.Linear(3, 2).to(DT)

    def forward(self, x):
        return self.lin(x * self.scale)


def test_unsupported_modules_raise_naming_themselves():
    block = nn.Sequential(nn.Linear(3, 3), Swish())
    net = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), block, nn.Linear(3, 2)).to(DT)
    with pytest.raises(TypeError, match=r"unsupported module '2\.1' \(Swish\)"):
        at.lrp(net, torch.rand(2, 3, dtype=DT))
    with pytest.raises(TypeError, match=r"'the model' \(OwnParameter\) holds parameters"):
        at.lrp(OwnParameter(), torch.rand(2, 3, dtype=DT))


def test_train_mode_dropout_uses_one_mask_in_both_passes():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 40), nn.ReLU(), nn.Dropout(0.5), nn.Linear(40, 3)).to(DT)
    x = torch.rand(4, 5, dtype=DT)
    t = torch.tensor([0, 1, 2, 0])
    torch.manual_seed(7)
    r = at.lrp(net, x, t, rule=at.Epsilon(0.0))
    torch.manual_seed(7)
    mask = torch.nn.functional.dropout(torch.ones(4, 40, dtype=DT), 0.5, True)  # the same draw
    h = torch.relu(net[0](x)) * mask
    expect = x * (
        (torch.zeros(4, 3, dtype=DT).scatter(1, t.view(-1, 1), 1.0) @ net[3].weight)
        * mask
        * (h > 0)
        @ net[0].weight
    )
    torch.testing.assert_close(r, expect, rtol=1e-9, atol=1e-12)


CAPTUM = [("epsilon", True), ("zplus", False), ("gamma", False)]


@pytest.mark.parametrize("name,bias", CAPTUM)
def test_matches_captum_lrp(name, bias):
    """Captum's LRP (hooks on the original layers) for the rules it has, on a ReLU MLP."""
    lrp_rules = pytest.importorskip("captum.attr._utils.lrp_rules")
    from captum.attr import LRP

    net = mlp(8, bias=bias)
    x = torch.rand(5, 5, dtype=DT, generator=torch.Generator().manual_seed(9))
    t = net(x).argmax(1)
    ref_net = copy.deepcopy(net)
    for m in ref_net:
        if isinstance(m, nn.Linear):
            m.rule = {
                "epsilon": lambda: lrp_rules.EpsilonRule(epsilon=0.1),
                "zplus": lambda: lrp_rules.Alpha1_Beta0_Rule(set_bias_to_zero=True),
                "gamma": lambda: lrp_rules.GammaRule(gamma=0.25),
            }[name]()
    ref = LRP(ref_net).attribute(x, target=t)
    rule = {"epsilon": at.Epsilon(0.1), "zplus": at.ZPlus(), "gamma": at.Gamma(0.25)}[name]
    torch.testing.assert_close(at.lrp(net, x, t, rule=rule), ref, rtol=1e-7, atol=1e-9)


def test_train_mode_dropout2d_drops_whole_channels():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Dropout2d(0.5), nn.Flatten(), nn.Linear(96, 2)
    ).to(DT)
    x = torch.rand(3, 1, 4, 4, dtype=DT)
    t = torch.tensor([0, 1, 0])
    torch.manual_seed(3)
    r = at.lrp(net, x, t, rule=at.Epsilon(0.0))
    torch.manual_seed(3)
    mask = torch.nn.functional.dropout2d(torch.ones(3, 6, 4, 4, dtype=DT), 0.5, True)
    xr = x.clone().requires_grad_()
    h = torch.relu(net[0](xr)) * mask
    (g,) = torch.autograd.grad(net[4](h.flatten(1)).gather(1, t.view(-1, 1)).sum(), xr)
    torch.testing.assert_close(r, x * g, rtol=1e-9, atol=1e-12)
