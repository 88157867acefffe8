"""Engine demo: a small ReLU CNN trained on scikit-learn's digits with the gradient-norm and DRR
penalties through each engine; reports test accuracy and the cost of a step relative to plain
training (``doublebackprop engines-demo``)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from doublebackprop.common.training import seeded
from doublebackprop.engine.adjoint import adjoint
from doublebackprop.engine.objective import ENGINES, objective
from doublebackprop.engine.penalties import InputGradientPenalty, Penalty, RelevancePenalty
from doublebackprop.tools import zoo

__all__ = ["DemoRow", "run_engine_demo", "format_rows"]


@dataclass(frozen=True)
class DemoRow:
    penalty: str
    engine: str
    test_accuracy: float
    median_step_ms: float
    ratio_to_plain: float


def _digits(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    x = torch.tensor(x[order] / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    y = torch.tensor(y[order], dtype=torch.long)
    split = 1400
    return x[:split], y[:split], x[split:], y[split:]


def _train(
    penalty: Penalty | None, engine: str, data, *, epochs: int, seed: int, bar: tqdm
) -> tuple[float, float]:
    xtr, ytr, xte, yte = data
    with seeded(seed):
        model: nn.Module = zoo.cnn2d(1, 8, 10, widths=(16, 32))
    net = adjoint(model) if engine == "adjoint" else model
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    times = []
    for _ in range(epochs):
        for idx in torch.randperm(len(ytr), generator=gen).split(64):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            objective(net, xtr[idx], ytr[idx], penalty=penalty, engine=engine).total.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
            bar.update(1)
    with torch.no_grad():
        acc = float((model.eval()(xte).argmax(1) == yte).float().mean())
    return acc, statistics.median(times) * 1e3


def run_engine_demo(*, epochs: int = 3, seed: int = 0, show_progress: bool = True) -> list[DemoRow]:
    """Train the digits CNN plainly and with each penalty through every engine; one row each."""
    data = _digits(seed)
    penalties: dict[str, Penalty] = {
        "gradient-norm": InputGradientPenalty(weight=0.1, target="loss"),
        "DRR": RelevancePenalty(l1=1e-3, l2=1e-3),
    }
    steps = epochs * -(-len(data[1]) // 64)
    runs = [("none", "plain")] + [(p, e) for p in penalties for e in ENGINES]
    rows = []
    with tqdm(total=steps * len(runs), desc="engines demo", disable=not show_progress) as bar:
        plain_acc, plain_ms = _train(None, "autograd", data, epochs=epochs, seed=seed, bar=bar)
        rows.append(DemoRow("none", "plain", plain_acc, plain_ms, 1.0))
        for pname, engine in runs[1:]:
            acc, ms = _train(penalties[pname], engine, data, epochs=epochs, seed=seed, bar=bar)
            rows.append(DemoRow(pname, engine, acc, ms, ms / plain_ms))
    return rows


def format_rows(rows: list[DemoRow]) -> str:
    """The demo's rows as a fixed-width table."""
    lines = [f"{'penalty':14s} {'engine':18s} {'test acc':>8s} {'step ms':>8s} {'×plain':>7s}"]
    for r in rows:
        lines.append(
            f"{r.penalty:14s} {r.engine:18s} {r.test_accuracy:8.3f} {r.median_step_ms:8.2f} "
            f"{r.ratio_to_plain:7.2f}"
        )
    return "\n".join(lines)
