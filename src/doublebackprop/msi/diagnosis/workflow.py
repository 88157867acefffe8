"""The two commands of the slide workflow, as functions the CLI and the demo call.

Both check everything they can before long work, and write their outputs to a temporary folder
beside the target that is renamed into place at the end: a failed run leaves earlier outputs as
they were.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from doublebackprop.msi.data.annotations import read_annotations
from doublebackprop.msi.data.biomarkers import read_biomarkers
from doublebackprop.msi.data.imzml import ImzMLReader
from doublebackprop.msi.diagnosis.report import slide_figures, write_slide_report
from doublebackprop.msi.diagnosis.slides import SlideResult, csv_header, type_slide
from doublebackprop.msi.diagnosis.typer import TumourTyper, load_model
from doublebackprop.msi.experiment.metrics import score_predictions

__all__ = ["predict_command", "predict_slides", "train_command"]


def _say(msg: str) -> None:
    print(msg, file=sys.stderr)


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _inputs(files: Sequence[Path]) -> tuple[list[dict[str, Any]], str]:
    out, types = [], set()
    for f in files:
        r = ImzMLReader(f)
        types.add(r.spectrum_type)
        out.append(
            {"file": str(f), "uuid": r.uuid, "ibd_sha1": _sha1(r.ibd_path), "spectra": r.n_spectra}
        )
    return out, (types.pop() if len(types) == 1 else "mixed")


def train_command(args: argparse.Namespace) -> int:
    """``msi train``: load, train, calibrate, write the bundle (see :mod:`.train`)."""
    from doublebackprop.msi.data.dataset import load_table
    from doublebackprop.msi.data.store import open_store
    from doublebackprop.msi.diagnosis.bundle import save_bundle
    from doublebackprop.msi.diagnosis.report import reliability_diagram
    from doublebackprop.msi.diagnosis.train import TyperSettings, train_typer

    settings = TyperSettings(  # bad options fail here, before any loading
        architecture=args.model,
        drr=not args.no_drr,
        lambdas=tuple(args.lambdas),
        linear_grid=tuple(args.linear_grid),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        folds=args.validation_folds,
        seed=args.seed,
    )
    if args.bin_width is not None and args.bin_width <= 0:
        raise ValueError(f"--bin-width must be > 0, got {args.bin_width}")
    mz_range = None if args.mz_range is None else (float(args.mz_range[0]), float(args.mz_range[1]))
    if args.annotations is not None:
        table = load_table(
            args.annotations, mz_range=mz_range, bin_width=args.bin_width, repair=args.repair
        )
        ann = read_annotations(args.annotations)
        inputs, spectrum_type = _inputs([ann.resolve(f) for f in ann.files()])
        source = {"annotations": str(args.annotations)}
        loading = {"mz_range": list(mz_range) if mz_range else None, "bin_width": args.bin_width}
    else:
        with open_store(args.store) as store:
            table = store.to_table()
        inputs, spectrum_type = [], "unknown"
        source = {"store": str(args.store)}
        loading = _loading_of(table)
    _say(
        f"{len(table)} spectra × {table.intensities.shape[1]} bins, classes {list(table.classes)}, "
        f"{len(set(table.patient.tolist()))} patients"
    )
    provenance = {
        **source,
        "inputs": inputs,
        "spectrum_type": spectrum_type,
        "loading": loading,
    }
    out: Path = args.out
    ckpt_dir = out.with_name(f".{out.name}.checkpoints")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=1.0,
            desc="training",
            unit="run",
            dynamic_ncols=True,
            bar_format="{l_bar}{bar}| {percentage:3.0f}% [{elapsed}<{remaining}]",
        )

    def progress(name: str, fraction: float) -> None:
        if bar is not None:
            bar.n = fraction
            bar.set_postfix_str(name, refresh=False)
            bar.refresh()

    try:
        trained = train_typer(
            table, settings, checkpoint_dir=ckpt_dir, provenance=provenance, progress=progress
        )
    finally:
        if bar is not None:
            bar.close()
    b = trained.bundle
    with tempfile.TemporaryDirectory() as tmp:
        diagram = reliability_diagram(
            trained.held_out_logits, trained.held_out_y, b.temperature, Path(tmp) / "r.png"
        )
        save_bundle(b, out, extra_files={"reliability.png": diagram})
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    cal, val = b.metrics["calibration"], b.metrics["validation"]
    print(
        f"chosen {'bins' if settings.architecture == 'linear' else 'λ'} = {trained.chosen:g}; "
        f"held-out balanced accuracy {json.dumps(val['balanced_accuracy'])}; "
        f"T = {cal['temperature']:.3g}, ECE {100 * cal['ece_before']:.1f} % → "
        f"{100 * cal['ece_after_cross_fitted']:.1f} % (cross-fitted)"
    )
    _say(f"wrote {out}")
    return 0


def _loading_of(table: Any) -> dict[str, Any]:
    """mz range and bin width of a store's table, read back from its pipeline."""
    steps = json.loads(table.pipeline)
    crop = next((s for s in steps if s.get("step") == "Crop"), None)
    binning = next((s for s in steps if s.get("step") == "Bin"), None)
    width = None
    if binning is not None and len(binning["edges"]) > 1:
        width = float(np.median(np.diff(binning["edges"])))
    return {
        "mz_range": None if crop is None else [crop["mz_min"], crop["mz_max"]],
        "bin_width": width,
    }


def predict_command(args: argparse.Namespace) -> int:
    """``msi predict``: type the slides, write CSV, maps, ion images and reports."""
    if args.top_k < 0:
        raise ValueError(f"--top-k must be >= 0, got {args.top_k}")
    if args.block_size < 1:
        raise ValueError(f"--block-size must be >= 1, got {args.block_size}")
    summary = predict_slides(
        args.model,
        args.files,
        args.out,
        annotations=args.annotations,
        biomarkers=args.biomarkers,
        top_k=args.top_k,
        anndata=args.anndata,
        repair=args.repair,
        block_size=args.block_size,
        progress=not args.no_progress,
    )
    for s in summary["slides"]:
        props = ", ".join(f"{c} {100 * v:.0f} %" for c, v in s["proportions"].items())
        acc = ""
        if s.get("score"):
            acc = f"; spot balanced accuracy {100 * s['score']['spot']:.1f} %"
        print(f"{s['file']}: {s['spectra']} spectra — {props}{acc}")
    _say(f"wrote {Path(args.out) / 'predictions.csv'}")
    return 0


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
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="typing", unit="spectra", dynamic_ncols=True)
    try:
        summary: dict[str, Any] = {"model": str(model_dir), "slides": []}
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
                    progress=None if bar is None else bar.update,
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
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1))
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    return summary


def _replace_dir(new: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old{os.getpid()}")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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
