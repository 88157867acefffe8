"""``gradient_penalty`` (R1/R2, WGAN-GP) against explicit float64 double backprop."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import doublebackprop as dbp


def critic(batch_norm: bool, squeeze: bool) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(1, 4, 4, 2, 1), nn.LeakyReLU(0.2)]
    layers += [nn.Conv2d(4, 6, 4, 2, 1, bias=not batch_norm)]
    layers += [nn.BatchNorm2d(6)] if batch_norm else []
    layers += [nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(6 * 2 * 2, 1)]
    if squeeze:
        layers.append(nn.Flatten(0))  # (N, 1) -> (N,)
    return nn.Sequential(*layers).double()


def reference(model, x, center, weight):
    leaf = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(leaf).sum(), leaf, create_graph=True)
    norm = g.flatten(1).pow(2).sum(1).sqrt()
    return weight * (norm - center).pow(2).mean()


@pytest.mark.parametrize("squeeze", [False, True], ids=["N1", "N"])
@pytest.mark.parametrize("center", [0.0, 1.0], ids=["R1", "WGAN-GP"])
@pytest.mark.parametrize("engine", ["adjoint", "autograd", "sweeps"])
@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "bn"])
def test_gradient_penalty_matches_explicit(batch_norm, engine, center, squeeze):
    if engine == "sweeps" and (batch_norm or squeeze):
        pytest.skip("the sweeps engine has no BatchNorm rule and needs (N, 1) outputs")
    model = critic(batch_norm, squeeze).train()
    ref_model = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    real = torch.randn(5, 1, 8, 8, generator=g, dtype=torch.float64)
    fake = torch.randn(5, 1, 8, 8, generator=g, dtype=torch.float64)
    eps = torch.rand(5, 1, 1, 1, generator=g, dtype=torch.float64)
    x = real if center == 0 else eps * real + (1 - eps) * fake
    ref = reference(ref_model, x, center, 10.0)
    ref.backward()
    gp = dbp.gradient_penalty(model, x, center=center, weight=10.0, engine=engine)
    assert torch.allclose(gp, ref, rtol=1e-13, atol=0)
    gp.backward()
    for p, q in zip(model.parameters(), ref_model.parameters()):
        # a parameter the penalty does not reach (the last bias) may hold None or zeros
        a = torch.zeros_like(p) if p.grad is None else p.grad
        b = torch.zeros_like(q) if q.grad is None else q.grad
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
    # the model's buffers moved exactly as in one stock forward
    for a, b in zip(model.buffers(), ref_model.buffers()):
        assert torch.equal(a, b)


def test_gradient_penalty_rejects_vector_outputs_and_bad_arguments():
    net = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(ValueError, match=r"one score per sample, shape \(4,\) or \(4, 1\)"):
        dbp.gradient_penalty(net, torch.randn(4, 3))
    with pytest.raises(ValueError, match="center must be"):
        dbp.gradient_penalty(nn.Linear(3, 1), torch.randn(4, 3), center=-1.0)
