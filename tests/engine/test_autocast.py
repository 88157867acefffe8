"""Mixed precision: the adjoint engine under ``torch.autocast`` (CPU bfloat16) against stock
autograd under the same autocast, to bfloat16 tolerance."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import doublebackprop as dbp
from doublebackprop.tools import zoo


def _models() -> dict[str, tuple[nn.Module, tuple[int, ...], int]]:
    torch.manual_seed(0)
    return {
        "cnn2d_bn": (
            nn.Sequential(
                nn.Conv2d(1, 4, 3, padding=1),
                nn.BatchNorm2d(4),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(4, 4, 3, padding=1),
                nn.LeakyReLU(0.1),
                nn.AvgPool2d(2),
                nn.Flatten(),
                nn.Linear(16, 3),
            ),
            (8, 1, 8, 8),
            3,
        ),
        "resnet": (zoo.resnet18_like(1, 3, width=4, blocks=(1, 1)), (6, 1, 8, 8), 3),
        "spectra": (zoo.spectra_cnn1d(2, stages=((4, 1), (4, 2)), kernel_size=5), (6, 1, 64), 2),
        "isotopenet": (zoo.isotopenet(60, 2), (6, 1, 60), 2),
    }


def _rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("penalty", ["gradnorm", "drr"])
@pytest.mark.parametrize("name", sorted(_models()))
def test_bfloat16_autocast_matches_stock(name, penalty):
    model, shape, classes = _models()[name]
    model.train()
    stock = copy.deepcopy(model)
    fast = dbp.adjoint(model)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=g)
    y = torch.randint(0, classes, (shape[0],), generator=g)
    pen = (
        dbp.InputGradientPenalty(weight=0.1)
        if penalty == "gradnorm"
        else dbp.RelevancePenalty(l1=1e-2, l2=1e-2)
    )
    results = []
    for net, engine in ((stock, "autograd"), (fast, "adjoint")):
        torch.manual_seed(2)  # the same dropout masks
        with torch.autocast("cpu", dtype=torch.bfloat16):
            res = dbp.objective(net, x, y, penalty=pen, engine=engine)
        res.total.backward()
        grads = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])
        results.append((res, grads))
    (ref, g_ref), (res, g_fast) = results
    assert res.logits.dtype == ref.logits.dtype
    assert torch.equal(res.logits, ref.logits)  # the forward is autocast's own, bit for bit
    assert torch.allclose(res.total, ref.total, rtol=2e-2, atol=0)
    # bfloat16 keeps 8 bits of mantissa: both engines round differently in their backward
    assert _rel(g_fast, g_ref) <= 5e-2
    for p in fast.parameters():
        assert p.dtype == torch.float32 and (p.grad is None or p.grad.dtype == torch.float32)
