"""Bad input gives a clear error naming the argument; state is restored after errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import doublebackprop as dbp

PEN = dbp.RelevancePenalty(l1=1e-2, l2=1e-2)


def _net():
    return nn.Sequential(nn.Conv1d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16, 3))


@pytest.mark.parametrize(
    "x,y,exc,match",
    [
        (
            torch.ones(4, 1, 8, dtype=torch.int64),
            torch.zeros(4, dtype=torch.long),
            TypeError,
            "floating",
        ),
        (torch.ones(8), torch.zeros(1, dtype=torch.long), ValueError, "batch dimension"),
        (torch.full((4, 1, 8), float("nan")), torch.zeros(4, dtype=torch.long), ValueError, "NaN"),
        (torch.ones(4, 1, 8), torch.tensor([0, 1, 2, 3]), ValueError, r"y must lie in \[0, 2\]"),
        (torch.ones(4, 1, 8), torch.tensor([0.0, 1, 2, 0]), TypeError, "integer class indices"),
        (torch.ones(4, 1, 8), torch.zeros(3, dtype=torch.long), ValueError, r"shape \(4,\)"),
        ("x", torch.zeros(3, dtype=torch.long), TypeError, "x must be a torch.Tensor"),
    ],
)
@pytest.mark.parametrize("engine", ["adjoint", "autograd", "sweeps", "finite_difference"])
def test_bad_inputs(x, y, exc, match, engine):
    with pytest.raises(exc, match=match):
        dbp.objective(_net(), x, y, penalty=PEN, engine=engine)


def test_model_returning_non_logits():
    net = nn.Sequential(nn.Conv1d(1, 2, 3, padding=1))
    with pytest.raises(ValueError, match=r"logits of shape \(N, classes\)"):
        dbp.objective(net, torch.ones(4, 1, 8), torch.zeros(4, dtype=torch.long), penalty=PEN)


def test_bad_arguments():
    x, y = torch.randn(2, 1, 8), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="engine must be one of"):
        dbp.objective(_net(), x, y, penalty=PEN, engine="fast")
    with pytest.raises(TypeError, match="penalty must be a Penalty"):
        dbp.objective(_net(), x, y, penalty="drr")
    with pytest.raises(ValueError, match="sample_weight must have shape"):
        dbp.objective(_net(), x, y, penalty=PEN, sample_weight=torch.ones(3))
    with pytest.raises(ValueError, match="l1 must be a finite number >= 0"):
        dbp.RelevancePenalty(l1=-1.0, l2=0.0)
    with pytest.raises(ValueError, match="target must be one of"):
        dbp.InputGradientPenalty(weight=1.0, target="logit")
    with pytest.raises(ValueError, match="p must be >= 1"):
        dbp.InputGradientPenalty(weight=1.0, p=0.5)
    with pytest.raises(ValueError, match="projections"):
        dbp.JacobianPenalty(weight=1.0, projections=0)
    with pytest.raises(ValueError, match="step must be"):
        dbp.FiniteDifference(step=0.0)
    with pytest.raises(ValueError, match="target must lie in"):
        dbp.input_gradient(_net(), x, target=torch.tensor([0, 7]))


def test_nan_gradient_is_reported():
    class Blow(nn.Module):
        def forward(self, x):
            return torch.sqrt(x.flatten(1)[:, :2] * 0.0)  # sqrt'(0) = inf

    with pytest.raises(ValueError, match="input gradient contains NaN or Inf"):
        dbp.objective(
            Blow(), torch.ones(2, 3), torch.tensor([0, 1]), penalty=PEN, engine="autograd"
        )


def _bn_net():
    return nn.Sequential(
        nn.Conv1d(1, 2, 3, padding=1),
        nn.BatchNorm1d(2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16, 3),
    )


def _snapshot(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def _same_state(net, snap):
    state = net.state_dict()
    return list(state) == list(snap) and all(torch.equal(state[k], snap[k]) for k in snap)


@pytest.mark.parametrize("labels", [[0, 1, 2, 9], [0, -1, 2, 1]], ids=["too_large", "negative"])
@pytest.mark.parametrize("engine", ["adjoint", "autograd", "sweeps", "finite_difference"])
def test_state_restored_after_exception(engine, labels):
    """A rejected call leaves the model as it was: buffers (BatchNorm running statistics and
    num_batches_tracked), parameters, training flags, hooks, and the input's flags."""
    net = _bn_net().train()
    if engine == "sweeps":  # the sweeps engine has no BatchNorm rule: a plain net there
        net = _net().train()
    snap = _snapshot(net)
    hooks_before = sum(len(m._forward_hooks) + len(m._backward_hooks) for m in net.modules())
    x = torch.randn(4, 1, 8)
    with pytest.raises(ValueError, match="y must lie in"):
        dbp.objective(net, x, torch.tensor(labels), penalty=PEN, engine=engine)
    assert _same_state(net, snap)
    assert net.training is True
    assert x.requires_grad is False
    assert (
        sum(len(m._forward_hooks) + len(m._backward_hooks) for m in net.modules()) == hooks_before
    )
    net.eval()
    xr = torch.randn(4, 1, 8, requires_grad=True)
    with pytest.raises(ValueError):
        dbp.objective(net, xr, torch.tensor(labels), penalty=PEN, engine=engine)
    assert net.training is False and xr.requires_grad is True and xr.grad is None
    assert _same_state(net, snap)


@pytest.mark.parametrize("engine", ["adjoint", "autograd"])
def test_buffers_restored_after_late_error(engine):
    """An error found after the forward (a non-finite input gradient) restores the buffers."""

    class Blow(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm1d(3)

        def forward(self, x):
            return torch.sqrt(self.bn(x)[:, :2] * 0.0)

    net = Blow().train()
    snap = _snapshot(net)
    with pytest.raises(ValueError, match="NaN or Inf"):
        dbp.objective(
            net, torch.randn(4, 3), torch.tensor([0, 1, 1, 0]), penalty=PEN, engine=engine
        )
    assert _same_state(net, snap)


def test_rejected_input_gradient_keeps_buffers():
    net = _bn_net().train()
    snap = _snapshot(net)
    with pytest.raises(ValueError, match="target must lie in"):
        dbp.input_gradient(net, torch.randn(4, 1, 8), target=torch.tensor([0, 1, 2, 5]))
    assert _same_state(net, snap)


def test_objective_leaves_inputs_untouched():
    x = torch.randn(4, 1, 8)
    x0 = x.clone()
    dbp.objective(_net(), x, torch.tensor([0, 1, 2, 0]), penalty=PEN).total.backward()
    assert torch.equal(x, x0) and x.grad is None and not x.requires_grad
