"""``doublebackprop msi train`` and ``doublebackprop msi predict``: from annotated tissue to a
model bundle, and from a bundle to typed slides."""

from __future__ import annotations

import argparse
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


def _train(args: argparse.Namespace) -> int:
    from doublebackprop.msi.diagnosis.workflow import train_command

    return train_command(args)


def _predict(args: argparse.Namespace) -> int:
    from doublebackprop.msi.diagnosis.workflow import predict_command

    return predict_command(args)
