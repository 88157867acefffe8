"""The explicit paths under ``torch.compile`` (issue: "explicit path, measured").

Stock ``torch.compile`` refuses double backward; two explicit routes are first-order and compile:

* the ``sweeps`` engine (forward / B1 / F2 / B2 written out, one backward of a surrogate);
* ``torch.func.grad`` *inside* the compiled loss: the input gradient is part of the traced
  function, the parameter gradient is one ordinary backward of the compiled graph.

Every variant is checked against stock autograd (float32 relative error of the parameter
gradient) and timed round robin (median), as a ratio to a plain cross-entropy step and to stock
autograd. Neither route is a default anywhere in the library.

    .venv/bin/python benchmarks/bench_compile.py --threads 1 --out results/bench

Writes ``bench-compile.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad

import doublebackprop as dbp
from doublebackprop.tools import zoo

Tensor = torch.Tensor


def cases(quick: bool) -> dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], int]]:
    b = 32 if quick else 64
    return {
        "MLP 784-1024^3-10": (lambda: zoo.mlp(784, 1024, 3, 10), (b, 784), 10),
        "CNN-2D small": (lambda: zoo.cnn2d(1, 28, 10), (b, 1, 28, 28), 10),
        "CNN-1D 4096": (lambda: zoo.spectra_cnn1d(), (b, 1, 4096), 2),
    }


def penalties() -> dict[str, tuple[dbp.Penalty, str]]:
    """name -> (penalty, what torch.func differentiates: 'loss' or 'true_logit')."""
    return {
        "gradient-norm": (dbp.InputGradientPenalty(weight=0.1, target="loss"), "loss"),
        "DRR": (dbp.RelevancePenalty(l1=1e-3, l2=1e-3), "true_logit"),
    }


def func_loss(model: nn.Module, kind: str, weight: float) -> Callable[[Tensor, Tensor], Tensor]:
    """CE + penalty with the input gradient from torch.func.grad (traceable by compile)."""
    params = dict(model.named_parameters())

    def scalar(x: Tensor, y: Tensor) -> Tensor:
        z = functional_call(model, params, (x,))
        if kind == "loss":
            return F.cross_entropy(z, y, reduction="sum")
        return z.gather(1, y[:, None]).sum()

    def loss(x: Tensor, y: Tensor) -> Tensor:
        g = grad(scalar)(x, y)
        z = model(x)
        if kind == "loss":
            pen = weight * g.flatten(1).pow(2).sum(1)
        else:
            r = (x * g).flatten(1)
            pen = 1e-3 * r.abs().sum(1) + 1e-3 * r.pow(2).sum(1)
        return (F.cross_entropy(z, y, reduction="none") + pen).mean()

    return loss


def _median_ms(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def _variants(
    model: nn.Module, x: Tensor, y: Tensor, pen: dbp.Penalty, kind: str
) -> dict[str, Callable[[], None]]:
    def plain() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    def step(engine: str | dbp.Engine) -> Callable[[], None]:
        def fn() -> None:
            model.zero_grad(set_to_none=True)
            dbp.objective(model, x, y, penalty=pen, engine=engine).total.backward()

        return fn

    sweeps = dbp.Sweeps()
    compiled_sweeps = torch.compile(
        lambda: dbp.objective(model, x, y, penalty=pen, engine=sweeps).total
    )

    def sweeps_compiled() -> None:
        model.zero_grad(set_to_none=True)
        compiled_sweeps().backward()

    loss = torch.compile(func_loss(model, kind, 0.1))

    def func_compiled() -> None:
        model.zero_grad(set_to_none=True)
        loss(x, y).backward()

    return {
        "plain": plain,
        "stock autograd": step("autograd"),
        "sweeps (eager)": step(sweeps),
        "sweeps (compiled)": sweeps_compiled,
        "torch.func.grad (compiled)": func_compiled,
    }


def _grads(model: nn.Module) -> Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def _measure(name: str, pname: str, model, variants, repeats: int) -> list[dict]:
    errors, first, failed = {}, {}, {}
    variants["stock autograd"]()
    reference = _grads(model)
    for k, fn in list(variants.items()):
        t0 = time.perf_counter()
        try:
            fn()  # the first call compiles where it compiles
        except Exception as exc:  # reported, not timed
            failed[k] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            del variants[k]
            continue
        first[k] = time.perf_counter() - t0
        if k != "plain":
            errors[k] = float((_grads(model) - reference).norm() / reference.norm())
    med = _median_ms(variants, repeats)
    rows = [
        {
            "model": name,
            "penalty": pname,
            "variant": k,
            "median_ms": round(ms, 2),
            "x_plain": round(ms / med["plain"], 2),
            "x_stock": round(ms / med["stock autograd"], 2),
            "first_call_s": round(first[k], 1),
            "rel_error_vs_stock": errors.get(k),
            "failed": None,
        }
        for k, ms in med.items()
    ]
    for k, why in failed.items():
        rows.append({"model": name, "penalty": pname, "variant": k, "failed": why})
    return rows


def run(quick: bool, repeats: int, models: list[str] | None = None) -> list[dict]:
    rows = []
    for name, (build, shape, classes) in cases(quick).items():
        if models and not any(m.lower() in name.lower() for m in models):
            continue
        torch.manual_seed(0)
        model = build()
        x = torch.randn(*shape)
        y = torch.randint(0, classes, (shape[0],))
        for pname, (pen, kind) in penalties().items():
            rows += _measure(name, pname, model, _variants(model, x, y, pen, kind), repeats)
            print(f"{name} / {pname}: done", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    out = [
        "| model | penalty | variant | median ms | ×plain | ×stock | first call s | rel. error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("failed"):
            out.append(
                f"| {r['model']} | {r['penalty']} | {r['variant']} | failed: {r['failed']} |||||"
            )
            continue
        err = "" if r["rel_error_vs_stock"] is None else f"{r['rel_error_vs_stock']:.1e}"
        out.append(
            f"| {r['model']} | {r['penalty']} | {r['variant']} | {r['median_ms']:.1f} | "
            f"{r['x_plain']:.2f} | {r['x_stock']:.2f} | {r['first_call_s']:.1f} | {err} |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="batch 32 instead of 64")
    ap.add_argument("--out", type=Path, default=Path("results/bench"))
    ap.add_argument("--models", nargs="*", default=None, help="substrings of model names")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = run(args.quick, args.repeats, args.models)
    print(table(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "threads": args.threads,
        "repeats": args.repeats,
        "quick": args.quick,
    }
    (args.out / "bench-compile.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
