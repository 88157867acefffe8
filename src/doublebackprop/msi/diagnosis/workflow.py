"""Typing a set of slides with a bundle and writing what a pathologist opens: predictions.csv,
class maps, ion images, per-slide HTML reports, a summary, optionally an AnnData file.

Everything is checked before long work, and the outputs are written to a temporary folder beside
the target that is renamed into place at the end: a failed run leaves earlier outputs as they were.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from doublebackprop.common.files import atomic_directory
from doublebackprop.msi.data.annotations import read_annotations
from doublebackprop.msi.data.biomarkers import read_biomarkers
from doublebackprop.msi.data.imzml import ImzMLReader
from doublebackprop.msi.diagnosis.report import slide_figures, write_slide_report
from doublebackprop.msi.diagnosis.slides import SlideResult, csv_header, type_slide
from doublebackprop.msi.diagnosis.typer import TumourTyper, load_model
from doublebackprop.msi.experiment.metrics import score_predictions

__all__ = ["predict_slides"]


def predict_slides(
    model_dir: str | Path,
    files: Sequence[str | Path],
    out: str | Path,
    *,
    annotations: str | Path | None = None,
    biomarkers: str | Path | None = None,
    top_k: int = 6,
    anndata: bool = False,
    repair: bool = False,
    block_size: int = 1024,
    progress: bool = False,
) -> dict[str, Any]:
    """Type ``files`` with the bundle in ``model_dir`` and write everything to ``out``.

    Parameters
    ----------
    model_dir : path
        A bundle from ``msi train``.
    files : sequence of path
        imzML slides (distinct file names).
    out : path
        Output folder: ``predictions.csv``, ``<slide>_classes.png``, ``<slide>_ions.png``,
        ``<slide>.html``, ``summary.json`` (and ``predictions.h5ad`` with ``anndata``).
    annotations : path or None
        Annotation CSV: slides named in it are scored (spot and patient balanced accuracy).
    biomarkers : path or None
        CSV with an ``mz`` column; the top m/z table names the nearest.
    top_k, repair, block_size, progress
        See :func:`~.slides.type_slide`; ``progress`` draws a bar on stderr.

    Returns
    -------
    dict
        The summary also written as ``summary.json``.
    """
    typer = load_model(model_dir)  # a corrupt or incompatible bundle fails here
    paths = [Path(f) for f in files]
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        raise ValueError(f"slides must have distinct file names, got {names}")
    total = 0
    for p in paths:  # every slide is checked before any is typed
        if not p.is_file():
            raise FileNotFoundError(f"{p}: slide not found")
        reader = ImzMLReader(p, repair=repair)
        typer.check_slide(reader)
        total += reader.n_spectra
    truth = _truth(annotations, paths, typer.classes) if annotations else None
    marks = read_biomarkers(Path(biomarkers)) if biomarkers is not None else None
    if anndata:
        _anndata_modules()  # the optional extra is missing: say so before the work
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="typing", unit="spectra", dynamic_ncols=True)
    try:
        with atomic_directory(out) as tmp:
            summary = _type_all(
                typer,
                paths,
                tmp,
                truth,
                marks,
                top_k,
                anndata,
                repair,
                block_size,
                None if bar is None else bar.update,
            )
            summary["model"] = str(model_dir)
            (tmp / "summary.json").write_text(json.dumps(summary, indent=1))
    finally:
        if bar is not None:
            bar.close()
    return summary


def _type_all(
    typer: TumourTyper,
    paths: list[Path],
    tmp: Path,
    truth: dict | None,
    marks: np.ndarray | None,
    top_k: int,
    anndata: bool,
    repair: bool,
    block_size: int,
    tick: Any,
) -> dict[str, Any]:
    """Type every slide into ``tmp``; returns the summary."""
    summary: dict[str, Any] = {"slides": []}
    scored: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    results = []
    with open(tmp / "predictions.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(csv_header(typer.classes))
        for p in paths:
            res = type_slide(
                typer,
                p,
                writer,
                top_k=top_k,
                biomarkers=marks,
                repair=repair,
                block_size=block_size,
                progress=tick,
                features_dir=tmp / ".features" if anndata else None,
            )
            results.append(res)
            truth_map, score = None, None
            if truth is not None and p.name in truth:
                truth_map, score, part = _score_slide(res, truth[p.name], len(typer.classes))
                if part is not None:
                    scored.append(part)
            figs = slide_figures(res, tmp, p.stem, truth_map=truth_map)
            calibration = typer.bundle.metrics.get("calibration", {})
            write_slide_report(
                res, figs, tmp / f"{p.stem}.html", calibration=calibration, score=score
            )
            summary["slides"].append(
                {
                    "file": p.name,
                    "spectra": int(len(res.predicted)),
                    "proportions": res.proportions,
                    "low_confidence": res.low_confidence,
                    "top_mz": [t.mz for t in res.top_mz],
                    "report": f"{p.stem}.html",
                    "score": score,
                }
            )
    if scored:
        yt, yp, groups = (np.concatenate(v) for v in zip(*scored))
        sc = score_predictions(yt, yp, groups, num_classes=len(typer.classes), n_bootstrap=500)
        summary["score"] = asdict(sc)
    if anndata:
        _write_anndata(tmp / "predictions.h5ad", typer, paths, results, tmp / ".features")
        shutil.rmtree(tmp / ".features", ignore_errors=True)
    return summary


def _truth(
    annotations: str | Path, paths: list[Path], classes: tuple[str, ...]
) -> dict[str, dict[tuple[int, int], tuple[int, str]]]:
    """Per slide file name: {(x, y): (class index, patient)} from an annotation table."""
    ann = read_annotations(annotations)
    unknown = sorted(set(ann.label.tolist()) - set(classes))
    if unknown:
        raise ValueError(
            f"{annotations}: labels {unknown} are not classes of the model {list(classes)}"
        )
    by_name = {p.name for p in paths}
    out: dict[str, dict[tuple[int, int], tuple[int, str]]] = {}
    for r in range(len(ann)):
        name = Path(str(ann.file[r])).name
        if name not in by_name or ann.x[r] < 0:
            continue
        out.setdefault(name, {})[(int(ann.x[r]), int(ann.y[r]))] = (
            classes.index(str(ann.label[r])),
            str(ann.patient[r]),
        )
    if not out:
        raise ValueError(f"{annotations}: no pixel row names one of the slides {sorted(by_name)}")
    return out


def _score_slide(
    res: SlideResult, lookup: dict[tuple[int, int], tuple[int, str]], k: int
) -> tuple[np.ndarray | None, dict | None, tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
    """The annotation map, the slide's score and its (true, predicted, patient) arrays."""
    keys = [(int(c[0]), int(c[1])) for c in res.coordinates]
    sel = np.asarray([i for i, key in enumerate(keys) if key in lookup], dtype=np.int64)
    if not len(sel):
        return None, None, None
    yt = np.asarray([lookup[keys[i]][0] for i in sel])
    groups = np.asarray([lookup[keys[i]][1] for i in sel])
    yp = res.predicted[sel]
    score = asdict(score_predictions(yt, yp, groups, num_classes=k, n_bootstrap=500))
    truth_map = np.full(res.class_map.shape, -1)
    xy = res.coordinates[sel]
    truth_map[xy[:, 1] - res.origin[1], xy[:, 0] - res.origin[0]] = yt
    return truth_map, score, (yt, yp, groups)


