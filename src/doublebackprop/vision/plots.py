"""The study's PNG plots (matplotlib, Agg): error bars over seeds, one colour scale for saliency."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from doublebackprop.common.plotting import pyplot

__all__ = [
    "label",
    "plot_alignment_vs_distance",
    "plot_lambda",
    "plot_per_sample",
    "plot_saliency_grid",
]


def label(r: dict) -> str:
    """``plain``, ``λ=…`` or ``adv ε=…`` (``L∞`` marked)."""
    if r["method"] == "adversarial":
        return f"adv{' L∞' if r.get('norm') == 'Linf' else ''} ε={r['epsilon']:g}"
    return "plain" if r["method"] == "plain" else f"λ={r['lambda']:g}"


def _err(row: dict, key: str) -> tuple[float, float]:
    lo, hi = row.get(f"{key}_ci") or (math.nan, math.nan)
    v = row[key]
    if not all(math.isfinite(t) for t in (lo, hi, v)):
        return 0.0, 0.0
    return v - lo, hi - v


def plot_alignment_vs_distance(rows: list[dict], path: Path) -> None:
    """Median α against median ρ, one point per configuration (mean over seeds, 95 % t-bars)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for r in rows:
        x, y = r["median_distance"], r["median_alignment"]
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        ex, ey = _err(r, "median_distance"), _err(r, "median_alignment")
        ax.errorbar(
            x,
            y,
            xerr=[[ex[0]], [ex[1]]],
            yerr=[[ey[0]], [ey[1]]],
            fmt="s" if r["method"] == "adversarial" else "o",
            capsize=3,
        )
        ax.annotate(label(r), (x, y), fontsize=8, xytext=(4, 2), textcoords="offset points")
    ax.set_xlabel("median minimal distance ρ (ensemble)")
    ax.set_ylabel("median alignment α")
    n = max((r["n_seeds"] for r in rows), default=0)
    ax.set_title(f"alignment vs robustness (mean of {n} seeds, 95% CI)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_per_sample(records: list[dict], samples: dict[str, np.ndarray], path: Path) -> None:
    """Per-sample α vs ρ and ρ vs ρ̂ of the first seed's models (broken samples only)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    first = min((r["seed"] for r in records), default=0)
    for r in (r for r in records if r["seed"] == first):
        t = r["tag"]
        ok = samples[f"{t}/correct"] & np.isfinite(samples[f"{t}/distance"])
        d = samples[f"{t}/distance"][ok]
        axes[0].scatter(d, samples[f"{t}/alignment"][ok], s=6, alpha=0.5, label=label(r))
        axes[1].scatter(samples[f"{t}/linearized_distance"][ok], d, s=6, alpha=0.5, label=label(r))
    axes[0].set_xlabel("ρ(x)")
    axes[0].set_ylabel("α(x)")
    axes[0].set_title(f"per sample (seed {first}): alignment vs distance", fontsize=9)
    axes[1].set_xlabel("ρ̂(x) (linearised)")
    axes[1].set_ylabel("ρ(x) (attacks)")
    lim = axes[1].get_xlim()
    axes[1].plot(lim, lim, "k--", lw=0.8)
    axes[1].set_title("per sample: linearised vs attack distance", fontsize=9)
    axes[0].legend(fontsize=7, markerscale=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_lambda(rows: list[dict], path: Path) -> None:
    """ρ, ρ̂, α (left axis) and clean accuracy (right axis) over λ, one legend below the plot."""
    plt = pyplot()
    grid = sorted((r for r in rows if r["method"] != "adversarial"), key=lambda r: r["lambda"])
    if not grid:
        return
    positive = [r["lambda"] for r in grid if r["lambda"] > 0]
    floor = min(positive) / 10 if positive else 1e-4
    lam = [r["lambda"] if r["lambda"] > 0 else floor for r in grid]
    fig, ax = plt.subplots(figsize=(6, 4.6))
    lines = []
    for key, style, name in (
        ("median_distance", "o-", "median ρ"),
        ("median_linearized_distance", "s--", "median ρ̂"),
        ("median_alignment", "^-", "median α"),
    ):
        vals = [r[key] for r in grid]
        errs = np.array([_err(r, key) for r in grid]).T
        lines.append(ax.errorbar(lam, vals, yerr=errs, fmt=style, capsize=3, label=name))
    ax.set_xscale("log")
    ax.set_xlabel(f"λ (the plain model drawn at {floor:g})")
    ax.set_ylabel("median distance ρ, ρ̂ and alignment α (input units)")
    ax2 = ax.twinx()
    (acc,) = ax2.plot(lam, [r["clean_accuracy"] for r in grid], "k:", label="clean accuracy")
    ax2.set_ylabel("clean accuracy")
    handles = [*lines, acc]
    fig.legend(handles, [h.get_label() for h in handles], loc="lower center", ncol=4, fontsize=8)
    n = max(r["n_seeds"] for r in grid)
    ax.set_title(f"λ sweep (mean of {n} seeds, 95% CI)", fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_saliency_grid(
    saliencies: list[tuple[str, np.ndarray, np.ndarray]],
    images: np.ndarray,
    path: Path,
    *,
    classes: tuple[str, ...],
) -> float:
    """Inputs (RGB or grey) and, per model, ``g/‖g‖`` summed over channels on one colour scale.

    Every saliency map is divided by its own L2 norm (so models with tiny gradients stay
    visible) and all panels share one symmetric scale ``±v``; returns ``v``. Each panel is
    titled with the model's predicted class.

    Parameters
    ----------
    saliencies : list of (name, saliency (N, C, H, W), predicted class (N,))
    images : ndarray
        ``(N, C, H, W)`` the inputs.
    path : Path
    classes : tuple of str
    """
    plt = pyplot()
    rows, cols = len(saliencies) + 1, images.shape[0]
    maps = []
    for _, sal, _ in saliencies:
        norm = np.sqrt((sal.reshape(sal.shape[0], -1) ** 2).sum(1)).reshape(-1, 1, 1)
        maps.append(sal.sum(1) / np.where(norm > 0, norm, 1.0))
    v = float(max((np.abs(m).max() for m in maps), default=1.0)) or 1.0
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.7 * rows), squeeze=False)
    for j in range(cols):
        img = images[j]
        if img.shape[0] == 1:
            axes[0, j].imshow(img[0], cmap="gray", vmin=0, vmax=1)
        else:
            axes[0, j].imshow(np.clip(np.transpose(img[:3], (1, 2, 0)), 0, 1))
    axes[0, 0].set_ylabel("input", fontsize=7)
    im = None
    for i, ((tag, _, pred), m) in enumerate(zip(saliencies, maps), start=1):
        for j in range(cols):
            im = axes[i, j].imshow(m[j], cmap="bwr", vmin=-v, vmax=v)
            axes[i, j].set_title(f"pred: {classes[int(pred[j])]}", fontsize=6, pad=2)
        axes[i, 0].set_ylabel(tag.replace("_", "\n"), fontsize=6)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if im is not None:
        fig.colorbar(im, ax=axes[1:, :].ravel().tolist(), shrink=0.6, label="∇Ψ/‖∇Ψ‖")
    fig.suptitle(
        f"saliency of the predicted class, ∇Ψ(x) / ‖∇Ψ(x)‖ (channels summed), one scale ±{v:.3g}",
        fontsize=9,
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return v
