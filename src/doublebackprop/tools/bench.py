"""Benchmark of one training step per engine × penalty × model (``doublebackprop bench``).

Every variant of a model is timed round-robin in the same loop (so machine noise hits all of
them alike) and reported as the median, as a ratio to a plain cross-entropy step and to stock
autograd. Memory: peak allocated bytes on CUDA; on the CPU the bytes autograd saves for backward
during the step (activation memory — the part double backprop changes).
"""

from __future__ import annotations

import contextlib
import copy
import json
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from doublebackprop.common.training import seeded
from doublebackprop.engine.adjoint import adjoint
from doublebackprop.engine.engines import Autograd, Engine, FiniteDifference
from doublebackprop.engine.objective import objective
from doublebackprop.engine.penalties import (
    InputGradientPenalty,
    JacobianPenalty,
    Penalty,
    RelevancePenalty,
)
from doublebackprop.engine.sweeps import Sweeps
from doublebackprop.tools import zoo

__all__ = ["BenchCase", "BenchRow", "default_cases", "run_benchmark", "format_table"]


@dataclass(frozen=True)
class BenchCase:
    name: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    classes: int
    sequential: bool  # the sweeps engine applies


@dataclass(frozen=True)
class BenchRow:
    model: str
    penalty: str
    engine: str
    median_ms: float
    ratio_to_plain: float
    ratio_to_stock: float
    memory_mb: float
    memory_ratio_to_plain: float
    target: str
    met: bool | None