def _anndata_modules() -> tuple[Any, Any]:
    try:
        import anndata
        import pandas
    except ImportError as exc:  # an optional extra
        raise ValueError(
            "--anndata needs the optional 'anndata' package: pip install 'doublebackprop[anndata]'"
        ) from exc
    return anndata, pandas


def _write_anndata(
    path: Path, typer: TumourTyper, paths: list[Path], results: list[SlideResult], features: Path
) -> None:
    """``obs``: slide, coordinates, prediction, probabilities; ``obsm["spatial"]``;
    ``X``: the binned, TIC-normalised spectra the model saw; ``var``: their m/z."""
    ad, pd = _anndata_modules()
    obs_parts, xs = [], []
    for p, res in zip(paths, results):
        df = pd.DataFrame(
            {
                "file": p.name,
                "x": res.coordinates[:, 0],
                "y": res.coordinates[:, 1],
                "z": res.coordinates[:, 2],
                "predicted": [typer.classes[i] for i in res.predicted],
            }
        )
        for j, c in enumerate(typer.classes):
            df[f"p_{c}"] = res.probabilities[:, j]
        obs_parts.append(df)
        xs.append(np.load(features / f"{p.stem}.npy"))
    obs = pd.concat(obs_parts, ignore_index=True)
    obs.index = obs.index.astype(str)
    var = pd.DataFrame({"mz": typer.mz}, index=[f"{v:.4f}" for v in typer.mz])
    adata = ad.AnnData(X=np.concatenate(xs), obs=obs, var=var)
    adata.obsm["spatial"] = obs[["x", "y"]].to_numpy()
    adata.uns["classes"] = list(typer.classes)
    adata.uns["temperature"] = typer.temperature
    adata.write_h5ad(path)
