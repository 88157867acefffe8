"""Gradient masking is caught: a decision-based and a transfer attack against shattered gradients."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from doublebackprop import robustness as rb

DT = torch.float64


class Shattered(nn.Module):
    """``x ↦ net(x + 0.03·sin(1000x))``: the same decisions up to 0.03, useless gradients."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x + 0.03 * torch.sin(1000 * x))


def test_hopskipjump_finds_the_closed_form_distance_of_a_linear_model():
    """Binary linear logits without a box: ρ = |w·x + b| / ‖w‖ exactly."""
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(20, 1).to(DT)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(1, 20, generator=g, dtype=DT))
        lin.bias.fill_(0.3)

    class TwoLogits(nn.Module):
        def forward(self, x):
            z = lin(x)
            return torch.cat([z, torch.zeros_like(z)], 1)

    model = TwoLogits()
    x = torch.randn(12, 20, generator=g, dtype=DT)
    truth = (lin(x).squeeze(1).abs() / lin.weight.norm()).detach()
    res = rb.HopSkipJump(steps=40, queries=100)(model, x, bounds=(-50.0, 50.0))
    assert res.success.all()
    torch.testing.assert_close(res.distance, truth, rtol=0.05, atol=0)
    assert (res.distance >= truth * (1 - 1e-9)).all()  # verified points cannot beat the truth


def _caught(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn()
    return out, [str(w.message) for w in caught if issubclass(w.category, rb.RobustnessWarning)]


def test_shattered_gradients_raise_a_warning(digits_net, digits):
    x, y = digits[0][:48], digits[1][:48]
    model = Shattered(digits_net).eval()
    deepfool = rb.DeepFool(norm=2, steps=50)
    assert float(deepfool(model, x, y).success.float().mean()) < 0.5  # the gradients are useless
    hsj = rb.HopSkipJump(steps=10, queries=40)
    res, msgs = _caught(lambda: rb.ensemble_attack(model, x, y, attacks=[deepfool, hsj]))
    assert res.masking_fraction > 0.5
    assert any("HopSkipJump" in m and "gradient masking" in m for m in msgs)
    assert float(torch.isfinite(res.per_attack[hsj.name]).float().mean()) > 0.9
    # the transfer check from the same net without the wrapper
    res, msgs = _caught(
        lambda: rb.ensemble_attack(model, x, y, attacks=[deepfool], source=digits_net)
    )
    assert any("Transfer" in m for m in msgs) and res.masking_fraction > 0.5
    # the default ensemble flags it without being told (its DDN copes; DeepFool's failure shows)
    _, msgs = _caught(
        lambda: rb.ensemble_attack(model, x, y, attacks=rb.default_attacks(rb.L2(), fast=True))
    )
    assert any(m.startswith("ensemble_attack: DeepFool(L2) failed on") for m in msgs), msgs


def test_no_false_alarm_on_the_smooth_net(digits_net, digits):
    x, y = digits[0][:48], digits[1][:48]
    attacks = [rb.DeepFool(norm=2, steps=50), rb.DDN(steps=50), rb.HopSkipJump(steps=10)]
    res, msgs = _caught(lambda: rb.ensemble_attack(digits_net, x, y, attacks=attacks))
    assert not any("gradient masking" in m for m in msgs), msgs
    assert res.masking_fraction <= 0.05
    _, msgs = _caught(
        lambda: rb.ensemble_attack(digits_net, x, y, attacks=rb.default_attacks(rb.L2(), fast=True))
    )
    assert not any("gradient masking" in m for m in msgs), msgs


def test_transfer_and_smoothing_arguments():
    with pytest.raises(TypeError, match="Transfer: attack"):
        rb.Transfer(attack="deepfool")
    with pytest.raises(ValueError, match="sigma"):
        rb.Transfer(attack=rb.DeepFool(), sigma=0.0)
    net = nn.Linear(4, 3)
    smooth = rb.GaussianSmoothing(
        net, sigma=0.1, samples=4096, generator=torch.Generator().manual_seed(0)
    )
    x = torch.rand(2, 4)
    # a linear model is its own Gaussian smoothing (the noise averages out)
    torch.testing.assert_close(smooth(x), net(x), rtol=0, atol=0.02)
