"""Alignment, bias term and linearised robustness against oracles and the paper's relations."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from doublebackprop import robustness as rb

DT = torch.float64


class Antisymmetric(nn.Module):
    """A binary classifier from one score ``f``: logits ``(f, −f)``."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.body(x)
        return torch.cat([f, -f], dim=1)


def relu_net(d: int, width: int, bias: bool, out: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(d, width, bias=bias),
        nn.ReLU(),
        nn.Linear(width, width, bias=bias),
        nn.ReLU(),
        nn.Linear(width, out, bias=bias),
    ).to(DT)


def oracle(model: nn.Module, x: torch.Tensor):
    """Per-sample loop with torch.autograd.functional.jacobian (the obvious implementation)."""
    alpha, rho_hat, beta = [], [], []
    for xi in x:
        z = model(xi[None])[0]
        jac = torch.autograd.functional.jacobian(lambda v: model(v[None])[0], xi)  # (m, d)
        i = int(z.argmax())
        g = jac[i]
        alpha.append((xi @ g).abs() / g.norm())
        beta.append(z[i] - xi @ g)
        rho_hat.append(min((z[i] - z[j]) / (g - jac[j]).norm() for j in range(len(z)) if j != i))
    return torch.stack(alpha), torch.stack(rho_hat), torch.stack(beta)


def test_matches_per_sample_oracle():
    net = relu_net(6, 16, True, 4, seed=1)
    x = torch.randn(12, 6, dtype=DT)
    a, r, b = oracle(net, x)
    torch.testing.assert_close(rb.alignment(net, x), a, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(rb.linearized_distance(net, x), r, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(rb.bias_term(net, x), b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        rb.cosine_alignment(net, x), a / x.norm(dim=1), rtol=1e-10, atol=1e-12
    )


@pytest.mark.filterwarnings("ignore:.*zero saliency")
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(2, 8), width=st.integers(2, 12))
def test_binary_homogeneous_net_rho_hat_equals_alignment(seed, d, width):
    net = Antisymmetric(relu_net(d, width, False, 1, seed))
    x = torch.randn(8, d, dtype=DT, generator=torch.Generator().manual_seed(seed))
    rep = rb.alignment_report(net, x)
    ok = rep.saliency_norm > 0
    torch.testing.assert_close(
        rep.linearized_distance[ok], rep.alignment[ok], rtol=1e-9, atol=1e-12
    )
    torch.testing.assert_close(rep.bias[ok], torch.zeros_like(rep.bias[ok]), rtol=0, atol=1e-10)


def relation_oracle(model: nn.Module, x: torch.Tensor):
    """The terms of the multi-class relation from a per-sample Jacobian loop (float64)."""
    rows = []
    for xi in x:
        z = model(xi[None])[0]
        jac = torch.autograd.functional.jacobian(lambda v: model(v[None])[0], xi)
        i = int(z.argmax())
        others = [j for j in range(len(z)) if j != i]
        ratios = torch.stack([(z[i] - z[j]) / (jac[i] - jac[j]).norm() for j in others])
        j = others[int(ratios.argmin())]
        gi, gj, gn = jac[i], jac[j], jac[i].norm()
        bi, bj = z[i] - xi @ gi, z[j] - xi @ gj
        rows.append(
            [j, xi @ gi / gn, ratios.min() * (gi - gj).norm() / gn, xi @ gj / gn, (bi - bj) / gn]
        )
    return [
        torch.tensor([float(torch.as_tensor(r[k]).detach()) for r in rows], dtype=DT)
        for k in range(5)
    ]


@pytest.mark.parametrize("out,bias", [(4, True), (2, False), (2, True)])
def test_exact_multiclass_relation_terms_match_oracle(out, bias):
    """⟨x,g_i⟩/‖g_i‖ = ρ̂‖g_i−g_j*‖/‖g_i‖ + ⟨x,g_j*⟩/‖g_i‖ − (β_i−β_j*)/‖g_i‖, term by term."""
    net = relu_net(6, 16, bias, out, seed=4)
    x = torch.randn(10, 6, dtype=DT, generator=torch.Generator().manual_seed(5))
    j, signed, margin, runner, bias_diff = relation_oracle(net, x)
    rep = rb.alignment_report(net, x)
    assert rep.runner_up.tolist() == j.long().tolist()
    for got, want in (
        (rep.signed_alignment, signed),
        (rep.margin_term, margin),
        (rep.runner_up_term, runner),
        (rep.bias_difference_term, bias_diff),
    ):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(signed, margin + runner - bias_diff, rtol=1e-9, atol=1e-11)
    assert rep.relation_residual.abs().max() < 1e-10


def test_ordinary_two_logit_net_has_rho_hat_different_from_alpha():
    """The old "bound" |ρ̂ − α| ≤ |β|/‖g‖ is no theorem: bias-free (β = 0), 2 logits, ρ̂ ≠ α."""
    net = relu_net(6, 16, False, 2, seed=2)
    x = torch.randn(40, 6, dtype=DT, generator=torch.Generator().manual_seed(1))
    rep = rb.alignment_report(net, x)
    torch.testing.assert_close(rep.bias, torch.zeros_like(rep.bias), rtol=0, atol=1e-10)
    assert float(((rep.linearized_distance - rep.alignment).abs() > 1e-6).float().mean()) > 0.9


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(2, 10), m=st.integers(3, 6))
def test_multiclass_linear_identity(seed, d, m):
    gen = torch.Generator().manual_seed(seed)
    lin = nn.Linear(d, m, bias=False).to(DT)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(m, d, dtype=DT, generator=gen))
    x = torch.randn(16, d, dtype=DT, generator=gen)
    w = lin.weight.detach()
    z = x @ w.T
    i = z.argmax(1)
    rho = rb.linearized_distance(lin, x)  # exact for a linear model (no box)
    ratios = (z.gather(1, i[:, None]) - z) / (w[i][:, None, :] - w[None]).norm(dim=2)
    ratios[torch.arange(16), i] = math.inf
    j = ratios.argmin(1)
    torch.testing.assert_close(rho, ratios.amin(1), rtol=1e-10, atol=1e-12)
    keep = (x * w[i]).sum(1) >= 0
    wi, wj = w[i], w[j]
    predicted = rho * (wi - wj).norm(dim=1) / wi.norm(dim=1) + (x * wj).sum(1) / wi.norm(dim=1)
    torch.testing.assert_close(rb.alignment(lin, x)[keep], predicted[keep], rtol=1e-9, atol=1e-10)


