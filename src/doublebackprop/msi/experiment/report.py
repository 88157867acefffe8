"""Plots (PNG) and one self-contained HTML report of an inter-lab experiment.

The HTML embeds every image as base64, so the single file can be mailed to a pathologist and
opened anywhere. matplotlib is imported lazily with the non-interactive Agg backend.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from doublebackprop.common.plotting import pyplot
from doublebackprop.msi.experiment.interpret import prediction_images
from doublebackprop.msi.experiment.protocol import ExperimentResult

__all__ = ["format_table", "write_plots", "write_report", "write_tables"]

_COLUMNS = (
    "model",
    "drr",
    "direction",
    "spot_balanced_accuracy",
    "patient_balanced_accuracy",
    "relevance_on_biomarkers",
)


def _pct(v: float | None) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{100 * v:.1f}"


def _label(rec: dict) -> str:
    return rec["model"] + (" + DRR" if rec["drr"] else "")


def _hyper(rec: dict) -> str:
    vals = rec.get("lambda", rec.get("n_features"))
    if not vals:
        return ""
    uniq = sorted(set(vals), key=vals.index)
    if "lambda" in rec:
        return "λ " + ", ".join(f"{v:g}" for v in uniq) if any(uniq) else ""
    return "N " + ", ".join(str(int(v)) for v in uniq)


def format_table(records: Sequence[dict]) -> str:
    """A fixed-width text table of the records (the CLI prints it)."""
    dw = max([len("direction"), *(len(r["direction"]) for r in records)]) + 2
    head = (
        f"{'model':<18}{'direction':<{dw}}{'spot BA % [95% CI]':<24}"
        f"{'patient BA % [95% CI]':<25}{'|r| on biomarkers %':<21}{'top-1% mass %':<14}"
    )
    lines = [head, "-" * len(head)]
    for r in records:
        s_ci, p_ci = r.get("spot_ci", [np.nan] * 2), r.get("patient_ci", [np.nan] * 2)
        spot = f"{_pct(r['spot_balanced_accuracy'])} [{_pct(s_ci[0])}, {_pct(s_ci[1])}]"
        pat = f"{_pct(r['patient_balanced_accuracy'])} [{_pct(p_ci[0])}, {_pct(p_ci[1])}]"
        lines.append(
            f"{_label(r):<18}{r['direction']:<{dw}}{spot:<24}{pat:<25}"
            f"{_pct(r.get('relevance_on_biomarkers')):<21}"
            f"{_pct(r.get('relevance_top1pct_mass')):<14}"
        )
    return "\n".join(lines)


def write_tables(records: Sequence[dict], out_dir: str | Path) -> tuple[Path, Path]:
    """``results.json`` (the list of records) and ``results.csv``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    js = out / "results.json"
    js.write_text(json.dumps(list(records), indent=1, default=_json_default))
    keys: list[str] = list(_COLUMNS)
    for r in records:
        keys += [k for k in r if k not in keys]
    csv_path = out / "results.csv"
    import csv

    with open(csv_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in records:
            w.writerow(
                {k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in r.items()}
            )
    return js, csv_path


def _json_default(o: object) -> object:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _accuracy_plot(records: Sequence[dict], path: Path) -> Path:
    plt = pyplot()
    recs = [r for r in records if r["protocol"] == "interlab"]
    directions = list(dict.fromkeys(r["direction"] for r in recs))
    models = list(dict.fromkeys(_label(r) for r in recs))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    width = 0.8 / max(len(models), 1)
    for ax, key, ci_key, title in (
        (axes[0], "spot_balanced_accuracy", "spot_ci", "per spot"),
        (axes[1], "patient_balanced_accuracy", "patient_ci", "per patient (majority vote)"),
    ):
        for m_i, m in enumerate(models):
            xs, ys, lo, hi = [], [], [], []
            for d_i, d in enumerate(directions):
                r = next((r for r in recs if _label(r) == m and r["direction"] == d), None)
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


def _images_plot(
    result: ExperimentResult,
    core: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    y_true: np.ndarray,
    path: Path,
    max_cores: int = 8,
) -> Path | None:
    plt = pyplot()
    from matplotlib.colors import ListedColormap

    arms: dict = {}
    for a in result.arms:
        if a.protocol == "interlab":
            arms.setdefault(a.spec.key, []).append(a)
    if not arms:
        return None
    names = sorted(set(np.asarray(core).astype(str).tolist()))
    # spread the shown cores over labs and classes
    chosen = names[:: max(1, len(names) // max_cores)][:max_cores]
    keep = np.isin(np.asarray(core).astype(str), chosen)
    cmap = ListedColormap(
        ["white", "tab:blue", "tab:orange", "tab:green", "tab:red"][: len(result.classes) + 1]
    )
    rows = ["annotation", *arms]
    fig, axes = plt.subplots(
        len(rows),
        len(chosen),
        figsize=(1.4 * len(chosen) + 1, 1.4 * len(rows) + 0.6),
        squeeze=False,
    )
    for r_i, row in enumerate(rows):
        pred = np.full(len(y_true), -1)
        if row != "annotation":
            for a in arms[row]:
                pred[a.index] = a.pred[0]
        sel = keep & (pred >= 0) if row != "annotation" else keep
        imgs = {
            im.name: im
            for im in prediction_images(
                np.asarray(core)[sel],
                xs[sel],
                ys[sel],
                y_true[sel],
                y_true[sel] if row == "annotation" else pred[sel],
            )
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
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i + 1)) for i in range(len(result.classes))]
    fig.legend(handles, result.classes, loc="lower center", ncol=len(result.classes), fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(
    result: ExperimentResult,
    out_dir: str | Path,
    *,
    core: np.ndarray | None = None,
    xs: np.ndarray | None = None,
    ys: np.ndarray | None = None,
    y_true: np.ndarray | None = None,
) -> list[Path]:
    """``accuracy.png``, ``relevance.png`` and (with pixel data) ``ion_images.png``.

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
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [
        _accuracy_plot(result.records, out / "accuracy.png"),
        _relevance_plot(result, out / "relevance.png"),
    ]
    if core is not None and xs is not None and ys is not None and y_true is not None:
        paths.append(_images_plot(result, core, xs, ys, y_true, out / "ion_images.png"))
    return [p for p in paths if p is not None]


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def write_report(
    result: ExperimentResult,
    out_dir: str | Path,
    plots: Sequence[Path],
    *,
    title: str = "Inter-lab tumour typing",
    notes: Sequence[str] = (),
) -> Path:
    """``report.html``: the table, the plots (embedded) and the settings.

    Parameters
    ----------
    result : ExperimentResult
    out_dir : str or Path
    plots : sequence of Path
        PNG files to embed (from :func:`write_plots`).
    title : str
    notes : sequence of str
        Paragraphs shown under the title (run time, settings).
    """
    out = Path(out_dir)
    rows = []
    for r in result.records:
        s_ci, p_ci = r.get("spot_ci", [np.nan] * 2), r.get("patient_ci", [np.nan] * 2)
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(v))}</td>"
                for v in (
                    _label(r),
                    r["direction"],
                    r["protocol"],
                    f"{_pct(r['spot_balanced_accuracy'])} [{_pct(s_ci[0])}–{_pct(s_ci[1])}]",
                    f"{_pct(r['patient_balanced_accuracy'])} [{_pct(p_ci[0])}–{_pct(p_ci[1])}]",
                    _pct(r.get("relevance_on_biomarkers")),
                    _pct(r.get("relevance_top1pct_mass")),
                    "–" if r.get("relevance_gini") is None else f"{r['relevance_gini']:.2f}",
                    _hyper(r),
                    r.get("validation", ""),
                    r["n_spots"],
                    r["n_patients"],
                )
            )
            + "</tr>"
        )
    cfg = result.config
    settings = {
        "labs": list(result.labs),
        "classes": list(result.classes),
        "folds (patient-grouped)": cfg.n_splits,
        "validation spots for λ / N": cfg.validation,
        "validation folds per test fold": cfg.inner_folds,
        "refit after selection": cfg.refit,
        "epochs": cfg.train.epochs,
        "batch": cfg.train.batch_size,
        "learning rate": cfg.train.lr,
        "engine": cfg.train.engine,
        "seeds": list(cfg.seeds),
        "bootstrap resamples (patients)": cfg.n_bootstrap,
        "m/z bins": len(result.mz),
        "m/z range": f"{result.mz[0]:.1f}–{result.mz[-1]:.1f}" if len(result.mz) else "",
    }
    head = (
        "<tr><th>model</th><th>direction</th><th>protocol</th><th>spot BA % [95% CI]</th>"
        "<th>patient BA % [95% CI]</th><th>|r| on biomarkers %</th><th>top-1% |r| mass %</th>"
        "<th>Gini of |r|</th><th>chosen</th><th>validation</th><th>spots</th>"
        "<th>patients</th></tr>"
    )
    table = "".join(rows)
    note_html = "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)
    first = _img(plots[0]) if plots else ""
    more = "".join(
        "<h2>" + html.escape(p.stem.replace("_", " ").capitalize()) + "</h2>" + _img(p)
        for p in plots[1:]
    )
    settings_html = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in settings.items()
    )
    body = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 7px}}
th{{background:#eee}}img{{max-width:100%}}.note{{color:#555;font-size:13px}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>Every model is trained on the spectra of one lab and tested on the other lab's spectra of
<em>other patients</em> (patient-grouped folds), in both directions. Balanced accuracy is the
mean of the per-class recalls (50% = chance for two classes); per patient the spots vote.
Brackets: 95% bootstrap intervals over patients. "|r| on biomarkers" is the share of the
model's absolute relevance (gradient × input of the true-class score) that lies within ±0.5 Da
of the true biomarker peaks (simulated data only). DRR = Deep Relevance Regularization.</p>
<table>{head}{table}</table>
{note_html}
<h2>Accuracy</h2>{first}
{more}
<h2>Settings</h2><table>{settings_html}
</table></body></html>"""
    path = out / "report.html"
    path.write_text(body, encoding="utf-8")
    return path
