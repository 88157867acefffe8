"""Cross-check with Foolbox 3 (test-only peer): our minimal distances are not larger."""

from __future__ import annotations

import pytest
import torch

from doublebackprop import robustness as rb


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_minimal_distances_no_larger_than_foolbox(digits_net, digits):
    fb = pytest.importorskip("foolbox")
    x, y = digits[0][:64], digits[1][:64]
    ok = digits_net(x).argmax(1) == y
    x, y = x[ok], y[ok]
    fmodel = fb.PyTorchModel(digits_net.eval(), bounds=(0.0, 1.0))
    ref = {}
    for name, attack in (
        ("deepfool", fb.attacks.L2DeepFoolAttack()),
        ("fmn", fb.attacks.L2FMNAttack()),
    ):
        _, clipped, success = attack(fmodel, x, y, epsilons=None)
        d = (clipped - x).flatten(1).norm(dim=1)
        ref[name] = torch.where(success, d, torch.full_like(d, float("inf")))
    ours = rb.minimal_distance(digits_net, x, y, bounds=(0.0, 1.0), norm=2)
    assert torch.isfinite(ours).all()
    for name, d in ref.items():
        # "no larger than Foolbox's by more than 5% in median"
        assert float(ours.median()) <= 1.05 * float(d[torch.isfinite(d)].median()), name
        assert float((ours / d).median()) <= 1.05, name
