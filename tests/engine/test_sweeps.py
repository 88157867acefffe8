"""Operator counts of the explicit algorithm: the thesis' "one third saved"."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import doublebackprop as dbp
from doublebackprop.tools import zoo


def _count(act, penalty, classes=4):
    torch.manual_seed(0)
    net = zoo.mlp(6, 8, 3, classes, act).double()
    eng = dbp.Sweeps()
    x = torch.randn(5, 6, dtype=torch.float64)
    y = torch.randint(0, classes, (5,))
    dbp.objective(net, x, y, penalty=penalty, engine=eng).total.backward()
    return eng.last_count


def test_jacobian_relu_two_sweeps_per_row_softplus_three():
    relu = _count(nn.ReLU, dbp.JacobianPenalty(weight=1.0))
    soft = _count(nn.Softplus, dbp.JacobianPenalty(weight=1.0))
    assert relu.sweeps == ("B1", "F2")
    assert soft.sweeps == ("B1", "F2", "B2")
    layers = 4
    assert relu.rows == soft.rows == 4
    # per row and layer: B1 K^T + F2 (K + K^□) = 3 for ReLU. Softplus adds B2 from the last
    # activation down: K^□ for the 3 lower layers, K^T for the 2 above the first.
    assert relu.per_row() == 3 * layers
    assert soft.per_row() == 3 * layers + 3 + 2
    assert soft.ops["B2", "Kbox"] == 3 * soft.rows and soft.ops["B2", "KT"] == 2 * soft.rows
    assert relu.ops["F", "K"] == layers


def test_loss_saliency_keeps_head_term_on_relu():
    count = _count(nn.ReLU, dbp.InputGradientPenalty(weight=1.0, target="loss"))
    assert count.sweeps == ("B1", "F2", "B2")


def test_logit_saliency_drops_b2_on_relu():
    count = _count(nn.ReLU, dbp.RelevancePenalty(l1=1.0, l2=1.0))
    assert count.sweeps == ("B1", "F2")


def test_non_sequential_model_is_rejected():
    class Net(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(TypeError, match="nn.Sequential"):
        dbp.objective(
            Net(),
            torch.randn(2, 3),
            torch.tensor([0, 1]),
            penalty=dbp.JacobianPenalty(weight=1.0),
            engine="sweeps",
        )


def test_unsupported_layer_named():
    net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    with pytest.raises(TypeError, match="BatchNorm1d at position 1"):
        dbp.objective(
            net,
            torch.randn(4, 3),
            torch.tensor([0, 1, 0, 1]),
            penalty=dbp.JacobianPenalty(weight=1.0),
            engine="sweeps",
        )


@pytest.mark.parametrize("family", ["mlp", "mlp_leaky", "cnn1d", "cnn2d", "smooth"])
def test_sweeps_on_a_converted_model(family):
    import copy

    from .nets import families

    model, shape, classes = families()[family]
    model.eval()
    stock = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (shape[0],), generator=g)
    pen = dbp.JacobianPenalty(weight=0.1)
    dbp.objective(stock, x, y, penalty=pen, engine="autograd").total.backward()
    fast = dbp.adjoint(model)
    eng = dbp.Sweeps()
    dbp.objective(fast, x, y, penalty=pen, engine=eng).total.backward()
    assert eng.last_count is not None and eng.last_count.sweeps[:2] == ("B1", "F2")
    for p, q in zip(fast.parameters(), stock.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("drop", [nn.Dropout(0.2), nn.Dropout1d(0.2), nn.AlphaDropout(0.2)])
def test_train_mode_dropout_hint(drop):
    net = nn.Sequential(nn.Linear(3, 3), drop, nn.Linear(3, 2)).train()
    x = torch.randn(4, 3)
    with pytest.raises(TypeError, match=r"in train mode \(call \.eval\(\)\)"):
        dbp.objective(
            net,
            x,
            torch.tensor([0, 1, 0, 1]),
            penalty=dbp.JacobianPenalty(weight=1.0),
            engine="sweeps",
        )
