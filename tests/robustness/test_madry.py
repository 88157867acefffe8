"""Madry PGD for training: every sample perturbed, against a textbook PGD loop and a closed form."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from doublebackprop import robustness as rb
from doublebackprop.robustness.attacks.madry import random_start

DT = torch.float64


def textbook_pgd(model, x, y, delta, eps, alpha, steps, norm):
    """Madry et al.'s loop written out with stock autograd (no project code)."""
    for _ in range(steps):
        xa = (x + delta).requires_grad_()
        (g,) = torch.autograd.grad(F.cross_entropy(model(xa), y, reduction="sum"), xa)
        if norm == "l2":
            gn = g.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *[1] * (x.dim() - 1))
            delta = delta + alpha * g / gn
            dn = delta.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1))
            delta = torch.where(dn > eps, delta * eps / dn, delta)
        else:
            delta = (delta + alpha * g.sign()).clamp(-eps, eps)
        delta = (x + delta).clamp(0, 1) - x
    return x + delta


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_matches_textbook_loop_and_perturbs_every_sample(digits_net, digits, norm):
    x, y = digits[0][:40].double(), digits[1][:40]
    net = digits_net.double()
    try:
        eps = 1.0 if norm == "l2" else 0.1
        p = 2 if norm == "l2" else math.inf
        start = random_start(
            x,
            torch.full((40,), eps, dtype=DT),
            rb.L2() if norm == "l2" else rb.Linf(),
            (0.0, 1.0),
            torch.Generator().manual_seed(3),
        )
        expect = textbook_pgd(net, x, y, start, eps, 2.5 * eps / 7, 7, norm)
        got = rb.madry_pgd(
            net, x, y, epsilon=eps, norm=p, steps=7, generator=torch.Generator().manual_seed(3)
        )
        torch.testing.assert_close(got, expect, rtol=0, atol=1e-12)
        dist = (got - x).flatten(1).norm(p=p, dim=1)
        assert (dist > 0).all() and (dist <= eps * (1 + 1e-9)).all()
        assert got.min() >= 0 and got.max() <= 1
        # the clean input is never put back, whatever the label does
        assert not (got == x).flatten(1).all(1).any()
    finally:
        digits_net.float()


def test_linear_model_closed_form():
    """Binary linear logits, no box: the CE ascent direction is the unit vector w_1 − w_0."""
    lin = nn.Linear(6, 2, bias=False).to(DT)
    x = torch.full((5, 6), 0.5, dtype=DT) + 0.01 * torch.arange(30, dtype=DT).view(5, 6)
    y = torch.zeros(5, dtype=torch.long)
    u = lin.weight[1] - lin.weight[0]
    u = (u / u.norm()).detach()
    got = rb.madry_pgd(
        lin, x, y, epsilon=0.2, norm=2, steps=80, step_size=0.2, bounds=(-10.0, 10.0)
    )
    torch.testing.assert_close(got, x + 0.2 * u, rtol=0, atol=1e-6)


def test_max_loss_selection_returns_highest_loss_iterate(digits_net, digits):
    x, y = digits[0][:30], digits[1][:30]
    last = rb.madry_pgd(digits_net, x, y, epsilon=2.0, steps=5, step_size=1.5)
    best = rb.madry_pgd(digits_net, x, y, epsilon=2.0, steps=5, step_size=1.5, select="max_loss")
    with torch.no_grad():
        l_last = F.cross_entropy(digits_net(last), y, reduction="none")
        l_best = F.cross_entropy(digits_net(best), y, reduction="none")
    assert (l_best >= l_last - 1e-6).all()


def test_bad_arguments_and_state_restored(digits_net, digits):
    x, y = digits[0][:4], digits[1][:4]
    digits_net.train()
    try:
        with pytest.raises(ValueError, match="epsilon"):
            rb.madry_pgd(digits_net, x, y, epsilon=0.0)
        with pytest.raises(ValueError, match="select"):
            rb.madry_pgd(digits_net, x, y, epsilon=0.1, select="first")
        with pytest.raises(ValueError, match="bounds|inside|outside"):
            rb.madry_pgd(digits_net, x + 2, y, epsilon=0.1)
        rb.madry_pgd(digits_net, x, y, epsilon=0.1, steps=2)
        assert digits_net.training
        assert all(p.requires_grad for p in digits_net.parameters())
    finally:
        digits_net.eval()
