"""Training throughput of the tumour-typing models (spectra per second), with and without DRR.

One optimiser step = forward + loss (+ DRR's input gradient and its parameter gradient) +
backward + AMSGrad update, in train mode, batch 150 (the paper's), on random TIC-like spectra.
Engines: ``adjoint`` (the library's default: backward passes built from K^T/K^□) and stock
``autograd``. The four configurations of a model and length are timed in turn, step by step
(round robin); median over ``--steps`` timed steps after two warm-up rounds.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_msi_train.py --out results/bench
    .venv/bin/python benchmarks/bench_msi_train.py --device cuda --lengths 2600 10273 20000
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import doublebackprop as dbp
from doublebackprop.msi.models import IsotopeNet, ResNet1d
from doublebackprop.msi.training import balanced_weights


def _model(name: str, length: int) -> torch.nn.Module:
    if name == "isotopenet":
        return IsotopeNet(length, 2)
    return ResNet1d(length, 2, base_width=8, max_width=16, final_width=16)


def _stepper(name: str, length: int, *, drr: bool, engine: str, batch: int, device: str):
    """One closure per configuration: a full optimiser step on its own model copy."""
    torch.manual_seed(0)
    net = _model(name, length).to(device).train()
    runner = dbp.adjoint(net) if engine == "adjoint" else net
    opt = torch.optim.Adam(net.parameters(), lr=5e-4, amsgrad=True)
    x = torch.rand(batch, length, device=device)
    x = x / x.mean(1, keepdim=True)
    y = (torch.arange(batch) % 2).to(device)
    w = balanced_weights(y.cpu()).to(device)
    pen = dbp.RelevancePenalty(l1=1e-3, l2=1e-3) if drr else None

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        res = dbp.objective(runner, x, y, penalty=pen, engine=engine, sample_weight=w)
        res.total.backward()
        opt.step()

    return step


def measure_round_robin(
    name: str, length: int, *, batch: int, steps: int, device: str
) -> dict[tuple[str, bool], float]:
    """Spectra/s per (engine, drr), the four configurations timed in turn, step by step, so
    that machine noise and warm-up hit them alike; median over ``steps``."""
    keys = [(e, d) for e in ("adjoint", "autograd") for d in (False, True)]
    steppers = {
        k: _stepper(name, length, drr=k[1], engine=k[0], batch=batch, device=device) for k in keys
    }
    times: dict[tuple[str, bool], list[float]] = {k: [] for k in keys}
    for i in range(steps + 2):
        for k in keys:
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            steppers[k]()
            if device == "cuda":
                torch.cuda.synchronize()
            if i >= 2:  # two warm-up rounds
                times[k].append(time.perf_counter() - t0)
    return {k: batch / statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--lengths", type=int, nargs="+", default=[1300, 2600])
    ap.add_argument("--models", nargs="+", default=["isotopenet", "resnet1d"])
    ap.add_argument("--batch", type=int, default=150)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    print(
        f"{'model':<11}{'bins':>7}{'engine':>10}{'plain sp/s':>12}{'DRR sp/s':>10}"
        f"{'DRR/plain time':>16}"
    )
    for name in args.models:
        for length in args.lengths:
            rates = measure_round_robin(
                name, length, batch=args.batch, steps=args.steps, device=args.device
            )
            for engine in ("adjoint", "autograd"):
                plain, drr = rates[(engine, False)], rates[(engine, True)]
                rows.append(
                    {
                        "model": name,
                        "bins": length,
                        "engine": engine,
                        "device": args.device,
                        "threads": torch.get_num_threads(),
                        "batch": args.batch,
                        "plain_spectra_per_s": plain,
                        "drr_spectra_per_s": drr,
                        "drr_time_ratio": plain / drr,
                    }
                )
                print(
                    f"{name:<11}{length:>7}{engine:>10}{plain:>12.0f}{drr:>10.0f}"
                    f"{plain / drr:>15.2f}x",
                    flush=True,
                )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_msi_train.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
