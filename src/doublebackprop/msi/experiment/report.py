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

from doublebackprop.msi.experiment.protocol import ExperimentResult
from doublebackprop.msi.experiment.results import record_label

__all__ = ["format_table", "write_predictions", "write_report", "write_tables"]

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
            f"{record_label(r):<18}{r['direction']:<{dw}}{spot:<24}{pat:<25}"
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


def write_predictions(
    result: ExperimentResult,
    out_dir: str | Path,
    *,
    file: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    patient: np.ndarray,
    label: np.ndarray,
) -> Path:
    """``predictions.csv``: every test spot of every arm with its true and predicted class.

    Parameters
    ----------
    result : ExperimentResult
    out_dir : str or Path
    file, x, y, patient, label : ndarray
        ``(N,)`` per spot of the cohort: imzML file, pixel, patient, true class name.

    With several seeds the prediction is the majority over seeds (ties: the first class) and
    ``seed_agreement`` the share of seeds that predicted it.
    """
    import csv

    path = Path(out_dir) / "predictions.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "model",
                "drr",
                "protocol",
                "source",
                "target",
                "file",
                "x",
                "y",
                "patient",
                "label",
                "predicted",
                "seed_agreement",
            ]
        )
        k = len(result.classes)
        for a in result.arms:
            votes = (
                np.stack([(a.pred == c).sum(0) for c in range(k)])
                if a.pred.size
                else np.zeros((k, 0))
            )
            pred = votes.argmax(0)
            agree = votes.max(0) / max(a.pred.shape[0], 1)
            for i, row in enumerate(a.index.tolist()):
                w.writerow(
                    [
                        a.spec.name,
                        a.spec.drr,
                        a.protocol,
                        a.source,
                        a.target,
                        file[row],
                        int(x[row]),
                        int(y[row]),
                        patient[row],
                        label[row],
                        result.classes[pred[i]],
                        f"{agree[i]:.3g}",
                    ]
                )
    return path


def _json_default(o: object) -> object:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


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
    settings: dict | None = None,
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
        Paragraphs shown under the title (run time, data notes).
    settings : dict or None
        More settings to list (annotation file, bin width, models, λ grid, …).
    """
    from doublebackprop.msi.experiment.plots import top_relevance

    out = Path(out_dir)
    rows = []
    for r in result.records:
        s_ci, p_ci = r.get("spot_ci", [np.nan] * 2), r.get("patient_ci", [np.nan] * 2)
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(v))}</td>"
                for v in (
                    record_label(r),
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
        **(settings or {}),
    }
    tops = top_relevance(result)
    top_html = ""
    if tops:
        keys = list(tops)
        head_top = "".join(f"<th colspan=3>{html.escape(key)}</th>" for key in keys)
        sub = "<th>m/z</th><th>share of |r|</th><th>nearest biomarker</th>" * len(keys)
        body_rows = []
        for i in range(max(len(v) for v in tops.values())):
            cells = []
            for key in keys:
                if i < len(tops[key]):
                    r = tops[key][i]
                    near = (
                        "–" if r["nearest_biomarker"] is None else f"{r['nearest_biomarker']:.2f}"
                    )
                    cells.append(
                        f"<td>{r['mz']:.2f}</td><td>{100 * r['share']:.1f}%</td><td>{near}</td>"
                    )
                else:
                    cells.append("<td></td><td></td><td></td>")
            body_rows.append("<tr>" + "".join(cells) + "</tr>")
        top_html = (
            "<h2>Most relevant m/z (inter-lab test spots)</h2><table><tr>"
            + head_top
            + "</tr><tr>"
            + sub
            + "</tr>"
            + "".join(body_rows)
            + "</table>"
        )
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
{top_html}
{more}
<h2>Settings</h2><table>{settings_html}
</table></body></html>"""
    path = out / "report.html"
    path.write_text(body, encoding="utf-8")
    return path
