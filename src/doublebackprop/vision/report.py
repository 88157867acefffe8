"""PNG plots (matplotlib, Agg) and a self-contained HTML report with the images embedded."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import numpy as np

from doublebackprop.common.plotting import pyplot

__all__ = ["write_report"]


def _label(r: dict) -> str:
    if r["method"] == "adversarial":
        return f"adv ε={r['epsilon']:g}"
    return "plain" if r["method"] == "plain" else f"λ={r['lambda']:g}"


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
            "median ρ̂",
            "median α",
            "median cos α",
            "median |β|",
            "masking",
            "train s",
        ],
        [
            [
                html.escape(_label(r)),
                _fmt(r.get("n_correct_attacked")),
                _fmt(r.get("clean_accuracy")),
                _with_ci(r),
                f"{_fmt(r.get('n_failed'))} / {_fmt(r.get('n_correct_attacked'))}",
                *[_fmt(r.get("robust_accuracy", {}).get(e)) for e in eps],
                _fmt(r.get("median_linearized_distance")),
                _fmt(r.get("median_alignment")),
                _fmt(r.get("median_cosine_alignment")),
                _fmt(r.get("median_abs_bias")),
                _fmt(r.get("masking_fraction")),
                _fmt(r.get("train_seconds")),
            ]
            for r in records
        ],
    )
    attacks = sorted({a for r in records for a in r.get("median_distance_by_attack", {})})
    per_attack = _table(
        ["model", *[f"{a}: median ρ (not broken)" for a in attacks]],
        [
            [html.escape(_label(r))]
            + [
                f"{_fmt(r['median_distance_by_attack'].get(a))} "
                f"({_fmt(r.get('failed_by_attack', {}).get(a))})"
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
                html.escape(_label(r)),
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
        f"<h2>Models</h2>{main}<h2>Per-attack distances</h2>"
        "<p>Median verified L2 distance of each attack over the same images; in brackets the "
        f"number of images it did not break (∞ = not broken within the bounds).</p>{per_attack}"
        "<h2>The exact multi-class relation</h2><p>For each sample, with predicted class i and "
        "the minimiser j* of ρ̂: ⟨x,g_i⟩/‖g_i‖ = ρ̂‖g_i−g_j*‖/‖g_i‖ + ⟨x,g_j*⟩/‖g_i‖ − "
        "(β_i−β_j*)/‖g_i‖. Medians of each term (the medians of a sum need not add up); the "
        f"residual column is the largest per-sample rounding error.</p>{terms}"
    )


def plot_alignment_vs_distance(records: list[dict], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for r in records:
        marker = "s" if r["method"] == "adversarial" else "o"
        ax.scatter(r["median_distance"], r["median_alignment"], marker=marker, s=40)
        ax.annotate(
            _label(r),
            (r["median_distance"], r["median_alignment"]),
            fontsize=8,
            xytext=(4, 2),
            textcoords="offset points",
        )
    ax.set_xlabel("median minimal L2 distance ρ (ensemble)")
    ax.set_ylabel("median alignment α")
    ax.set_title("alignment vs robustness across models")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_per_sample(records: list[dict], samples: dict[str, np.ndarray], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for r in records:
        t = r["tag"]
        ok = samples[f"{t}/correct"] & np.isfinite(samples[f"{t}/distance"])
        axes[0].scatter(
            samples[f"{t}/distance"][ok],
            samples[f"{t}/alignment"][ok],
            s=6,
            alpha=0.5,
            label=_label(r),
        )
        axes[1].scatter(
            samples[f"{t}/linearized_distance"][ok],
            samples[f"{t}/distance"][ok],
            s=6,
            alpha=0.5,
            label=_label(r),
        )
    axes[0].set_xlabel("ρ(x)")
    axes[0].set_ylabel("α(x)")
    axes[0].set_title("per sample: alignment vs distance")
    axes[1].set_xlabel("ρ̂(x) (linearised)")
    axes[1].set_ylabel("ρ(x) (attacks)")
    lim = axes[1].get_xlim()
    axes[1].plot(lim, lim, "k--", lw=0.8)
    axes[1].set_title("per sample: linearised vs attack distance")
    axes[0].legend(fontsize=7, markerscale=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_lambda(records: list[dict], path: Path) -> None:
    plt = pyplot()
    grid = sorted((r for r in records if r["method"] != "adversarial"), key=lambda r: r["lambda"])
    if not grid:
        return
    lam = [max(r["lambda"], 1e-4) for r in grid]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(lam, [r["median_distance"] for r in grid], "o-", label="median ρ")
    ax.plot(lam, [r["median_linearized_distance"] for r in grid], "s--", label="median ρ̂")
    ax.plot(lam, [r["median_alignment"] for r in grid], "^-", label="median α")
    ax.set_xscale("log")
    ax.set_xlabel("λ (plain model drawn at 1e-4)")
    ax2 = ax.twinx()
    ax2.plot(lam, [r["clean_accuracy"] for r in grid], "k:", label="clean accuracy")
    ax2.set_ylabel("clean accuracy")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_saliency_grid(
    saliencies: list[tuple[str, np.ndarray]], images: np.ndarray, path: Path
) -> None:
    plt = pyplot()
    rows, cols = len(saliencies) + 1, images.shape[0]
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 1.5 * rows), squeeze=False)
    for j in range(cols):
        axes[0, j].imshow(images[j], cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_ylabel("input", fontsize=7)
    for i, (tag, sal) in enumerate(saliencies, start=1):
        for j in range(cols):
            s = sal[j]
            m = np.abs(s).max() or 1.0
            axes[i, j].imshow(s, cmap="bwr", vmin=-m, vmax=m)
        axes[i, 0].set_ylabel(tag.replace("_", "\n"), fontsize=6)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("saliency ∇Ψ^{i*}(x) of the same test images as robustness grows", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(
    out: Path,
    records: list[dict],
    summary: dict,
    samples: dict[str, np.ndarray],
    saliencies: list[tuple[str, np.ndarray]],
    images: np.ndarray,
    config: dict,
) -> Path:
    """Write the PNGs and ``report.html`` (PNGs embedded as base64) into ``out``."""
    pngs = {
        "alignment_vs_distance.png": lambda p: plot_alignment_vs_distance(records, p),
        "per_sample.png": lambda p: plot_per_sample(records, samples, p),
        "lambda_sweep.png": lambda p: plot_lambda(records, p),
        "saliency_grid.png": lambda p: plot_saliency_grid(saliencies, images, p),
    }
    for name, draw in pngs.items():
        draw(out / name)
    tables = _model_tables(records)
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
    doc = f"""<!DOCTYPE html><html><head><meta charset="utf-8">
<title>doublebackprop robustness study</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}
img{{max-width:100%}}</style></head><body>
<h1>Robustness ↔ saliency alignment</h1>
<p>Etmann, Lunz, Maass &amp; Schönlieb (ICML 2019), reproduced on
{html.escape(str(config.get("dataset")))}.
ρ: best-of-ensemble verified minimal L2 adversarial distance; ρ̂: linearised distance;
α = |⟨x,∇Ψ<sup>i*</sup>⟩|/‖∇Ψ<sup>i*</sup>‖;
medians over the attacked test images each model classifies correctly; pixels in [0, 1].</p>
<h2>Summary</h2><ul>{summ}</ul>
{tables}
<h2>Sanity warnings</h2><ul>{warn}</ul>
<h2>Plots</h2>{imgs}
<h2>Configuration</h2><pre>{html.escape(json.dumps(config, indent=1, default=str))}</pre>
</body></html>"""
    path = out / "report.html"
    path.write_text(doc, encoding="utf-8")
    return path
