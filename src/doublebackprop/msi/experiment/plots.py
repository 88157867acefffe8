"""The experiment's figures: accuracy per direction, mean relevance along m/z, per-core maps of the
annotation and of every model's predictions (all cores, on pages), and real ion images of the
m/z the DRR model relies on most."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from doublebackprop.common.plotting import pyplot
from doublebackprop.msi.experiment.interpret import prediction_images
from doublebackprop.msi.experiment.protocol import ExperimentResult
from doublebackprop.msi.experiment.results import record_label

__all__ = ["top_relevance", "write_plots"]

#: cores per page of the map figures
CORES_PER_PAGE = 12


def _accuracy_plot(records: Sequence[dict], path: Path) -> Path:
    plt = pyplot()
    recs = [r for r in records if r["protocol"] == "interlab"]
    directions = list(dict.fromkeys(r["direction"] for r in recs))
    models = list(dict.fromkeys(record_label(r) for r in recs))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    width = 0.8 / max(len(models), 1)
    for ax, key, ci_key, title in (
        (axes[0], "spot_balanced_accuracy", "spot_ci", "per spot"),
        (axes[1], "patient_balanced_accuracy", "patient_ci", "per patient (majority vote)"),
    ):
        for m_i, m in enumerate(models):
            xs, ys, lo, hi = [], [], [], []
            for d_i, d in enumerate(directions):
                r = next((r for r in recs if record_label(r) == m and r["direction"] == d), None)
                if r is None:
                    continue
                xs.append(d_i + (m_i - (len(models) - 1) / 2) * width)
                ys.append(100 * r[key])
                ci = r.get(ci_key, [np.nan, np.nan])
                lo.append(100 * (r[key] - ci[0]))
                hi.append(100 * (ci[1] - r[key]))
            ax.bar(xs, ys, width, label=m, yerr=[lo, hi], capsize=2)
        ax.axhline(50, color="grey", lw=0.8, ls="--")
        ax.set_xticks(range(len(directions)), directions)
        ax.set_title(f"Inter-lab balanced accuracy, {title}")
        ax.set_ylim(0, 100)
    axes[0].set_ylabel("balanced accuracy (%)")
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _relevance_plot(result: ExperimentResult, path: Path) -> Path | None:
    plt = pyplot()
    arms: dict = {}
    for a in result.arms:
        if a.protocol == "interlab" and a.relevance is not None:
            key = a.spec.key
            arms[key] = a.relevance if key not in arms else arms[key].merge(a.relevance)
    if not arms:
        return None
    fig, axes = plt.subplots(
        len(arms), 1, figsize=(11, 2.2 * len(arms)), sharex=True, squeeze=False
    )
    for ax, (key, rel) in zip(axes[:, 0], arms.items()):
        mean = rel.mean_relevance
        for c, name in enumerate(result.classes):
            ax.plot(result.mz, mean[c], lw=0.7, label=f"true class {name}")
        if result.biomarkers is not None:
            for m in result.biomarkers:
                ax.axvline(m, color="red", alpha=0.25, lw=0.8)
        ax.set_title(
            f"{key}: mean relevance r = x·∂z_y/∂x (test spots of both directions)", fontsize=9
        )
        ax.set_ylabel("mean r")
    axes[0, 0].legend(fontsize=8)
    axes[-1, 0].set_xlabel(
        "m/z" + ("  (red: true biomarker peaks)" if result.biomarkers is not None else "")
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _interlab_arms(result: ExperimentResult) -> dict[str, list]:
    arms: dict[str, list] = {}
    for a in result.arms:
        if a.protocol == "interlab":
            arms.setdefault(a.spec.key, []).append(a)
    return arms


def _pages(names: list[str]) -> list[list[str]]:
    return [names[i : i + CORES_PER_PAGE] for i in range(0, len(names), CORES_PER_PAGE)]


def _class_maps(
    result: ExperimentResult,
    core: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    y_true: np.ndarray,
    out: Path,
) -> list[Path]:
    """Per page of cores: the annotation and every model's test predictions, spot by spot."""
    plt = pyplot()
    from matplotlib.colors import ListedColormap

    arms = _interlab_arms(result)
    if not arms:
        return []
    core = np.asarray(core).astype(str)
    cmap = ListedColormap(
        ["white", *[plt.get_cmap("tab10")(i) for i in range(len(result.classes))]]
    )
    rows = ["annotation", *arms]
    preds = {}
    for key, members in arms.items():
        pred = np.full(len(y_true), -1)
        for a in members:
            pred[a.index] = a.pred[0]
        preds[key] = pred
    paths = []
    pages = _pages(sorted(set(core.tolist())))
    for page_i, chosen in enumerate(pages, start=1):
        keep = np.isin(core, chosen)
        fig, axes = plt.subplots(
            len(rows),
            len(chosen),
            figsize=(1.4 * len(chosen) + 1, 1.4 * len(rows) + 0.8),
            squeeze=False,
        )
        for r_i, row in enumerate(rows):
            sel = keep if row == "annotation" else keep & (preds[row] >= 0)
            shown = y_true[sel] if row == "annotation" else preds[row][sel]
            imgs = {
                im.name: im
                for im in prediction_images(core[sel], xs[sel], ys[sel], y_true[sel], shown)
            }
            for c_i, name in enumerate(chosen):
                ax = axes[r_i, c_i]
                ax.set_xticks([])
                ax.set_yticks([])
                if name in imgs:
                    ax.imshow(
                        imgs[name].pred + 1,
                        cmap=cmap,
                        vmin=0,
                        vmax=len(result.classes),
                        interpolation="nearest",
                    )
                    if row != "annotation":
                        ax.set_xlabel(f"{100 * imgs[name].accuracy:.0f}%", fontsize=7)
                if r_i == 0:
                    ax.set_title(name, fontsize=7)
                if c_i == 0:
                    ax.set_ylabel(row, fontsize=7)
        handles = [
            plt.Rectangle((0, 0), 1, 1, color=cmap(i + 1)) for i in range(len(result.classes))
        ]
        fig.legend(
            handles, result.classes, loc="lower center", ncol=len(result.classes), fontsize=8
        )
        fig.suptitle(
            f"Test predictions per core (page {page_i} of {len(pages)}; % = spots right)",
            fontsize=9,
        )
        fig.tight_layout(rect=(0, 0.05, 1, 0.97))
        path = out / f"class_maps_{page_i}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def top_relevance(result: ExperimentResult, k: int = 10) -> dict[str, list[dict]]:
    """Per model with relevance (inter-lab test spots): its ``k`` m/z bins of largest mean |r|,
    with their share of all |r| and the nearest true biomarker peak (when known)."""
    merged: dict = {}
    for a in result.arms:
        if a.protocol == "interlab" and a.relevance is not None:
            key = a.spec.key
            merged[key] = a.relevance if key not in merged else merged[key].merge(a.relevance)
    out: dict[str, list[dict]] = {}
    for key, rel in merged.items():
        mass = rel.sum_abs.sum(0)
        total = mass.sum()
        order = np.argsort(-mass, kind="stable")[:k]
        rows = []
        for b in order:
            near = None
            if result.biomarkers is not None and len(result.biomarkers):
                near = float(result.biomarkers[np.argmin(np.abs(result.biomarkers - result.mz[b]))])
            rows.append(
                {
                    "mz": float(result.mz[b]),
                    "share": float(mass[b] / total) if total else 0.0,
                    "nearest_biomarker": near,
                }
            )
        out[key] = rows
    return out


