"""Each private PyTorch entry point the engine uses, against the public op it stands for."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from doublebackprop.engine import _torch_compat as compat

DT = torch.float64


def _probe(seen: dict[str, bool]) -> type[torch.autograd.Function]:
    """``x * y`` whose backward records, in ``seen``, whether each input's node will run."""

    class Probe(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, y):  # type: ignore[override]
            return x * y

        @staticmethod
        def backward(ctx, g):  # type: ignore[override]
            nodes = [n for n, _ in ctx.next_functions]
            seen["a"], seen["b"] = (compat.will_engine_execute(n) for n in nodes)
            return g, g

    return Probe


def test_will_engine_execute_inside_and_outside_a_backward():
    assert compat.will_engine_execute(None) is False
    a = torch.randn(3, dtype=DT, requires_grad=True)
    b = torch.randn(3, dtype=DT, requires_grad=True)
    seen: dict[str, bool] = {}
    Probe = _probe(seen)

    out = Probe.apply(a * 1.0, b * 1.0).sum()
    torch.autograd.grad(out, a)  # only a's branch is needed
    assert seen == {"a": True, "b": False}
    # outside a backward the private call raises; the documented fallback is True
    assert compat.will_engine_execute((a * 1.0).grad_fn) is True


def test_will_engine_execute_on_leaves():
    """The converted layers pass parameters to their autograd.Functions as they are: a leaf
    that ``autograd.grad`` captures reads True, one it does not reads False, and in
    ``backward()`` every leaf that requires grad reads True."""
    a = torch.randn(3, dtype=DT, requires_grad=True)
    b = torch.randn(3, dtype=DT, requires_grad=True)
    seen: dict[str, bool] = {}
    Probe = _probe(seen)

    torch.autograd.grad(Probe.apply(a, b).sum(), a)
    assert seen == {"a": True, "b": False}
    torch.autograd.grad(Probe.apply(a, b).sum(), b)
    assert seen == {"a": False, "b": True}
    Probe.apply(a, b).sum().backward()
    assert seen == {"a": True, "b": True}
    Probe.apply(a, b).sum().backward(inputs=[b])
    assert seen == {"a": False, "b": True}


@pytest.mark.parametrize("groups", [1, 2])
def test_convolution_backward_matches_autograd(groups):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 11, dtype=DT, generator=g, requires_grad=True)
    w = torch.randn(6, 4 // groups, 3, dtype=DT, generator=g, requires_grad=True)
    out = F.conv1d(x, w, None, (2,), (1,), (1,), groups)
    grad = torch.randn(out.shape, dtype=DT, generator=g)
    ref = torch.autograd.grad(out, (x, w), grad)
    gx, gw, gb = compat.convolution_backward(
        grad, x.detach(), w.detach(), (2,), (1,), (1,), groups, [True, True, True]
    )
    torch.testing.assert_close(gx, ref[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(gw, ref[1], rtol=0, atol=1e-12)
    torch.testing.assert_close(gb, grad.sum((0, 2)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("nd", [1, 2])
def test_max_pool2d_backward_matches_autograd(nd):
    g = torch.Generator().manual_seed(2)
    shape = (2, 3, 9) if nd == 1 else (2, 3, 7, 9)
    x = torch.randn(*shape, dtype=DT, generator=g, requires_grad=True)
    pool = F.max_pool1d if nd == 1 else F.max_pool2d
    out, idx = pool(x, 3, 2, 1, return_indices=True)
    grad = torch.randn(out.shape, dtype=DT, generator=g)
    (ref,) = torch.autograd.grad(out, x, grad)
    if nd == 1:
        got = compat.max_pool2d_backward(
            grad.unsqueeze(-2),
            x.detach().unsqueeze(-2),
            [1, 3],
            [1, 2],
            [0, 1],
            [1, 1],
            False,
            idx.unsqueeze(-2),
        ).squeeze(-2)
    else:
        got = compat.max_pool2d_backward(
            grad, x.detach(), [3, 3], [2, 2], [1, 1], [1, 1], False, idx
        )
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_legacy_batched_reads_the_batched_backward():
    x = torch.randn(3, dtype=DT, requires_grad=True)
    seen = []

    class Probe(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):  # type: ignore[override]
            return t * 2

        @staticmethod
        def backward(ctx, g):  # type: ignore[override]
            seen.append(compat.legacy_batched(g))
            return g * 2

    torch.autograd.grad(Probe.apply(x), x, torch.eye(3, dtype=DT), is_grads_batched=True)
    torch.autograd.grad(Probe.apply(x), x, torch.ones(3, dtype=DT))
    assert seen == [True, False]


def test_relu_backward():
    x = torch.randn(50, dtype=DT)
    grad = torch.randn(50, dtype=DT)
    torch.testing.assert_close(compat.relu_backward(grad, torch.relu(x)), grad * (x > 0))


@pytest.mark.parametrize("batch_stats", [True, False])
def test_batch_norm_forward_and_backward_match_stock(batch_stats):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 3, 7, dtype=DT, generator=g, requires_grad=True)
    w = torch.rand(3, dtype=DT, generator=g).add(0.5).requires_grad_()
    b = torch.randn(3, dtype=DT, generator=g).requires_grad_()
    rm, rv = torch.zeros(3, dtype=DT), torch.ones(3, dtype=DT)
    rm2, rv2 = rm.clone(), rv.clone()
    ref = F.batch_norm(x, rm, rv, w, b, training=batch_stats, momentum=0.1, eps=1e-5)
    out, mean, invstd, reserve, impl = compat.batch_norm_forward(
        x.detach(), w.detach(), b.detach(), rm2, rv2, batch_stats, 0.1, 1e-5
    )
    torch.testing.assert_close(out, ref.detach(), rtol=0, atol=0)
    torch.testing.assert_close(rm2, rm, rtol=0, atol=0)  # the running statistics move alike
    if batch_stats:
        grad = torch.randn(ref.shape, dtype=DT, generator=g)
        gx_ref, gw_ref, gb_ref = torch.autograd.grad(ref, (x, w, b), grad)
        gx, gw, gb = compat.batch_norm_backward(
            impl, x.detach(), grad, w.detach(), mean, invstd, 1e-5, [True, True, True], reserve
        )
        torch.testing.assert_close(gx, gx_ref, rtol=0, atol=1e-12)
        torch.testing.assert_close(gw, gw_ref, rtol=0, atol=1e-12)
        torch.testing.assert_close(gb, gb_ref, rtol=0, atol=1e-12)


def test_check_batch_norm_input_is_stocks_check():
    bn = nn.BatchNorm1d(3)
    compat.check_batch_norm_input(bn, torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="expected 2D or 3D input"):
        compat.check_batch_norm_input(bn, torch.zeros(2, 3, 4, 5))
