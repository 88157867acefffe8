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
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from doublebackprop import robustness as rb
from doublebackprop.common.training import distributed_context, seeded
from doublebackprop.engine.objective import input_gradient
from doublebackprop.robustness.statistics import median as _median_with_inf
from doublebackprop.vision.datasets import ImageData, load_dataset
from doublebackprop.vision.models import build_model
from doublebackprop.vision.training import TrainConfig, train_model

__all__ = ["StudyConfig", "quick_config", "run_study", "evaluate_model", "spearman"]

log = logging.getLogger(__name__)
Tensor = torch.Tensor


@dataclass(frozen=True)
class StudyConfig:
    """Everything the study needs; :func:`quick_config` gives the ≤ 15-minute CPU variant."""

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
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if len(self.lambdas) < 1 or any(not (math.isfinite(v) and v >= 0) for v in self.lambdas):
            raise ValueError(f"--lambdas must be finite numbers >= 0, got {self.lambdas}")
        if any(not e > 0 for e in self.adversarial_epsilons):
            raise ValueError(f"--adv-epsilon values must be > 0, got {self.adversarial_epsilons}")
        if self.attack_size < 2:
            raise ValueError(f"--attack-size must be >= 2, got {self.attack_size}")


def quick_config(out: Path, **overrides: object) -> StudyConfig:
    """Half-width CNN, 10k training images, 3 epochs, 150 attacked test images, fast ensemble."""
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


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation (NaN with fewer than 3 defined pairs; ``inf`` ranks highest)."""
    from scipy.stats import spearmanr

    pairs = [(u, v) for u, v in zip(a, b) if not (math.isnan(u) or math.isnan(v))]
    if len(pairs) < 3:
        return math.nan
    return float(spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic)


def _median(v: Tensor) -> float:
    """Median of the defined values (NaN, e.g. α of a zero saliency, is left out; ±inf kept)."""
    v = v[~torch.isnan(v)]
    return _median_with_inf(v)


def evaluate_model(
    model: torch.nn.Module,
    clean: ImageData,
    attack: ImageData,
    *,
    fast: bool,
    seed: int,
    robust_epsilons: tuple[float, ...] = (0.5, 1.0, 2.0),
) -> tuple[dict, dict[str, np.ndarray]]:
    """Clean accuracy on ``clean``; ρ, ρ̂, α, cos α, β on the correctly classified ``attack`` images.

    Medians are over the attacked images the model classifies correctly (the paper's convention:
    distances > 0). Images no attack broke keep distance ``inf`` ("not broken within the bounds")
    and stay in the median, which is ``inf`` when more than half of them were not broken; their
    number (``n_failed``) and the robust accuracy at ``robust_epsilons`` are reported with it.
    Returns the summary record and the per-sample arrays.
    """
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(b).argmax(1) for b in clean.images.split(500)])
    acc = float((pred == clean.labels).float().mean())
    x, y = attack.images, attack.labels
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ens = rb.ensemble_attack(
            model,
            x,
            y,
            bounds=(0.0, 1.0),
            norm=2,
            attacks=rb.default_attacks(rb.L2(), fast=fast),
            generator=torch.Generator().manual_seed(seed),
        )
        rep = rb.alignment_report(model, x)
    ok = rep.predicted == y
    d = ens.distance
    summ = rb.summarize_distances(d, ok, epsilons=robust_epsilons, seed=seed)
    by_attack = {k: rb.summarize_distances(v, ok, seed=seed) for k, v in ens.per_attack.items()}
    record = {
        "clean_accuracy": acc,
        "n_clean": len(clean),
        "n_attacked": len(attack),
        "n_correct_attacked": summ.n,
        "n_broken": summ.n_broken,
        "n_failed": summ.n_failed,
        "failure_fraction": summ.n_failed / summ.n if summ.n else math.nan,
        "median_distance": summ.median,
        "median_distance_ci": list(summ.ci),
        "robust_accuracy": {f"{e:g}": v for e, v in summ.robust_accuracy.items()},
        "median_linearized_distance": _median(rep.linearized_distance[ok]),
        "median_alignment": _median(rep.alignment[ok]),
        "median_cosine_alignment": _median(rep.cosine_alignment[ok]),
        "median_abs_bias": _median(rep.bias[ok].abs()),
        "median_saliency_norm": _median(rep.saliency_norm[ok]),
        "median_signed_alignment": _median(rep.signed_alignment[ok]),
        "median_margin_term": _median(rep.margin_term[ok]),
        "median_runner_up_term": _median(rep.runner_up_term[ok]),
        "median_bias_difference_term": _median(rep.bias_difference_term[ok]),
        "max_relation_residual": float(rep.relation_residual[ok].abs().nan_to_num(0).max())
        if ok.any()
        else math.nan,
        "median_distance_by_attack": {k: v.median for k, v in by_attack.items()},
        "failed_by_attack": {k: v.n_failed for k, v in by_attack.items()},
        "masking_fraction": ens.masking_fraction,
        "warnings": sorted({str(w.message) for w in caught}),
    }
    per_sample = {
        "correct": ok.numpy(),
        "distance": d.numpy(),
        "linearized_distance": rep.linearized_distance.numpy(),
        "alignment": rep.alignment.numpy(),
        "cosine_alignment": rep.cosine_alignment.numpy(),
        "bias": rep.bias.numpy(),
    }
    return record, per_sample


def _plan(cfg: StudyConfig) -> list[TrainConfig]:
    common: dict[str, Any] = dict(
        epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed
    )
    plans = [
        TrainConfig(
            method="plain" if lam == 0 else "gradient-norm",
            lam=lam,
            reduction=cfg.reduction,
            **common,
        )
        for lam in sorted(set(cfg.lambdas))
    ]
    plans += [
        TrainConfig(method="adversarial", epsilon=e, **common) for e in cfg.adversarial_epsilons
    ]
    return plans


def _tag(tc: TrainConfig) -> str:
    if tc.method == "adversarial":
        return f"adversarial_eps{tc.epsilon:g}"
    return f"{tc.method}_lam{tc.lam:g}"


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
            torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))[
                : cfg.train_size
            ]
        )
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(cfg.seed + 1))
    clean = test.subset(order[: cfg.clean_size]) if cfg.clean_size else test
    attacked = test.subset(order[: cfg.attack_size])
    shown = attacked.subset(torch.arange(min(6, len(attacked))))
    records: list[dict] = []
    samples: dict[str, np.ndarray] = {}
    saliencies: list[tuple[str, np.ndarray]] = []
    with distributed_context() as (rank, _world):
        for tc in _plan(cfg):
            tag = _tag(tc)
            with seeded(cfg.seed):
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
            rec, per = evaluate_model(model, clean, attacked, fast=cfg.fast_attacks, seed=cfg.seed)
            rec = {
                "model": cfg.model,
                "method": tc.method,
                "lambda": tc.lam if tc.method != "adversarial" else None,
                "epsilon": tc.epsilon if tc.method == "adversarial" else None,
                "reduction": tc.reduction if tc.method == "gradient-norm" else None,
                "tag": tag,
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
            sal = input_gradient(
                model, shown.images, target=None
            )  # saliency of the predicted class
            saliencies.append((tag, sal.squeeze(1).numpy()))
    if rank != 0:
        return []
    out.mkdir(parents=True, exist_ok=True)
    overview = _summary(records, cfg)
    (out / "results.json").write_text(json.dumps(_clean(records), indent=2, allow_nan=False))
    (out / "summary.json").write_text(json.dumps(_clean(overview), indent=2, allow_nan=False))
    _write_csv(out / "results.csv", records)
    np.savez_compressed(out / "per_sample.npz", **samples)  # type: ignore[arg-type]
    from doublebackprop.vision.report import write_report

    write_report(
        out, records, overview, samples, saliencies, shown.images.squeeze(1).numpy(), asdict(cfg)
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
