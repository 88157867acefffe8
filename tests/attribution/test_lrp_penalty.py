"""DRR with LRP relevance: ``RelevancePenalty(relevance="lrp", rule=...)`` gives the exact
parameter gradient of ``CE + l1‖R‖₁ + l2‖R‖₂²`` with the adjoint and autograd engines, checked
against autograd through an explicit, non-detached LRP recursion written in the tests; the other
engines refuse it before any work."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import doublebackprop as dbp
from doublebackprop import attribution as at
from tests.attribution.test_lrp_exact import RULES, explicit_lrp, mlp

DT = torch.float64
L1, L2 = 0.3, 0.7


def _batch(n: int = 6, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, 5, dtype=DT, generator=torch.Generator().manual_seed(seed))
    return x, torch.arange(n) % 3


def _reference(net, x, y, name, eps, weight=None, batch_sum=False):
    """``mean_i w_i (CE_i + l1‖R_i‖₁ + l2‖R_i‖₂²)`` with R from the explicit recursion."""
    r = explicit_lrp(net, x, y, name, eps).flatten(1)
    pen = L1 * r.abs().sum(1) + L2 * r.pow(2).sum(1)
    if batch_sum:
        pen = pen.sum().expand_as(pen)
    per = F.cross_entropy(net(x), y, reduction="none") + pen
    total = per.mean() if weight is None else (weight * per).mean()
    return total, torch.autograd.grad(total, list(net.parameters()))


@pytest.mark.parametrize("engine", ["adjoint", "autograd"])
@pytest.mark.parametrize("rule,name,eps", RULES, ids=[n + str(e) for _, n, e in RULES])
def test_lrp_drr_gradient_is_exact(rule, name, eps, engine):
    net = mlp(11)
    x, y = _batch()
    ref_total, ref = _reference(net, x, y, name, eps)
    model = copy.deepcopy(net)
    pen = dbp.RelevancePenalty(l1=L1, l2=L2, relevance="lrp", rule=rule)
    res = dbp.objective(model, x, y, penalty=pen, engine=engine)
    torch.testing.assert_close(res.total, ref_total, rtol=1e-10, atol=0)
    res.total.backward()
    for (pname, p), e in zip(model.named_parameters(), ref):
        torch.testing.assert_close(p.grad, e, rtol=1e-8, atol=1e-11, msg=f"parameter {pname}")


def test_lrp_drr_differs_from_gradient_x_input():
    """The option changes the penalty (a bias net with ε = 0.25 is far from gradient × input)."""
    x, y = _batch()
    a = dbp.objective(mlp(3), x, y, penalty=dbp.RelevancePenalty(l1=L1, l2=L2))
    b = dbp.objective(
        mlp(3),
        x,
        y,
        penalty=dbp.RelevancePenalty(l1=L1, l2=L2, relevance="lrp", rule=at.Epsilon(0.25)),
    )
    pa, pb = float(a.penalty.detach()), float(b.penalty.detach())
    assert abs(pa - pb) > 1e-3 * abs(pa)


def test_lrp_drr_with_sample_weight_and_batch_sum():
    net = mlp(5)
    x, y = _batch(8, seed=4)
    w = torch.linspace(0.5, 1.5, 8, dtype=DT)
    ref_total, ref = _reference(net, x, y, "eps", 0.01, weight=w, batch_sum=True)
    model = copy.deepcopy(net)
    pen = dbp.RelevancePenalty(
        l1=L1, l2=L2, reduction="batch_sum", relevance="lrp", rule=at.Epsilon(0.01)
    )
    res = dbp.objective(model, x, y, penalty=pen, sample_weight=w)
    torch.testing.assert_close(res.total, ref_total, rtol=1e-10, atol=0)
    res.total.backward()
    for p, e in zip(model.parameters(), ref):
        torch.testing.assert_close(p.grad, e, rtol=1e-8, atol=1e-11)


def test_first_rule_is_used():
    """``first_rule=Epsilon(0)`` on the first layer, ``Epsilon(0.25)`` elsewhere: the explicit
    recursion with the two rules (written out here)."""
    net = mlp(7)
    x, y = _batch()
    pen = dbp.RelevancePenalty(
        l1=L1, l2=L2, relevance="lrp", rule=at.Epsilon(0.25), first_rule=at.Epsilon(0.0)
    )
    got = dbp.objective(net, x, y, penalty=pen).penalty
    # explicit: the ε = 0.25 recursion down to the first Linear, then ε = 0 there
    acts = [x]
    for layer in net:
        acts.append(layer(acts[-1]))
    rel = torch.zeros_like(acts[-1]).scatter(1, y.view(-1, 1), acts[-1].gather(1, y.view(-1, 1)))
    for i in range(len(net) - 1, -1, -1):
        layer, a = net[i], acts[i]
        if isinstance(layer, nn.ReLU):
            continue
        zp = a @ layer.weight.T + layer.bias
        eps = 0.0 if i == 0 else 0.25
        den = zp + eps * torch.where(zp >= 0, 1.0, -1.0).to(DT)
        rel = a * ((rel / den) @ layer.weight)
    r = rel.flatten(1)
    want = (L1 * r.abs().sum(1) + L2 * r.pow(2).sum(1)).mean()
    torch.testing.assert_close(got, want, rtol=1e-10, atol=0)


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm1d(4)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(x + self.bn(self.conv(x)))


def _conv_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv1d(1, 4, 5, padding=2),
        nn.ReLU(),
        _Block(),
        nn.MaxPool1d(2),
        nn.Flatten(),
        nn.Linear(4 * 8, 3),
    ).to(DT)
    with torch.no_grad():
        bn = net[2].bn
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
    return net


def test_lrp_drr_adjoint_on_a_residual_conv_net_matches_stock_autograd():
    """On a converted residual conv net with BatchNorm and max pooling (train mode), the adjoint
    engine's gradient equals stock autograd through ``lrp(create_graph=True)`` on a stock copy."""
    x = torch.randn(5, 1, 16, dtype=DT, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 0, 1])
    stock = _conv_net()
    fast = dbp.adjoint(copy.deepcopy(stock))
    r = at.lrp(stock, x, y, rule=at.Gamma(0.25), create_graph=True).flatten(1)
    per = (
        F.cross_entropy(stock(x), y, reduction="none") + L1 * r.abs().sum(1) + L2 * r.pow(2).sum(1)
    )
    ref = torch.autograd.grad(per.mean(), list(stock.parameters()))
    pen = dbp.RelevancePenalty(l1=L1, l2=L2, relevance="lrp", rule=at.Gamma(0.25))
    dbp.objective(fast, x, y, penalty=pen, engine="adjoint").total.backward()
    for (pname, p), e in zip(fast.named_parameters(), ref):
        torch.testing.assert_close(p.grad, e, rtol=1e-8, atol=1e-11, msg=f"parameter {pname}")
    for a, b in zip(stock.buffers(), fast.buffers()):  # one forward each: the same update
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("engine", ["sweeps", "finite_difference"])
def test_other_engines_refuse_lrp_relevance(engine):
    net = mlp(1)
    x, y = _batch()
    before = copy.deepcopy(net.state_dict())
    pen = dbp.RelevancePenalty(l1=L1, l2=L2, relevance="lrp", rule=at.Epsilon(0.01))
    with pytest.raises(ValueError, match=f"'{engine}' engine cannot.*engine='adjoint'"):
        dbp.objective(net, x, y, penalty=pen, engine=engine)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