def _ion_images(
    result: ExperimentResult,
    intensities: np.ndarray,
    core: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    out: Path,
    n_mz: int = 3,
) -> list[Path]:
    """Real ion images: the preprocessed intensity of the DRR model's top m/z, core by core."""
    tops = top_relevance(result, k=n_mz)
    key = next((k for k in tops if k.endswith("+drr")), next(iter(tops), None))
    if key is None:
        return []
    plt = pyplot()
    core = np.asarray(core).astype(str)
    bins = [int(np.argmin(np.abs(result.mz - t["mz"]))) for t in tops[key]]
    paths = []
    pages = _pages(sorted(set(core.tolist())))
    for page_i, chosen in enumerate(pages, start=1):
        fig, axes = plt.subplots(
            len(bins),
            len(chosen),
            figsize=(1.4 * len(chosen) + 1.2, 1.4 * len(bins) + 0.8),
            squeeze=False,
        )
        for r_i, b in enumerate(bins):
            vmax = float(np.quantile(intensities[:, b], 0.99)) or 1.0
            for c_i, name in enumerate(chosen):
                sel = core == name
                ax = axes[r_i, c_i]
                ax.set_xticks([])
                ax.set_yticks([])
                x0, y0 = xs[sel].min(), ys[sel].min()
                img = np.full((ys[sel].max() - y0 + 1, xs[sel].max() - x0 + 1), np.nan)
                img[ys[sel] - y0, xs[sel] - x0] = intensities[sel, b]
                ax.imshow(img, cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
                if r_i == 0:
                    ax.set_title(name, fontsize=7)
                if c_i == 0:
                    ax.set_ylabel(f"m/z {result.mz[b]:.1f}", fontsize=7)
        fig.suptitle(
            f"Ion images of the m/z {key} relies on most (page {page_i} of {len(pages)}; "
            "TIC-normalised intensity, one colour scale per m/z)",
            fontsize=9,
        )
        fig.tight_layout(rect=(0, 0, 1, 0.96))
        path = out / f"ion_images_{page_i}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def write_plots(
    result: ExperimentResult,
    out_dir: str | Path,
    *,
    core: np.ndarray | None = None,
    xs: np.ndarray | None = None,
    ys: np.ndarray | None = None,
    y_true: np.ndarray | None = None,
    intensities: np.ndarray | None = None,
) -> list[Path]:
    """``accuracy.png``, ``relevance.png`` and, with pixel data, ``class_maps_<page>.png`` (all
    cores) and, with the spectra, ``ion_images_<page>.png``.

    Parameters
    ----------
    result : ExperimentResult
    out_dir : str or Path
    core : ndarray or None
        ``(N,)`` core (or file) of every spot; with ``xs``, ``ys`` and ``y_true`` the per-core maps
        are drawn.
    xs, ys : ndarray or None
        ``(N,)`` pixel coordinates.
    y_true : ndarray or None
        ``(N,)`` true class indices.
    intensities : ndarray or None
        ``(N, L)`` the spectra the models saw (for the ion images).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("class_maps_*.png"), *out.glob("ion_images_*.png")]:
        old.unlink()
    paths = [
        _accuracy_plot(result.records, out / "accuracy.png"),
        _relevance_plot(result, out / "relevance.png"),
    ]
    if core is not None and xs is not None and ys is not None and y_true is not None:
        paths += _class_maps(result, core, xs, ys, y_true, out)
        if intensities is not None:
            paths += _ion_images(result, intensities, core, xs, ys, out)
    return [p for p in paths if p is not None]
