"""The converted ``nn.Linear`` against stock autograd on an unconverted copy, in float64.

Its weight gradient is one product where stock forms two and adds them (the input-gradient
node hands its factors to the forward's node). The oracle is stock autograd through the same
penalties on the unconverted model; the op counts check that the hand-over is really taken
(today's code, with Linear unconverted, adds two weight-sized gradients per layer).
"""

from __future__ import annotations

import copy
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import doublebackprop as dbp
from doublebackprop.engine.converted_linear import AdjointLinear

DT = torch.float64


def _mlp(d_in: int = 20, hidden: int = 16, classes: int = 4, bias: bool = True) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(d_in, hidden, bias=bias),
        nn.ReLU(),
        nn.Linear(hidden, hidden, bias=bias),
        nn.Tanh(),
        nn.Linear(hidden, classes, bias=bias),
    ).to(DT)


def _data(n: int, d_in: int = 20, classes: int = 4, lead: tuple[int, ...] = ()):
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(n, *lead, d_in, generator=g, dtype=DT),
        torch.randint(0, classes, (n,), generator=g),
    )


def _grads(model: nn.Module) -> list[torch.Tensor]:
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]


def _close(got: list[torch.Tensor], ref: list[torch.Tensor], tol: float = 1e-12) -> None:
    assert len(got) == len(ref)
    for a, b in zip(got, ref):
        assert float((a - b).norm()) <= tol * max(float(b.norm()), 1e-300) or a.equal(b)


PENALTIES = {
    "gradient-norm": lambda: dbp.InputGradientPenalty(weight=0.3, target="loss"),
    "true-logit": lambda: dbp.InputGradientPenalty(weight=0.3, target="true_logit"),
    "DRR": lambda: dbp.RelevancePenalty(l1=0.01, l2=0.02),
    "jacobian": lambda: dbp.JacobianPenalty(weight=0.05),
}
ENGINES = {
    "autograd": lambda: dbp.Autograd(),
    "adjoint-loop": lambda: dbp.Adjoint(batched_rows=False),
    "adjoint-batched": lambda: dbp.Adjoint(batched_rows=True),
}


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("penalty", sorted(PENALTIES))
@pytest.mark.parametrize("n", [3, 40], ids=["stacked-rows", "accumulated"])
def test_penalised_gradients_equal_stock(n, penalty, engine):
    # 3 rows: the stacked factors are smaller than a weight; 40 rows: larger, accumulated instead
    model = _mlp()
    fast = dbp.adjoint(copy.deepcopy(model))
    assert isinstance(fast[0], AdjointLinear)
    x, y = _data(n)
    for net in (model, fast):
        net.zero_grad()
        res = dbp.objective(net, x, y, penalty=PENALTIES[penalty](), engine=ENGINES[engine]())
        res.total.backward()
    _close(_grads(fast), _grads(model))


@pytest.mark.parametrize(
    "lead,bias", [((), False), ((5,), True), ((2, 3), True)], ids=["no-bias", "3d", "4d"]
)
def test_inputs_with_leading_dims_and_no_bias(lead, bias):
    model = _mlp(bias=bias)
    fast = dbp.adjoint(copy.deepcopy(model))
    x, y = _data(4, lead=lead)

    def loss(net: nn.Module) -> torch.Tensor:
        xi = x.clone().requires_grad_(True)
        out = net(xi)
        if lead:  # pooled over the tokens
            out = out.mean(dim=tuple(range(1, xi.dim() - 1)))
        ce = F.cross_entropy(out, y)
        (g,) = torch.autograd.grad(ce, xi, create_graph=True)
        return ce + 0.5 * g.pow(2).sum()

    for net in (model, fast):
        net.zero_grad()
        loss(net).backward()
    _close(_grads(fast), _grads(model))


def test_unbatched_input_matches_stock():
    model, fast = nn.Linear(6, 3).to(DT), None
    fast = dbp.adjoint(copy.deepcopy(model))
    x = torch.randn(6, dtype=DT)
    for net in (model, fast):
        net.zero_grad()
        xi = x.clone().requires_grad_(True)
        out = net(xi)
        (g,) = torch.autograd.grad(out.pow(2).sum(), xi, create_graph=True)
        (out.sum() + g.pow(2).sum()).backward()
    _close(_grads(fast), _grads(model))


