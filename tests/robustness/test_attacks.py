"""Attacks: bounds, ε, verification, seeding, monotone robust accuracy, sanity warnings."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from doublebackprop import robustness as rb

FAST_L2 = [rb.DeepFool(norm=2, steps=20), rb.DDN(steps=30), rb.RandomDirections(directions=4)]


def batch(digits, n=48):
    x, y = digits
    return x[:n], y[:n]


@pytest.mark.parametrize(
    "attack",
    [
        rb.DeepFool(norm=2, steps=20),
        rb.DeepFool(norm=math.inf, steps=20),
        rb.DDN(steps=30),
        rb.CarliniWagner(binary_search_steps=2, steps=20),
        rb.PGD(epsilon=0.5, norm=2, steps=10),
        rb.PGD(epsilon=0.1, norm=math.inf, steps=10),
        rb.MinimalPGD(norm=math.inf, search_steps=3, steps=5),
        rb.RandomDirections(directions=3),
    ],
    ids=lambda a: a.name,
)
def test_attack_results_are_verified_and_inside_bounds(digits_net, digits, attack):
    x, y = batch(digits)
    res = attack(digits_net, x, y, bounds=(0.0, 1.0))
    assert res.adversarial.shape == x.shape
    assert res.adversarial.min() >= 0 and res.adversarial.max() <= 1
    with torch.no_grad():
        pred = digits_net(res.adversarial).argmax(1)
    assert torch.equal(res.success, pred != y)
    assert torch.isinf(res.distance[~res.success]).all()
    torch.testing.assert_close(
        res.distance[res.success], attack.norm(res.adversarial - x)[res.success]
    )
    assert res.success.float().mean() > 0.3  # every attack breaks a fair share of a weak model
    if isinstance(attack, rb.PGD):
        assert (attack.norm(res.adversarial - x) <= attack.epsilon * (1 + 1e-5) + 1e-6).all()


@settings(max_examples=10, deadline=None)
@given(eps=st.floats(0.0, 2.0), p=st.sampled_from([2, math.inf]), seed=st.integers(0, 1000))
def test_pgd_stays_in_ball_and_box(digits_net, digits, eps, p, seed):
    x, y = batch(digits, 16)
    gen = torch.Generator().manual_seed(seed)
    res = rb.PGD(epsilon=eps, norm=p, steps=3)(digits_net, x, y, bounds=(0.0, 1.0), generator=gen)
    delta = res.adversarial - x
    assert res.adversarial.min() >= 0 and res.adversarial.max() <= 1
    assert (rb.PGD(epsilon=1, norm=p).norm(delta) <= eps * (1 + 1e-5) + 1e-6).all()


def test_pgd_epsilon_zero_returns_x(digits_net, digits):
    x, y = batch(digits, 16)
    res = rb.PGD(epsilon=0.0, norm=2, steps=3)(digits_net, x, y)
    correct = digits_net(x).argmax(1) == y
    assert torch.equal(res.adversarial[correct], x[correct])


def test_seeding_reproducible(digits_net, digits):
    x, y = batch(digits, 16)
    for atk in (rb.PGD(epsilon=2.0, norm=2, steps=1), rb.RandomDirections(directions=2)):
        a = atk(digits_net, x, y, generator=torch.Generator().manual_seed(3))
        b = atk(digits_net, x, y, generator=torch.Generator().manual_seed(3))
        c = atk(digits_net, x, y, generator=torch.Generator().manual_seed(4))
        assert a.success.any()
        assert torch.equal(a.adversarial, b.adversarial) and not torch.equal(
            a.adversarial, c.adversarial
        )


def test_robust_accuracy_non_increasing_and_clean_at_zero(digits_net, digits):
    x, y = batch(digits)
    eps = [0.0, 0.1, 0.3, 0.6, 1.0, 2.0]
    acc = rb.robust_accuracy(digits_net, x, y, eps, attacks=FAST_L2)
    assert torch.all(acc[1:] <= acc[:-1])
    clean = (digits_net(x).argmax(1) == y).float().mean()
    torch.testing.assert_close(acc[0], clean)
    assert acc[-1] < acc[0]


def test_minimal_distance_contract_and_ensemble(digits_net, digits):
    x, y = batch(digits)
    d = rb.minimal_distance(digits_net, x, y, bounds=(0.0, 1.0), norm=2, attacks=FAST_L2)
    assert d.shape == (x.shape[0],)
    res = rb.ensemble_attack(digits_net, x, y, attacks=FAST_L2)
    torch.testing.assert_close(res.distance, d)
    per = torch.stack(list(res.per_attack.values()))
    torch.testing.assert_close(res.distance, per.min(0).values)
    wrong = digits_net(x).argmax(1) != y
    assert (d[wrong] == 0).all() and (d[~wrong] > 0).all()
    ok = torch.isfinite(d)
    with torch.no_grad():
        assert (digits_net(res.adversarial[ok]).argmax(1) != y[ok]).all()
    # the linearised distance is a good estimate on this small ReLU net
    rho_hat = rb.linearized_distance(digits_net, x)
    assert 0.3 < float((d[~wrong] / rho_hat[~wrong]).median()) < 3


def test_deepfool_exact_on_linear_model():
    torch.manual_seed(0)
    lin = nn.Linear(5, 3).double()
    x = torch.rand(20, 5, dtype=torch.float64) * 0.2 + 50
    res = rb.refine_to_boundary(
        lin,
        x,
        rb.DeepFool(norm=2, overshoot=0.02)(lin, x, bounds=(-1e3, 1e3)),
        lin(x).argmax(1),
        norm=rb.L2(),
        steps=30,
    )
    rho_hat = rb.linearized_distance(lin, x)
    torch.testing.assert_close(res.distance, rho_hat, rtol=1e-4, atol=1e-6)


def test_out_of_bounds_and_labels_rejected(digits_net, digits):
    x, y = batch(digits, 4)
    with pytest.raises(ValueError, match="bounds"):
        rb.DeepFool()(digits_net, x * 2 - 0.5, y, bounds=(0.0, 1.0))
    with pytest.raises(ValueError, match=r"y must lie in \[0, 9\]"):
        rb.DeepFool()(digits_net, x, y + 10)
    with pytest.raises(ValueError, match="low < high"):
        rb.DDN()(digits_net, x, y, bounds=(1.0, 0.0))
    with pytest.raises(ValueError, match="norm"):
        rb.minimal_distance(digits_net, x, y, norm=1)
    with pytest.raises(ValueError, match="epsilon"):
        rb.PGD(epsilon=-1.0)
    with pytest.raises(TypeError, match="final"):

        class Bad(rb.Attack):
            def __call__(self, *a):  # type: ignore[override]
                return None

            def run(self, model, x, y, bounds, generator):
                return x


def test_state_restored_after_exception(digits_net, digits):
    x, y = batch(digits, 4)

    class Boom(rb.Attack):
        def run(self, model, x, y, bounds, generator):
            raise RuntimeError("boom")

    digits_net.train()
    try:
        with pytest.raises(RuntimeError, match="boom"):
            Boom()(digits_net, x, y)
        assert digits_net.training and all(p.requires_grad for p in digits_net.parameters())
    finally:
        digits_net.eval()


def test_probability_outputs_warn(digits_net, digits):
    x, y = batch(digits, 8)
    probs = nn.Sequential(digits_net, nn.Softmax(dim=1))
    with pytest.warns(rb.RobustnessWarning, match="probabilities"):
        rb.DeepFool(steps=3)(probs, x, y)


def test_gradient_masking_is_reported(digits):
    x, y = batch(digits, 32)
    torch.manual_seed(0)
    lin = nn.Linear(64, 10)

    class Quantised(nn.Module):  # zero input gradients almost everywhere: masking
        def forward(self, v):
            return lin((v * 2).round().flatten(1) / 2) * 5

    model = Quantised()
    with pytest.warns(rb.RobustnessWarning) as rec:
        res = rb.ensemble_attack(model, x, None, attacks=FAST_L2)
    text = " ".join(str(w.message) for w in rec)
    assert "zero loss gradient" in text and "gradient masking" in text
    assert res.masking_fraction > 0.5
