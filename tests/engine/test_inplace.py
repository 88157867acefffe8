"""In-place activations keep their in-place semantics after conversion."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import doublebackprop as dbp


class ReusesPreActivation(nn.Module):
    """Reads the pre-activation after an in-place activation has overwritten it."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 3, 3, padding=1)
        self.act = act
        self.head = nn.Linear(3 * 8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        r = self.act(h)
        return self.head((h + r).flatten(1))


@pytest.mark.parametrize(
    "act", [nn.ReLU(inplace=True), nn.LeakyReLU(0.1, inplace=True)], ids=["relu", "leaky"]
)
def test_inplace_activation_semantics_and_gradients(act):
    torch.manual_seed(0)
    model = ReusesPreActivation(act).double()
    stock = copy.deepcopy(model)
    x = torch.randn(4, 1, 8, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0])
    fast = dbp.adjoint(model)
    assert torch.equal(fast(x), stock(x))
    pen = dbp.InputGradientPenalty(weight=0.5, target="loss")
    ref = dbp.objective(stock, x, y, penalty=pen, engine="autograd")
    ref.total.backward()
    res = dbp.objective(fast, x, y, penalty=pen, engine="adjoint")
    res.total.backward()
    assert torch.equal(res.logits, ref.logits)
    for p, q in zip(fast.parameters(), stock.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-12, atol=1e-15)


def test_inplace_relu_in_sequential_modifies_its_input():
    net = nn.Sequential(nn.ReLU(inplace=True))
    fast = dbp.adjoint(copy.deepcopy(net))
    a = torch.randn(10, dtype=torch.float64)
    b = a.clone()
    net(a)
    fast(b)
    assert torch.equal(a, b) and (b >= 0).all()
