"""Pictures and pages of the slide-typing workflow: the reliability diagram of a bundle, and per
slide a class map (low-confidence pixels marked, the annotation beside it), ion images of the most
relevant m/z, and an HTML report that embeds them."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from doublebackprop.common.plotting import pyplot
from doublebackprop.msi.diagnosis.calibration import reliability_curve, softmax
from doublebackprop.msi.diagnosis.slides import LOW_CONFIDENCE, NEAR_BIOMARKER, SlideResult

__all__ = ["reliability_diagram", "slide_figures", "write_slide_report"]


def reliability_diagram(logits: np.ndarray, y: np.ndarray, temperature: float, path: Path) -> Path:
    """Accuracy against confidence on the held-out patients, before and after scaling by
    ``temperature``; the bar gap to the diagonal is the miscalibration, its weighted mean the ECE.

    Parameters
    ----------
    logits : ndarray
        Held-out logits ``(N, K)``.
    y : ndarray
        ``(N,)`` true class indices.
    temperature : float
    path : Path
        The PNG to write.
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharey=True)
    for ax, t, title in (
        (axes[0], 1.0, "before"),
        (axes[1], temperature, f"after (T = {temperature:.3g})"),
    ):
        c = reliability_curve(softmax(logits, t), y)
        centers = 0.5 * (c.edges[1:] + c.edges[:-1])
        full = c.count > 0
        ax.bar(
            centers[full],
            c.accuracy[full],
            width=np.diff(c.edges)[full],
            edgecolor="black",
            color="#4c72b0",
            alpha=0.8,
            label="accuracy",
        )
        ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfect calibration")
        ax.set_title(f"{title}: ECE {100 * c.ece:.1f} %")
        ax.set_xlabel("confidence (probability of the predicted class)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.suptitle(f"Reliability on {len(y)} held-out spectra")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _class_colors(k: int) -> list[tuple[float, float, float, float]]:
    plt = pyplot()
    cmap = plt.get_cmap("tab10")
    return [cmap(i % 10) for i in range(k)]


def _rgb(class_map: np.ndarray, k: int) -> np.ndarray:
    colors = np.asarray(_class_colors(k))[:, :3]
    img = np.ones((*class_map.shape, 3))
    on = class_map >= 0
    img[on] = colors[class_map[on]]
    return img


def slide_figures(
    result: SlideResult, out_dir: Path, stem: str, *, truth_map: np.ndarray | None = None
) -> list[Path]:
    """``<stem>_classes.png`` (predicted map, low-confidence pixels crossed, the annotation
    beside it when given) and ``<stem>_ions.png`` (ion images of the top m/z).

    Parameters
    ----------
    result : SlideResult
    out_dir : Path
    stem : str
        File name stem of the PNGs.
    truth_map : ndarray or None
        ``(H, W)`` annotated class per pixel (−1: none), drawn beside the prediction.
    """
    plt = pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    k = len(result.classes)
    panels = 2 if truth_map is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels + 1.5, 4.2), squeeze=False)
    ax = axes[0, 0]
    ax.imshow(_rgb(result.class_map, k), interpolation="nearest")
    rows, cols = np.nonzero(result.confidence_map < LOW_CONFIDENCE)
    if len(rows):  # a cross on every low-confidence pixel, scaled to the map
        size = max(4.0, 2000.0 / max(result.class_map.shape))
        ax.scatter(cols, rows, marker="x", s=size, linewidths=0.8, color="black")
    ax.set_title("predicted class")
    if truth_map is not None:
        axes[0, 1].imshow(_rgb(truth_map, k), interpolation="nearest")
        axes[0, 1].set_title("annotation")
    for a in axes[0]:
        a.set_xticks([])
        a.set_yticks([])
    handles = [Patch(color=c, label=n) for c, n in zip(_class_colors(k), result.classes)]
    handles.append(
        Line2D([], [], marker="x", color="black", ls="", label=f"p < {LOW_CONFIDENCE:g}")
    )
    fig.legend(handles=handles, loc="center right", fontsize=8)
    fig.suptitle(result.path.name)
    fig.tight_layout(rect=(0, 0, 0.8, 1))
    paths = [out_dir / f"{stem}_classes.png"]
    fig.savefig(paths[0], dpi=100)
    plt.close(fig)
    if result.top_mz:
        n = len(result.top_mz)
        n_cols = min(n, 3)
        n_rows = int(np.ceil(n / n_cols))
        fig, axes = plt.subplots(
            n_rows, n_cols, figsize=(3.6 * n_cols, 3.2 * n_rows), squeeze=False
        )
        for a in axes.ravel():
            a.axis("off")
        for a, t in zip(axes.ravel(), result.top_mz):
            im = a.imshow(t.image, cmap="viridis", interpolation="nearest")
            a.set_title(f"m/z {t.mz:.2f} ({100 * t.relevance:.1f} % of |r|)", fontsize=9)
            fig.colorbar(im, ax=a, fraction=0.046, pad=0.04)
        fig.suptitle(f"{result.path.name}: ion images of the most relevant m/z (TIC-normalised)")
        fig.tight_layout()
        paths.append(out_dir / f"{stem}_ions.png")
        fig.savefig(paths[1], dpi=100)
        plt.close(fig)
    return paths


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def write_slide_report(
    result: SlideResult,
    figures: Sequence[Path],
    path: Path,
    *,
    calibration: dict,
    score: dict | None = None,
) -> Path:
    """The per-slide HTML page: class map, class proportions, the top m/z table, ion images,
    the calibration note and, with annotations, the balanced accuracy.

    Parameters
    ----------
    result : SlideResult
    figures : sequence of Path
        From :func:`slide_figures` (class map first).
    path : Path
        The HTML file to write.
    calibration : dict
        The bundle's calibration metrics (temperature, ECE before and after).
    score : dict or None
        Balanced accuracy against the annotation (:class:`~doublebackprop.msi.experiment.metrics.Score`
        as a dict).
    """
    e = html.escape
    props = "".join(
        f"<tr><td>{e(c)}</td><td>{100 * v:.1f} %</td></tr>" for c, v in result.proportions.items()
    )
    head = "".join(f"<th>mean intensity, predicted {e(c)}</th>" for c in result.classes)
    rows = []
    for t in result.top_mz:
        means = "".join(f"<td>{v:.3g}</td>" for v in t.mean_intensity.values())
        near = (
            "–"
            if t.nearest_biomarker is None
            else f"{t.nearest_biomarker:.2f} (Δ {t.nearest_biomarker - t.mz:+.2f})"
        )
        rows.append(
            f"<tr><td>{t.mz:.2f}</td><td>{100 * t.relevance:.1f} %</td>{means}<td>{near}</td></tr>"
        )
    acc = ""
    if score is not None:
        acc = (
            f"<h2>Against the annotation</h2><p>{score['n_spots']} annotated spectra of "
            f"{score['n_patients']} patient(s): spot balanced accuracy "
            f"{100 * score['spot']:.1f} % (95 % CI {100 * score['spot_ci'][0]:.1f}–"
            f"{100 * score['spot_ci'][1]:.1f}), patient balanced accuracy "
            f"{100 * score['patient']:.1f} %.</p>"
        )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(result.path.name)}: tumour typing</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 1em}}
