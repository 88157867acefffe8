"""CLI of the tumour-typing experiment: ``doublebackprop msi interlab`` and the experiment's
arguments of ``doublebackprop demo`` (:mod:`doublebackprop.msi.demo`).

The name → model registry lives here (the CLI edge); the library takes :class:`ModelSpec`
objects. Progress is a tqdm bar on stderr, counted in spectrum-epochs; the result table goes to
stdout; ``--out DIR`` receives ``results.json``, ``results.csv``, PNG plots and ``report.html``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from doublebackprop.common.cliargs import float_list
from doublebackprop.msi.cli import add_repair_argument
from doublebackprop.msi.experiment.settings import MODEL_KEYS

logger = logging.getLogger(__name__)


def _keys(text: str) -> tuple[str, ...]:
    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in keys if k not in MODEL_KEYS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown model(s) {bad}; choose from {MODEL_KEYS}")
    return keys


def _add_experiment_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--full",
        action="store_true",
        help="paper-scale settings: 400 epochs, batch 150, lr 5e-4, λ 1e-2…1e-5 in "
        "half decades, 3 validation folds, refit, native m/z axis",
    )
    p.add_argument(
        "--models",
        type=_keys,
        default=None,
        help=f"comma-separated subset of {','.join(MODEL_KEYS)} (default: quick "
        "isotopenet,isotopenet+drr,linear; --full all)",
    )
    p.add_argument(
        "--mz-range",
        nargs=2,
        type=float,
        default=None,
        metavar=("MIN", "MAX"),
        help="range kept after TIC normalisation (default: 700 2000 for the simulated cohort and "
        "--full, else the common range of your files; --fiedler: the whole 1000-10000)",
    )
    p.add_argument(
        "--bin-width",
        type=float,
        default=None,
        help="bin spectra to this width in Da (default: demo 1.0, --full native axis)",
    )
    p.add_argument(
        "--lambdas",
        type=float_list,
        default=None,
        help="DRR λ grid (λ1 = λ2 = λ), e.g. '1e-2 1e-3'",
    )
    p.add_argument(
        "--lambda-convention",
        choices=("per_sample", "batch_sum"),
        default=None,
        help="how λ is read: per sample (quick default) or the authors' λ × the batch's summed "
        "relevance (--full default)",
    )
    p.add_argument(
        "--drr-relevance",
        choices=("gradient_x_input", "lrp"),
        default="gradient_x_input",
        help="the relevance DRR penalises: gradient × input (the paper) or LRP-ε "
        "(--engine adjoint or autograd)",
    )
    p.add_argument(
        "--lrp-epsilon",
        type=float,
        default=0.01,
        help="ε of the LRP-ε rule with --drr-relevance lrp",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="training epochs of every network (default: preset)",
    )
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default: preset)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: preset)")
    p.add_argument(
        "--engine",
        default="adjoint",
        choices=("adjoint", "autograd", "sweeps", "finite_difference"),
        help="double-backprop engine of the DRR training",
    )
    p.add_argument("--folds", type=int, default=5, help="patient-grouped folds (default 5)")
    p.add_argument(
        "--validation",
        choices=("target", "source"),
        default="target",
        help="validation spots for λ/N: target lab (the paper) or source lab (strict)",
    )
    p.add_argument(
        "--inner-folds",
        type=int,
        default=None,
        help="validation folds per test fold (default: demo 1, --full 3)",
    )
    p.add_argument(
        "--no-refit",
        dest="refit",
        action="store_false",
        default=None,
        help="test the model trained for validation instead of retraining",
    )
    p.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="training seeds per job (scores: mean)"
    )
    p.add_argument(
        "--intralab", type=_keys, default=None, help="models also run within each lab (contrast)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="training processes (default: number of CPU cores, at most 4)",
    )
    p.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples")
    p.add_argument(
        "--biomarkers",
        type=Path,
        default=None,
        help="CSV with an 'mz' column of true peaks (and optional 'isotope_mz', 'adduct_mz': "
        "';'-separated further peaks of the same molecules)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_repair_argument(p)


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``doublebackprop demo`` (the lead's top-level command)."""
    _add_experiment_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated cohort")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--annotations",
        type=Path,
        default=None,
        help="your own annotation CSV (imzML files + label/patient/lab columns) "
        "instead of the simulated cohort",
    )
    source.add_argument(
        "--store",
        type=Path,
        default=None,
        help="an HDF5 store from `msi convert` instead of the simulated cohort (converted once)",
    )
    source.add_argument(
        "--fiedler",
        action="store_true",
        help="the real fiedler2009subset (16 MALDI-TOF serum spectra, two sites) instead of the "
        "simulated cohort: leave-one-site-out, 2 Da bins, 100 epochs, λ 0.3, 5 bins for the "
        "linear baseline (no data to validate on)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``interlab`` to the ``doublebackprop msi`` sub-commands."""
    p = subparsers.add_parser(
        "interlab",
        help="inter-lab tumour typing: IsotopeNet ± DRR, ResNet-1D ± DRR, linear",
        description="Train on one lab, test on the other (both directions, patient-grouped "
        "folds); write results.json, results.csv, plots and report.html to --out.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--annotations",
        type=Path,
        help="annotation CSV: file,x,y,label,patient,lab[,core]",
    )
    source.add_argument(
        "--store", type=Path, help="an HDF5 store from `msi convert` (large data, converted once)"
    )
    _add_experiment_arguments(p)
    p.set_defaults(func=run_interlab_command)


# ---------------------------------------------------------------------------------- commands
def run_interlab_command(args: argparse.Namespace) -> int:
    """``doublebackprop msi interlab``: the experiment on the given annotation CSV."""
    from doublebackprop.msi.experiment.runner import run_experiment

    return run_experiment(args, simulate_seed=None)