def default_cases(device: str, quick: bool = False) -> list[BenchCase]:
    """The models of docs/mathematics.md, measurements, sized for the device (CPU sizes are smaller)."""
    if device == "cuda":
        return [
            BenchCase(
                "MLP 3072-4096^3-10", lambda: zoo.mlp(3072, 4096, 3, 10), (512, 3072), 10, True
            ),
            BenchCase("CNN-2D small", lambda: zoo.cnn2d(3, 32, 10), (256, 3, 32, 32), 10, True),
            BenchCase("ResNet-18-like", lambda: zoo.resnet18_like(), (256, 3, 32, 32), 10, False),
            BenchCase("CNN-1D 16384", lambda: zoo.spectra_cnn1d(), (256, 1, 16384), 2, True),
            BenchCase("IsotopeNet 20000", lambda: _isotopenet(20000), (150, 1, 20000), 2, False),
        ]
    scale = 2 if quick else 1
    return [
        BenchCase(
            "MLP 784-1024^3-10", lambda: zoo.mlp(784, 1024, 3, 10), (64 // scale, 784), 10, True
        ),
        BenchCase("CNN-2D small", lambda: zoo.cnn2d(1, 28, 10), (64 // scale, 1, 28, 28), 10, True),
        BenchCase(
            "ResNet-18-like (w16)",
            lambda: zoo.resnet18_like(width=16),
            (32 // scale, 3, 32, 32),
            10,
            False,
        ),
        BenchCase("CNN-1D 4096", lambda: zoo.spectra_cnn1d(), (64 // scale, 1, 4096), 2, True),
        BenchCase("IsotopeNet 8192", lambda: _isotopenet(8192), (64 // scale, 1, 8192), 2, False),
    ]


def _isotopenet(length: int) -> nn.Module:
    from doublebackprop.msi.models import IsotopeNet

    return IsotopeNet(length, 2)


def _penalties() -> dict[str, Penalty]:
    return {
        "gradient-norm": InputGradientPenalty(weight=0.1, target="loss"),
        "DRR": RelevancePenalty(l1=1e-3, l2=1e-3),
        "Jacobian (10 rows)": JacobianPenalty(weight=0.01),
    }


@contextlib.contextmanager
def _saved_bytes(counter: list[int]) -> Iterator[None]:
    seen: set[tuple[int, int]] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key not in seen:  # a tensor saved by several nodes is stored once
            seen.add(key)
            counter[0] += storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _memory(step: Callable[[], None], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    counter = [0]
    with _saved_bytes(counter):
        step()
    return counter[0] / 2**20


def run_benchmark(
    cases: list[BenchCase],
    *,
    device: str = "cpu",
    repeats: int = 10,
    warmup: int = 2,
    progress: Callable[[str], None] | None = None,
    seed: int = 0,
) -> list[BenchRow]:
    """Time every variant of every case; returns one row per (model, penalty, engine)."""
    rows: list[BenchRow] = []
    for case in cases:
        with seeded(seed):
            model = case.build().to(device)
        fast = adjoint(copy.deepcopy(model))  # the stock model stays stock
        x = torch.randn(*case.input_shape, device=device)
        y = torch.randint(0, case.classes, (case.input_shape[0],), device=device)

        variants: dict[tuple[str, str], Callable[[], None]] = {}

        def step(
            net: nn.Module,
            pen: Penalty | None,
            eng: Engine,
            x: torch.Tensor = x,
            y: torch.Tensor = y,
        ) -> Callable[[], None]:
            def run() -> None:
                net.zero_grad(set_to_none=True)
                objective(net, x, y, penalty=pen, engine=eng).total.backward()

            return run

        variants["plain", "plain"] = step(model, None, Autograd())
        for pname, pen in _penalties().items():
            if not isinstance(pen, JacobianPenalty):
                variants[pname, "autograd"] = step(model, pen, Autograd())
            else:  # stock's two ways; the adjoint is compared with the faster
                variants[pname, "autograd (batched rows)"] = step(
                    model, pen, Autograd(batched_rows=True)
                )
                variants[pname, "autograd (row loop)"] = step(
                    model, pen, Autograd(batched_rows=False)
                )
            variants[pname, "adjoint"] = step(fast, pen, Autograd())
            if case.sequential:
                variants[pname, "sweeps"] = step(model, pen, Sweeps())
            variants[pname, "finite_difference"] = step(model, pen, FiniteDifference())

        if progress:
            progress(f"{case.name}: {len(variants)} variants × {repeats} repeats")
        for fn in variants.values():
            for _ in range(warmup):
                fn()
        times: dict[tuple[str, str], list[float]] = {k: [] for k in variants}
        for _ in range(repeats):
            for key, fn in variants.items():
                _sync(device)
                t0 = time.perf_counter()
                fn()
                _sync(device)
                times[key].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        mem = {k: _memory(fn, device) for k, fn in variants.items()}
        plain_ms, plain_mb = med["plain", "plain"], mem["plain", "plain"]
        for (pname, ename), ms in med.items():
            stock_keys = [k for k in med if k[0] == pname and k[1].startswith("autograd")]
            stock = min(med[k] for k in stock_keys) if stock_keys else ms
            target, met = _target(
                pname, ename, ms / plain_ms, ms / stock, mem[pname, ename] / max(plain_mb, 1e-9)
            )
            rows.append(
                BenchRow(
                    case.name,
                    pname,
                    ename,
                    round(ms, 3),
                    round(ms / plain_ms, 3),
                    round(ms / stock, 3),
                    round(mem[pname, ename], 2),
                    round(mem[pname, ename] / max(plain_mb, 1e-9), 3),
                    target,
                    met,
                )
            )
        del model, fast
    return rows


def _target(
    penalty: str, engine: str, to_plain: float, to_stock: float, mem: float
) -> tuple[str, bool | None]:
    if engine != "adjoint":
        return "", None
    if penalty.startswith("Jacobian"):
        return "≤0.67× stock, mem ≤1.5×", to_stock <= 0.67 and mem <= 1.5
    return "≤2.0× plain, ≤1× stock, mem ≤1.5×", to_plain <= 2.0 and to_stock <= 1.0 and mem <= 1.5


def format_table(rows: list[BenchRow], device: str) -> str:
    head = f"{'model':24s} {'penalty':19s} {'engine':24s} {'median ms':>10s} {'×plain':>7s} {'×stock':>7s} {'mem MB':>8s} {'mem×':>6s}  target"
    lines = [f"device: {device}", head, "-" * len(head)]
    for r in rows:
        verdict = "" if r.met is None else ("met" if r.met else "NOT met")
        lines.append(
            f"{r.model:24s} {r.penalty:19s} {r.engine:24s} {r.median_ms:10.2f} {r.ratio_to_plain:7.2f} "
            f"{r.ratio_to_stock:7.2f} {r.memory_mb:8.1f} {r.memory_ratio_to_plain:6.2f}  {r.target} {verdict}"
        )
    return "\n".join(lines)


def write_json(rows: list[BenchRow], device: str, path: Path) -> None:
    meta = {"device": device, "torch": torch.__version__, "threads": torch.get_num_threads()}
    if device == "cuda":
        meta["gpu"] = torch.cuda.get_device_name()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=1))