def test_soft_labels_are_refused_with_lrp_relevance():
    net = mlp(1)
    x, _ = _batch()
    q = torch.full((6, 3), 1 / 3, dtype=DT)
    pen = dbp.RelevancePenalty(l1=L1, l2=L2, relevance="lrp", rule=at.Epsilon(0.01))
    with pytest.raises(ValueError, match="needs class indices"):
        dbp.objective(net, x, q, penalty=pen, loss=lambda z, t: -(t * z.log_softmax(1)).sum(1))


def test_bad_lrp_settings_are_refused():
    with pytest.raises(ValueError, match="needs an LRP rule"):
        dbp.RelevancePenalty(l1=1, l2=1, relevance="lrp")
    with pytest.raises(TypeError, match="rule must be an LRP rule"):
        dbp.RelevancePenalty(l1=1, l2=1, relevance="lrp", rule="epsilon")
    with pytest.raises(TypeError, match="first_rule must be an LRP rule"):
        dbp.RelevancePenalty(l1=1, l2=1, relevance="lrp", rule=at.Epsilon(), first_rule=0.1)
    with pytest.raises(ValueError, match="relevance must be one of"):
        dbp.RelevancePenalty(l1=1, l2=1, relevance="LRP")
    with pytest.raises(ValueError, match="pass relevance='lrp'"):
        dbp.RelevancePenalty(l1=1, l2=1, rule=at.Epsilon())


def test_repr_names_the_rule():
    pen = dbp.RelevancePenalty(l1=1, l2=2, relevance="lrp", rule=at.Epsilon(0.01))
    assert (
        repr(pen) == "RelevancePenalty(l1=1.0, l2=2.0, relevance='lrp', rule=Epsilon(epsilon=0.01))"
    )
    assert repr(dbp.RelevancePenalty(l1=1, l2=2)) == "RelevancePenalty(l1=1.0, l2=2.0)"
