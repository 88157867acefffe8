"""What a converted model computes, against the stock model's own operations (the oracle).

A plain training step on a converted model must run exactly stock's ATen operations (the
converted backward takes stock's fused kernels when nobody differentiates it), and a penalised
step no more operations than stock's double backward. Counted below the autograd layer with a
dispatch mode, so every tensor operation of forward and backward is seen.
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
from doublebackprop.engine.adjoint import AdjointModule
from doublebackprop.tools import zoo


class _Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def _models() -> dict[str, tuple[nn.Module, tuple[int, ...], int]]:
    torch.manual_seed(0)
    return {
        "mlp": (zoo.mlp(20, 16, 2, 3), (4, 20), 3),
        "cnn2d_maxpool": (zoo.cnn2d(1, 8, 3, widths=(4, 6)), (4, 1, 8, 8), 3),
        "resnet_bn": (zoo.resnet18_like(width=4, blocks=(1, 1)), (4, 3, 8, 8), 3),
        "isotopenet": (zoo.isotopenet(60, 2), (4, 1, 60), 2),
        "maxpool1d_leaky": (
            nn.Sequential(
                nn.Conv1d(1, 3, 3, padding=1),
                nn.LeakyReLU(0.1),
                nn.MaxPool1d(3, stride=2, padding=1),
                nn.Conv1d(3, 2, 3, bias=False),
                nn.BatchNorm1d(2, affine=False),
                nn.ReLU(),
                nn.Flatten(),
                nn.Linear(16, 2),
            ),
            (4, 1, 20),
            2,
        ),
        "dcgan_critic": (zoo.dcgan_discriminator(3, 4), (2, 3, 64, 64), 0),
    }


def _step_ops(net: nn.Module, x: torch.Tensor, y: torch.Tensor, classes: int) -> Counter[str]:
    net.zero_grad(set_to_none=True)
    torch.manual_seed(2)  # the same dropout masks for both models
    with _Ops() as log:
        out = net(x)
        loss = out.mean() if classes == 0 else F.cross_entropy(out, y)
        loss.backward()
    counts = log.counts
    # Aliases that move no data and compute nothing are not compared: ``detach`` (the converted
    # LeakyReLU saves its output instead of its input, less memory, and autograd detaches a
    # saved output) and the unit dim that 1-D pooling inserts (stock saves the 4-D tensors, the
    # converted pool re-inserts it in backward), and the transposes and views of matrix products
    # (stock's addmm transposes the weight in forward and backward and keeps the bias gradient's
    # dim; the converted linear forms its products on the tensors as they are)
    for alias in ("aten.detach", "aten.unsqueeze", "aten.squeeze", "aten.t", "aten.view"):
        counts.pop(alias, None)
    return counts


@pytest.mark.parametrize("input_grad", [False, True], ids=["plain", "input_requires_grad"])
@pytest.mark.parametrize("name", sorted(_models()))
def test_plain_step_runs_exactly_stocks_operations(name, input_grad):
    """Without an input gradient the converted modules run as their stock classes; with an
    input that requires grad they run their adjoint-built backward, whose not-differentiated
    branch calls stock's fused kernels: the same operations either way."""
    model, shape, classes = _models()[name]
    model.train()
    fast = dbp.adjoint(copy.deepcopy(model))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=g)
    y = torch.randint(0, max(classes, 1), (shape[0],), generator=g)
    # a fresh input each: its gradient is not accumulated twice
    stock_ops = _step_ops(model, x.clone().requires_grad_(input_grad), y, classes)
    fast_ops = _step_ops(fast, x.clone().requires_grad_(input_grad), y, classes)
    extra = {
        k: (stock_ops[k], fast_ops[k]) for k in stock_ops | fast_ops if stock_ops[k] != fast_ops[k]
    }
    assert not extra, f"(stock, converted) counts differ: {extra}"
    # the gradients are the same ones
    for p, q in zip(model.parameters(), fast.parameters()):
        if p.grad is None:
            assert q.grad is None
        else:
            torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["resnet_bn", "isotopenet", "cnn2d_maxpool", "mlp"])