def test_restores_training_flags_and_requires_grad():
    net = relu_net(4, 8, True, 3, seed=0)
    net.train()
    net[2].weight.requires_grad_(False)
    rb.alignment_report(net, torch.randn(3, 4, dtype=DT))
    assert net.training and all(m.training for m in net.modules())
    assert [p.requires_grad for p in net.parameters()] == [True, True, False, True, True, True]


def test_bad_input_errors():
    net = relu_net(4, 8, True, 3, seed=0)
    with pytest.raises(TypeError, match="model"):
        rb.alignment("not a model", torch.randn(2, 4))
    with pytest.raises(ValueError, match="batch"):
        rb.alignment(net, torch.randn(4, dtype=DT))
    with pytest.raises(ValueError, match="NaN"):
        rb.linearized_distance(net, torch.full((2, 4), math.nan, dtype=DT))
    with pytest.raises(ValueError, match="at least 2 outputs"):
        rb.linearized_distance(nn.Linear(4, 1).to(DT), torch.randn(2, 4, dtype=DT))


def test_zero_saliency_warns_and_gives_nan():
    net = nn.Linear(4, 3).to(DT)
    with torch.no_grad():
        net.weight.zero_()
    with pytest.warns(RuntimeWarning, match="zero saliency"):
        a = rb.alignment(net, torch.randn(2, 4, dtype=DT))
    assert torch.isnan(a).all()


def test_linf_linearized_distance_closed_form():
    """Linear logits: ρ̂_∞ = min_j (z_i − z_j) / ‖w_i − w_j‖₁ (Hölder), the exact L∞ distance."""
    gen = torch.Generator().manual_seed(3)
    lin = nn.Linear(7, 4, bias=True).to(DT)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(4, 7, dtype=DT, generator=gen))
    x = torch.randn(9, 7, dtype=DT, generator=gen)
    z = lin(x).detach()
    w = lin.weight.detach()
    i = z.argmax(1)
    ratios = (z.gather(1, i[:, None]) - z) / (w[i][:, None, :] - w[None]).abs().sum(2)
    ratios[torch.arange(9), i] = math.inf
    torch.testing.assert_close(
        rb.linearized_distance(lin, x, norm=math.inf), ratios.amin(1), rtol=1e-10, atol=1e-12
    )


def test_top_k_candidates_match_a_restricted_oracle():
    """``candidates=k``: the minimum over the winner's k − 1 strongest runner-ups only."""
    net = relu_net(6, 16, True, 8, seed=7)
    x = torch.randn(10, 6, dtype=DT, generator=torch.Generator().manual_seed(8))
    want = []
    for xi in x:
        z = net(xi[None])[0].detach()
        jac = torch.autograd.functional.jacobian(lambda v: net(v[None])[0], xi)
        i = int(z.argmax())
        top = [int(c) for c in torch.argsort(z, descending=True) if int(c) != i][:2]
        want.append(min(float((z[i] - z[j]) / (jac[i] - jac[j]).norm()) for j in top))
    got = rb.linearized_distance(net, x, candidates=3)
    torch.testing.assert_close(got, torch.tensor(want, dtype=DT), rtol=1e-10, atol=1e-12)
    assert (got >= rb.linearized_distance(net, x) - 1e-12).all()
    torch.testing.assert_close(
        rb.linearized_distance(net, x, candidates=8), rb.linearized_distance(net, x)
    )
    rep = rb.alignment_report(net, x, candidates=3)
    assert rep.relation_residual.abs().max() < 1e-10
    with pytest.raises(ValueError, match="candidates"):
        rb.linearized_distance(net, x, candidates=1)