img{{max-width:100%;height:auto}} table{{border-collapse:collapse;margin:0.5em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} th{{background:#f3f3f3}}</style>
</head><body>
<h1>{e(result.path.name)}</h1>
<p>{len(result.predicted)} spectra typed. {100 * result.low_confidence:.1f} % have a calibrated
probability below {LOW_CONFIDENCE:g} for their predicted class (crossed on the map).</p>
{_img(figures[0])}
<h2>Class proportions</h2><table><tr><th>class</th><th>share of spectra</th></tr>{props}</table>
<h2>Most relevant m/z</h2>
<p>Share of the slide's total relevance |x ⊙ ∇ₓ z| per bin (the evidence the model used),
with the mean preprocessed intensity among spectra predicted as each class.</p>
<table><tr><th>m/z</th><th>relevance</th>{head}<th>known biomarker within {NEAR_BIOMARKER:g} Da</th></tr>{"".join(rows)}</table>
{_img(figures[1]) if len(figures) > 1 else ""}
{acc}
<h2>Calibration</h2><p>Probabilities are temperature-scaled (T = {calibration.get("temperature", float("nan")):.3g})
on held-out patients: expected calibration error {100 * calibration.get("ece_before", float("nan")):.1f} %
before, {100 * calibration.get("ece_after_cross_fitted", float("nan")):.1f} % after (cross-fitted).
Calibration holds for data like the training data; a slide from another lab or protocol can be
confidently wrong.</p>
</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path
