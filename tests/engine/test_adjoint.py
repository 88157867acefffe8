"""The conversion: shared state, bit-identical forwards, second derivatives, fallbacks."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import doublebackprop as dbp
from doublebackprop.engine.adjoint import AdjointModule

from .nets import families


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("family", sorted(families()))
def test_forward_bit_identical_and_state_shared(family, mode):
    model, shape, _ = families()[family]
    model.train(mode == "train")
    fast = dbp.adjoint(model)
    x = torch.randn(*shape, dtype=torch.float64)
    torch.manual_seed(1)
    ref = model(x)
    torch.manual_seed(1)
    out = fast(x)
    assert torch.equal(ref, out)
    assert list(model.state_dict()) == list(fast.state_dict())
    for (n1, p1), (n2, p2) in zip(model.named_parameters(), fast.named_parameters()):
        assert n1 == n2 and p1 is p2
    for b1, b2 in zip(model.buffers(), fast.buffers()):
        assert b1 is b2
    assert any(isinstance(m, AdjointModule) for m in fast.modules())
    assert not any(isinstance(m, AdjointModule) for m in model.modules())


def test_training_updates_both():
    model, shape, classes = families()["resnet_bn"]
    fast = dbp.adjoint(model)
    before = model.block.bn1.running_mean.clone()
    fast.train()
    fast(torch.randn(*shape, dtype=torch.float64))
    assert not torch.equal(model.block.bn1.running_mean, before)
    assert int(model.block.bn1.num_batches_tracked) == 1


@pytest.mark.parametrize("train", [True, False])
def test_gradgradcheck_smooth_and_batchnorm(train):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv1d(1, 2, 3, stride=2, padding=1),
        nn.BatchNorm1d(2),
        nn.Softplus(),
        nn.AvgPool1d(2),
        nn.Identity(),
        nn.Flatten(),
        nn.Linear(8, 2),
    ).double()
    fast = dbp.adjoint(net).train(train)
    x = torch.randn(4, 1, 16, dtype=torch.float64, requires_grad=True)
    params = dict(fast.named_parameters())
    names = list(params)

    def f(x, *ps):
        out = torch.func.functional_call(
            fast, {**dict(zip(names, ps)), **dict(fast.named_buffers())}, (x,)
        )
        return out

    ps = tuple(p.detach().clone().requires_grad_(True) for p in params.values())
    # buffers (running stats) are updated by each call in train mode; statistics are batch ones
    assert torch.autograd.gradcheck(f, (x, *ps))
    assert torch.autograd.gradgradcheck(f, (x, *ps))


def test_unsupported_module_warns_once_naming_it():
    class Odd(nn.Module):
        def forward(self, x):
            return x * 2

    net = nn.Sequential(nn.Linear(3, 3), Odd(), Odd(), nn.ReLU())
    with pytest.warns(UserWarning, match="Odd") as record:
        fast = dbp.adjoint(net)
    assert len([w for w in record if "no adjoint rule" in str(w.message)]) == 1
    x = torch.randn(2, 3)
    assert torch.equal(fast(x), net(x))


def test_known_modules_do_not_warn():
    net = families()["isotopenet"][0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dbp.adjoint(net)


def test_converting_twice_is_a_no_op():
    net = nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU())
    fast = dbp.adjoint(net)
    assert dbp.adjoint(fast) is fast


def test_non_module_is_rejected():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        dbp.adjoint(lambda x: x)


def test_circular_padding_conv_falls_back_to_stock():
    net = nn.Sequential(nn.Conv1d(1, 2, 3, padding=1, padding_mode="circular"))
    with pytest.warns(UserWarning, match="Conv1d"):
        fast = dbp.adjoint(net)
    x = torch.randn(2, 1, 8)
    assert torch.equal(fast(x), net(x))


def test_relu_net_penalty_has_no_second_backward_through_primal_graph():
    """φ'' = 0 made explicit: the logit-saliency graph never reaches the pre-activations."""
    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)).double()
    fast = dbp.adjoint(copy.deepcopy(net))
    for model in (fast, net):
        x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
        (s,) = torch.autograd.grad(model(x)[:, 0].sum(), x, create_graph=True)
        grads = torch.autograd.grad(s.pow(2).sum(), list(model.parameters()), allow_unused=True)
        bias_grad = grads[1]
        # the penalty does not reach the first bias at all (None) with the adjoint model,
        # while stock autograd sends explicit zeros back through the primal graph
        if model is fast:
            assert bias_grad is None
        else:
            assert bias_grad is not None and float(bias_grad.abs().sum()) == 0.0