def test_third_order_and_a_retained_graph():
    """A Hessian-vector product of the penalised loss (the second backward is differentiated:
    no hand-over) and a retained graph backpropagated twice (one hand-over per pass)."""
    model = _mlp()
    fast = dbp.adjoint(copy.deepcopy(model))
    x, y = _data(5)
    pen = dbp.InputGradientPenalty(weight=0.3, target="loss")
    hvps, twice = [], []
    for net in (model, fast):
        params = list(net.parameters())
        total = dbp.objective(net, x, y, penalty=pen, engine="autograd").total
        grads = torch.autograd.grad(total, params, create_graph=True)
        v = [torch.ones_like(p) for p in params]
        hvps.append(torch.autograd.grad(sum((g * u).sum() for g, u in zip(grads, v)), params))
        net.zero_grad()
        total = dbp.objective(net, x, y, penalty=pen, engine="autograd").total
        total.backward(retain_graph=True)
        total.backward()
        twice.append(_grads(net))
    _close(list(hvps[1]), list(hvps[0]))
    _close(twice[1], twice[0])


def test_penalty_alone_and_one_weight_alone():
    """Backward passes that do not reach every forward node (the logit saliency's graph does
    not depend on the forward's outputs; ``autograd.grad`` asks for one weight only)."""
    model = _mlp()
    fast = dbp.adjoint(copy.deepcopy(model))
    x, y = _data(5)
    pen = dbp.InputGradientPenalty(weight=0.3, target="true_logit")
    alone, first = [], []
    for net in (model, fast):
        net.zero_grad()
        dbp.objective(net, x, y, penalty=pen, engine="autograd").penalty.backward()
        alone.append(_grads(net))
        total = dbp.objective(net, x, y, penalty=pen, engine="autograd").total
        first.append(torch.autograd.grad(total, [net[2].weight]))
    _close(alone[1], alone[0])
    _close(list(first[1]), list(first[0]))


class _Adds(TorchDispatchMode):
    def __init__(self, shapes: set[tuple[int, ...]]) -> None:
        super().__init__()
        self.shapes, self.counts = shapes, Counter[str]()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        name = str(func.overloadpacket)
        if isinstance(out, torch.Tensor) and tuple(out.shape) in self.shapes:
            self.counts[name] += 1
        return out


@pytest.mark.parametrize("n", [3, 40], ids=["stacked-rows", "accumulated"])
def test_weight_gradient_is_one_product_without_an_add(n):
    model = _mlp(hidden=16)
    fast = dbp.adjoint(copy.deepcopy(model))
    # stock forms a weight's gradient as W or as its transpose (addmm's mat2 = Wᵀ)
    shapes = {
        s for m in model if isinstance(m, nn.Linear) for s in (m.weight.shape, m.weight.T.shape)
    }
    x, y = _data(n)
    pen = dbp.InputGradientPenalty(weight=0.3, target="loss")
    counts = {}
    for key, net in (("stock", model), ("converted", fast)):
        net.zero_grad(set_to_none=True)
        total = dbp.objective(net, x, y, penalty=pen, engine="autograd").total
        with _Adds(shapes) as log:
            total.backward()
        counts[key] = log.counts
    assert counts["stock"]["aten.add"] == 3  # one per weight: its two products summed
    assert counts["stock"]["aten.mm"] == 6
    assert counts["converted"]["aten.add"] == 0
    # one product over the stacked rows, or one product and one accumulated into it
    assert counts["converted"]["aten.mm"] == 3
    assert counts["converted"]["aten.addmm_"] == (0 if n == 3 else 3)


def test_a_layer_called_twice_and_a_checkpointed_block():
    """One Linear applied twice (two forward nodes of one weight, each with its own hand-over)
    and a block under non-reentrant activation checkpointing (its saved tensors recomputed)."""
    from torch.utils.checkpoint import checkpoint

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.shared, self.head = nn.Linear(8, 8), nn.Linear(8, 3)
            self.block = nn.Sequential(nn.Linear(8, 8), nn.ReLU())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.shared(torch.relu(self.shared(x))))
            return self.head(checkpoint(self.block, h, use_reentrant=False))

    torch.manual_seed(0)
    model = Net().to(DT)
    fast = dbp.adjoint(copy.deepcopy(model))
    x, y = _data(4, d_in=8, classes=3)
    for net in (model, fast):
        net.zero_grad()
        pen = dbp.RelevancePenalty(l1=0.01, l2=0.02)
        dbp.objective(net, x, y, penalty=pen, engine="autograd").total.backward()
    _close(_grads(fast), _grads(model))
