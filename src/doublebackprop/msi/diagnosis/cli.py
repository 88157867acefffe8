"""``doublebackprop msi train`` and ``doublebackprop msi predict``: from annotated tissue to a
model bundle, and from a bundle to typed slides."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from doublebackprop.common.cliargs import float_list

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``predict`` to the ``doublebackprop msi`` sub-commands."""
    p = subparsers.add_parser(
        "train",
        help="train a tumour-typing model bundle on annotated spectra (IsotopeNet + DRR)",
        description="Train on every labelled spectrum, choose λ on held-out patients, "
        "calibrate the probabilities on them (temperature scaling), write a model bundle.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--annotations", type=Path, help="annotation CSV: file,x,y,label,patient[,lab]"
    )
    src.add_argument("--store", type=Path, help="an HDF5 store written by `msi convert`")
    p.add_argument("--out", type=Path, required=True, help="the model bundle folder to write")
    p.add_argument(
        "--model",
        choices=("isotopenet", "resnet1d", "linear"),
        default="isotopenet",
        help="architecture",
    )
    p.add_argument("--no-drr", action="store_true", help="plain cross-entropy, no DRR")
    p.add_argument(
        "--lambdas", type=float_list, default=(0.15, 0.3), help="DRR λ grid (per-sample convention)"
    )
    p.add_argument(
        "--linear-grid",
        type=lambda s: tuple(int(v) for v in float_list(s, minimum=1)),
        default=(5, 10, 20, 50, 100, 200),
        help="numbers of m/z bins for --model linear",
    )
    p.add_argument("--epochs", type=int, default=15, help="training epochs")
    p.add_argument("--batch-size", type=int, default=32, help="batch size")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    p.add_argument(
        "--validation-folds",
        type=int,
        default=5,
        help="patient-grouped folds; one is held out for choosing λ and calibrating",
    )
    p.add_argument(
        "--mz-range",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        default=None,
        help="crop after TIC normalisation (default: the files' common range)",
    )
    p.add_argument("--bin-width", type=float, default=1.0, help="bin width in Da")
    p.add_argument("--seed", type=int, default=0, help="folds, weights and batch order")
    p.add_argument("--repair", action="store_true", help="set NaN/negative intensities to 0")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    q = subparsers.add_parser(
        "predict",
        help="type new slides with a model bundle: predictions.csv, class maps, reports",
        description="Type every spectrum of the given imzML slides with a bundle from "
        "`msi train`; write predictions.csv, class maps, ion images and an HTML report per slide.",
    )
    q.add_argument("model", type=Path, help="model bundle folder (from `msi train`)")
    q.add_argument("files", type=Path, nargs="+", help="imzML slides to type")
    q.add_argument("--out", type=Path, required=True, help="output folder")
    q.add_argument(
        "--annotations", type=Path, default=None, help="annotation CSV to score the slides against"
    )
    q.add_argument(
        "--biomarkers", type=Path, default=None, help="CSV with an 'mz' column of known markers"
    )
    q.add_argument("--top-k", type=int, default=6, help="ion images of the top-k relevant m/z")
    q.add_argument("--anndata", action="store_true", help="also write predictions.h5ad")
    q.add_argument("--repair", action="store_true", help="set NaN/negative intensities to 0")
    q.add_argument("--block-size", type=int, default=1024, help="spectra per block")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=_predict)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr)


def _train(args: argparse.Namespace) -> int:
    """``msi train``: load, train, calibrate, write the bundle (see :mod:`.train`)."""
    from doublebackprop.msi.data.annotations import read_annotations
    from doublebackprop.msi.data.dataset import load_table
    from doublebackprop.msi.data.store import open_store
    from doublebackprop.msi.diagnosis.bundle import save_bundle
    from doublebackprop.msi.diagnosis.provenance import describe_inputs, loading_of
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
        inputs, spectrum_type = describe_inputs([ann.resolve(f) for f in ann.files()])
        source = {"annotations": str(args.annotations)}
        loading = {"mz_range": list(mz_range) if mz_range else None, "bin_width": args.bin_width}
    else:
        with open_store(args.store) as store:
            table = store.to_table()
        inputs, spectrum_type = [], "unknown"
        source = {"store": str(args.store)}
        loading = loading_of(table)
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


def _predict(args: argparse.Namespace) -> int:
    """``msi predict``: type the slides, write CSV, maps, ion images and reports."""
    from doublebackprop.msi.diagnosis.workflow import predict_slides

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
