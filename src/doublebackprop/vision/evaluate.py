"""Evaluation of one trained model, and the summary of the per-seed records of one configuration.

Orchestration: it calls :mod:`doublebackprop.robustness` and turns its per-sample tensors into
records with a sample count and a confidence interval on every median.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from doublebackprop import robustness as rb
from doublebackprop.robustness.statistics import median as _median_with_inf
from doublebackprop.vision.datasets import ImageData

__all__ = ["evaluate_model", "across_seeds", "MEDIANS"]

Tensor = torch.Tensor

#: the per-sample quantities whose medians (with CIs) every record carries
MEDIANS = (
    "linearized_distance",
    "alignment",
    "cosine_alignment",
    "abs_bias",
    "saliency_norm",
    "signed_alignment",
    "margin_term",
    "runner_up_term",
    "bias_difference_term",
)


def _median(v: Tensor) -> float:
    """Median of the defined values (NaN, e.g. α of a zero saliency, is left out; ±inf kept)."""
    v = v[~torch.isnan(v)]
    return _median_with_inf(v)


def _median_and_ci(v: Tensor, seed: int) -> tuple[float, list[float], int]:
    v = v[~torch.isnan(v)]
    return _median_with_inf(v), list(rb.median_ci(v, seed=seed)), int(v.numel())


def evaluate_model(
    model: torch.nn.Module,
    clean: ImageData,
    attack: ImageData,
    *,
    fast: bool,
    seed: int,
    norm: float = 2.0,
    robust_epsilons: tuple[float, ...] = (0.5, 1.0, 2.0),
) -> tuple[dict, dict[str, np.ndarray]]:
    """Clean accuracy on ``clean``; ρ, ρ̂, α, cos α, β on the correctly classified ``attack`` images.

    Parameters
    ----------
    model : nn.Module
    clean, attack : ImageData
        Images for the clean accuracy, and the (smaller) set that is attacked and measured.
    fast : bool
        The quick ensemble (:func:`doublebackprop.robustness.default_attacks`).
    seed : int
        Seeds the attacks and the bootstrap intervals.
    norm : 2 or math.inf
        Norm of the minimal distances ρ and of the linearised distance ρ̂ (its dual for the
        gradients); α, cos α and the relation's terms are L2 quantities.
    robust_epsilons : tuple of float
        Radii of the reported robust accuracy.

    Notes
    -----
    Medians are over the attacked images the model classifies correctly (the paper's convention:
    distances > 0). Images no attack broke keep distance ``inf`` ("not broken within the bounds")
    and stay in the median, which is ``inf`` when more than half of them were not broken; their
    number (``n_failed``) and the robust accuracy are reported with it. Every median comes with a
    95 % percentile-bootstrap interval (``*_ci``) and its sample count.

    Returns
    -------
    (record, per_sample)
    """
    model.eval()
    nrm = rb.L2() if norm == 2 else rb.Linf()
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
            norm=nrm,
            attacks=rb.default_attacks(nrm, fast=fast),
            generator=torch.Generator().manual_seed(seed),
        )
        rep = rb.alignment_report(model, x)
        rho_hat = (
            rep.linearized_distance if norm == 2 else rb.linearized_distance(model, x, norm=nrm)
        )
    ok = rep.predicted == y
    d = ens.distance
    summ = rb.summarize_distances(d, ok, epsilons=robust_epsilons, seed=seed)
    by_attack = {k: rb.summarize_distances(v, ok, seed=seed) for k, v in ens.per_attack.items()}
    values = {
        "linearized_distance": rho_hat,
        "alignment": rep.alignment,
        "cosine_alignment": rep.cosine_alignment,
        "abs_bias": rep.bias.abs(),
        "saliency_norm": rep.saliency_norm,
        "signed_alignment": rep.signed_alignment,
        "margin_term": rep.margin_term,
        "runner_up_term": rep.runner_up_term,
        "bias_difference_term": rep.bias_difference_term,
    }
    record: dict = {
        "norm": "L2" if norm == 2 else "Linf",
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
    }
    for key in MEDIANS:
        med, ci, n = _median_and_ci(values[key][ok], seed)
        record[f"median_{key}"], record[f"median_{key}_ci"], record[f"n_{key}"] = med, ci, n
    record.update(
        {
            "max_relation_residual": float(rep.relation_residual[ok].abs().nan_to_num(0).max())
            if ok.any()
            else math.nan,
            "median_distance_by_attack": {k: v.median for k, v in by_attack.items()},
            "median_distance_by_attack_ci": {k: list(v.ci) for k, v in by_attack.items()},
            "failed_by_attack": {k: v.n_failed for k, v in by_attack.items()},
            "masking_fraction": ens.masking_fraction,
            "warnings": sorted({str(w.message) for w in caught}),
        }
    )
    per_sample = {
        "correct": ok.numpy(),
        "distance": d.numpy(),
        "linearized_distance": rho_hat.detach().numpy(),
        "alignment": rep.alignment.numpy(),
        "cosine_alignment": rep.cosine_alignment.numpy(),
        "bias": rep.bias.numpy(),
    }
    return record, per_sample


#: what the across-seed summary aggregates
AGGREGATED = (
    "clean_accuracy",
    "median_distance",
    "median_linearized_distance",
    "median_alignment",
    "median_cosine_alignment",
    "median_abs_bias",
    "failure_fraction",
)
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def across_seeds(records: list[dict]) -> list[dict]:
    """One row per configuration: mean of the per-seed values with a 95 % t-interval.

    ``inf`` values (a median over mostly unbroken images) make the mean ``inf`` and the interval
    ``(nan, nan)`` unless every seed is ``inf``; ``n_seeds`` counts the seeds of the configuration
    and ``<key>_n_seeds`` those whose value was defined (a NaN median is left out).
    """
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r["config"], []).append(r)
    rows = []
    for rs in groups.values():
        row: dict = {k: rs[0][k] for k in ("config", "method", "lambda", "epsilon", "norm")}
        row["n_seeds"] = len(rs)
        row["seeds"] = [r["seed"] for r in rs]
        for key in AGGREGATED:
            v = np.array([r[key] for r in rs], dtype=float)
            v = v[~np.isnan(v)]
            mean = float(v.mean()) if v.size else math.nan
            if v.size >= 2 and np.isfinite(v).all():
                half = _T975.get(v.size - 1, 1.96) * float(v.std(ddof=1)) / math.sqrt(v.size)
                ci = [mean - half, mean + half]
            elif v.size and np.isinf(v).all():
                ci = [math.inf, math.inf]
            else:
                ci = [math.nan, math.nan]
            row[key], row[f"{key}_ci"], row[f"{key}_n_seeds"] = mean, ci, int(v.size)
        rows.append(row)
    return rows