def test_penalised_step_runs_no_more_operations_than_stock(name):
    model, shape, classes = _models()[name]
    fast = dbp.adjoint(copy.deepcopy(model))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=g)
    y = torch.randint(0, classes, (shape[0],), generator=g)
    penalty = dbp.InputGradientPenalty(weight=0.1, target="loss")
    totals = {}
    for key, net in (("stock", model), ("converted", fast)):
        net.zero_grad(set_to_none=True)
        with _Ops() as log:
            dbp.objective(net, x, y, penalty=penalty, engine="autograd").total.backward()
        log.counts.pop("aten.detach", None)
        totals[key] = sum(log.counts.values())
    assert totals["converted"] <= totals["stock"], totals


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("nd", [1, 2])
def test_train_batchnorm_second_derivatives_match_stock(nd, affine):
    """Every second-order term of train-mode BatchNorm, against stock autograd in float64:
    cotangents on the input gradient and on the weight and bias gradients, derivatives with
    respect to input, weight and the incoming gradient."""
    dt = torch.float64
    gen = torch.Generator().manual_seed(3)
    shape = (5, 3, 7) if nd == 1 else (4, 3, 3, 5)
    stock = (nn.BatchNorm1d if nd == 1 else nn.BatchNorm2d)(3, affine=affine).to(dt)
    if affine:
        with torch.no_grad():
            stock.weight.uniform_(0.5, 1.5, generator=gen)
            stock.bias.normal_(generator=gen)
    fast = dbp.adjoint(copy.deepcopy(stock))
    x0 = torch.randn(*shape, dtype=dt, generator=gen) * 2 + 0.5
    g0 = torch.randn(*shape, dtype=dt, generator=gen)
    u = torch.randn(*shape, dtype=dt, generator=gen)
    c_w, c_b = torch.randn(3, dtype=dt, generator=gen), torch.randn(3, dtype=dt, generator=gen)
    results = []
    for net in (stock, fast):
        x = x0.clone().requires_grad_(True)
        grad = g0.clone().requires_grad_(True)
        params = list(net.parameters())
        first = torch.autograd.grad(net(x), [x, *params], grad, create_graph=True)
        scalar = (first[0] * u).sum()
        if affine:
            scalar = scalar + (first[1] * c_w).sum() + (first[2] * c_b).sum()
        results.append(torch.autograd.grad(scalar, [x, grad, *params], allow_unused=True))
    for got, ref in zip(results[1], results[0]):
        if ref is None:  # stock's bias enters no second derivative
            assert got is None or float(got.abs().max()) == 0.0
            continue
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-12 * float(ref.abs().max()) + 1e-15)


def test_max_pool_penalty_sends_nothing_through_the_pooled_input():
    """The converted max pool is a constant-index linear map in its backward: a logit-saliency
    penalty does not reach the bias below it (stock sends explicit zeros)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(1, 3, 3, padding=1), nn.MaxPool1d(2), nn.Flatten()).double()
    head = nn.Linear(12, 2).double()
    for model in (nn.Sequential(copy.deepcopy(net), head), dbp.adjoint(nn.Sequential(net, head))):
        x = torch.randn(3, 1, 8, dtype=torch.float64, requires_grad=True)
        (s,) = torch.autograd.grad(model(x)[:, 0].sum(), x, create_graph=True)
        conv = model[0][0]
        (bias_grad,) = torch.autograd.grad(s.pow(2).sum(), [conv.bias], allow_unused=True)
        if isinstance(model[0][1], AdjointModule):
            assert bias_grad is None
        else:
            assert bias_grad is not None and float(bias_grad.abs().sum()) == 0.0


def _converted_nodes(out: torch.Tensor) -> list[str]:
    names, stack, seen = [], [out.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        cls = getattr(node, "_forward_cls", None)
        if cls is not None and cls.__module__.startswith("doublebackprop.engine.converted"):
            names.append(node.name())
        stack.extend(n for n, _ in node.next_functions)
    return names


def test_adjoint_path_is_taken_exactly_when_an_input_gradient_can_be_taken():
    torch.manual_seed(0)
    net = dbp.adjoint(_models()["resnet_bn"][0])
    x = torch.randn(2, 3, 8, 8)
    assert _converted_nodes(net(x)) == []  # a plain forward: stock's graph
    assert _converted_nodes(net(x.clone().requires_grad_(True)))  # the adjoint path
    inner = net[0]  # a converted submodule called on its own: the adjoint path
    assert _converted_nodes(inner(x))
    with torch.no_grad():
        assert net(x).grad_fn is None
    # a forward that raises leaves no decision behind
    with pytest.raises(RuntimeError):
        net(torch.randn(2, 5, 8, 8))
    assert _converted_nodes(inner(x))


def test_parameter_double_backward_without_input_gradient_is_stocks():
    """A penalty on *parameter* gradients (no input gradient) runs the stock modules: the
    same second derivatives as the stock model, to the bit."""
    torch.manual_seed(0)
    stock = _models()["cnn2d_maxpool"][0].double()
    fast = dbp.adjoint(copy.deepcopy(stock))
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0])
    result = []
    for net in (stock, fast):
        params = list(net.parameters())
        grads = torch.autograd.grad(F.cross_entropy(net(x), y), params, create_graph=True)
        norm = sum(g.pow(2).sum() for g in grads)
        result.append(torch.autograd.grad(norm, params))
    for a, b in zip(*result):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
