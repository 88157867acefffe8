"""Honest fallbacks: every module left on stock autograd is named with its reason, functional
calls are visible through ``explain``, and attention on the CPU gets a usable hint."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import doublebackprop as dbp

from .nets import ResidualBN


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h, _ = self.attn(x, x, x, need_weights=False)
        return self.head(h.mean(1))


def test_warning_names_containers_with_own_computation():
    with pytest.warns(UserWarning, match=r"MultiheadAttention \(no adjoint rule\) at attn"):
        dbp.adjoint(Attention())


def test_warning_says_why_a_module_with_a_rule_is_kept():
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), nn.ReLU(), nn.LayerNorm(4)
    )
    with pytest.warns(UserWarning) as record:
        fast = dbp.adjoint(net)
    (msg,) = [str(w.message) for w in record if "stock autograd" in str(w.message)]
    assert "Conv2d(padding_mode='reflect') at 0" in msg
    assert "LayerNorm (no adjoint rule) at 2" in msg
    assert type(fast[0]) is nn.Conv2d and isinstance(fast[1], dbp.engine.AdjointModule)


def _stock_nodes(out):
    """Names of the backward nodes of ``out`` (an explicit walk, for the oracle)."""
    names, stack, seen = [], [out.grad_fn], set()
    while stack:
        n = stack.pop()
        if n is None or n in seen:
            continue
        seen.add(n)
        names.append(n.name())
        stack.extend(m for m, _ in n.next_functions)
    return names


def test_explain_lists_functional_calls_on_stock_autograd():
    torch.manual_seed(0)
    model = ResidualBN().double().train()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    stock_relus = _stock_nodes(copy.deepcopy(model)(x.requires_grad_()))
    assert stock_relus.count("ReluBackward0") == 3  # two ReLU modules + one torch.relu
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ex = dbp.explain(model, x.detach())
    assert ex.stock_ops["ReluBackward0"] == 1  # only the functional call is left on stock
    assert ex.adjoint_ops["ReLUFn"] == 2 and ex.adjoint_ops["ConvFn"] == 4
    assert "ConvolutionBackward0" not in ex.stock_ops
    assert not dbp.engine.is_adjoint(model)  # explained, not converted
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert "ReluBackward0" in str(ex)


def test_attention_on_cpu_gets_the_math_backend_hint():
    torch.manual_seed(0)
    model = Attention().double()
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    pen = dbp.InputGradientPenalty(weight=0.1)
    with pytest.raises(RuntimeError, match="math backend"):
        dbp.objective(model, x, y, penalty=pen, engine="autograd")
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        dbp.objective(model, x, y, penalty=pen, engine="autograd").total.backward()
    assert model.head.weight.grad is not None
    ex = dbp.explain(model, x)
    assert "ScaledDotProductFlashAttentionForCpuBackward0" in ex.stock_ops
