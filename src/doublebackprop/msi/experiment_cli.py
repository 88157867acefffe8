"""CLI of the tumour-typing experiment: ``doublebackprop msi interlab`` and ``doublebackprop demo``.

The name → model registry lives here (the CLI edge); the library takes :class:`ModelSpec`
objects. Progress is a tqdm bar on stderr, counted in spectrum-epochs; the result table goes to
stdout; ``--out DIR`` receives ``results.json``, ``results.csv``, PNG plots and ``report.html``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

MODEL_KEYS = ("isotopenet", "isotopenet+drr", "resnet1d", "resnet1d+drr", "linear")

#: the quick settings of ``doublebackprop demo`` (≤ 10 min on 2 CPU cores) and ``--full``
QUICK: dict[str, Any] = dict(
    epochs=15,
    resnet_epochs=6,  # the ResNet costs ~2× IsotopeNet per epoch; it is the comparison arm
    batch_size=32,
    lr=3e-3,
    # Larger than the paper's 1e-2…1e-5: the penalty's effect builds up over training, and 15
    # epochs with λ ≤ 3e-2 leave the relevance nearly as spread as without DRR (r itself does
    # not depend on the intensity scale: BatchNorm follows the first conv). Validation picks.
    lambdas=(0.15, 0.3),
    inner_folds=1,
    refit=False,
    bin_width=1.0,
    linear_grid=(5, 10, 20, 50, 100, 200),
    resnet_width=(8, 16, 16),
    n_bootstrap=500,
    intralab=("isotopenet",),
)
FULL: dict[str, Any] = dict(
    epochs=400,
    resnet_epochs=None,
    batch_size=150,
    lr=5e-4,
    lambdas=None,
    inner_folds=3,
    refit=True,
    bin_width=None,
    linear_grid=(5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 125, 150, 175, 200),
    resnet_width=(16, 128, 256),
    n_bootstrap=1000,
    intralab=("isotopenet", "isotopenet+drr", "linear"),
)


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected numbers, got {text!r}") from exc


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
        default=MODEL_KEYS,
        help=f"comma-separated subset of {','.join(MODEL_KEYS)}",
    )
    p.add_argument(
        "--mz-range",
        nargs=2,
        type=float,
        default=None,
        metavar=("MIN", "MAX"),
        help="crop after TIC normalisation (default 700 2000; --fiedler: the whole 1000-10000)",
    )
    p.add_argument(
        "--bin-width",
        type=float,
        default=None,
        help="bin spectra to this width in Da (default: demo 1.0, --full native axis)",
    )
    p.add_argument(
        "--lambdas", type=_floats, default=None, help="DRR λ grid (λ1 = λ2 = λ), e.g. '1e-2 1e-3'"
    )
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument(
        "--engine",
        default="adjoint",
        choices=("adjoint", "autograd", "sweeps", "finite_difference"),
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
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
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
    p.add_argument(
        "--annotations",
        type=Path,
        required=True,
        help="annotation CSV: file,x,y,label,patient,lab[,core]",
    )
    _add_experiment_arguments(p)
    p.set_defaults(func=run_interlab_command)


# ---------------------------------------------------------------------------------- commands
def run_interlab_command(args: argparse.Namespace) -> int:
    return _run(args, simulate_seed=None)


def run_demo(args: argparse.Namespace) -> int:
    """``doublebackprop demo``: simulate (or load) a cohort and run the inter-lab experiment."""
    own_data = getattr(args, "annotations", None) or getattr(args, "fiedler", False)
    seed = None if own_data else int(getattr(args, "seed", 0))
    return _run(args, simulate_seed=seed)


#: fiedler2009subset has 8 patients per site and no second visit of a patient in the other
#: site, so the protocol is leave-one-site-out without validation data (first grid values)
FIEDLER: dict[str, Any] = dict(
    epochs=100,
    resnet_epochs=None,
    lambdas=(0.3,),
    refit=True,
    bin_width=2.0,
    linear_grid=(5,),
    intralab=(),
)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    base: dict[str, Any] = dict(FULL if args.full else QUICK)
    if getattr(args, "fiedler", False):
        base.update(FIEDLER)
    for key, value in (
        ("epochs", args.epochs),
        ("batch_size", args.batch_size),
        ("lr", args.lr),
        ("lambdas", args.lambdas),
        ("inner_folds", args.inner_folds),
        ("refit", args.refit),
        ("bin_width", args.bin_width),
        ("n_bootstrap", args.bootstrap),
        ("intralab", args.intralab),
    ):
        if value is not None:
            base[key] = value
    if args.epochs is not None:  # an explicit --epochs applies to every network
        base["resnet_epochs"] = None
    if base["lambdas"] is None:
        from .interlab import PAPER_LAMBDAS

        base["lambdas"] = PAPER_LAMBDAS
    if any(v <= 0 for v in base["lambdas"]):
        raise ValueError(
            f"--lambdas: λ must be > 0 (DRR off is the model without '+drr'), "
            f"got {list(base['lambdas'])}"
        )
    if base["refit"] is False and base["inner_folds"] != 1:
        raise ValueError("--no-refit needs --inner-folds 1")
    base["mz_range"] = None if args.mz_range is None else tuple(args.mz_range)
    if base["mz_range"] is None and not getattr(args, "fiedler", False):
        base["mz_range"] = (700.0, 2000.0)  # DESIGN §5
    if base["mz_range"] is not None and not base["mz_range"][0] < base["mz_range"][1]:
        lo, hi = base["mz_range"]
        raise ValueError(f"--mz-range: MIN {lo} must be below MAX {hi}")
    if base["bin_width"] is not None and base["bin_width"] <= 0:
        raise ValueError(f"--bin-width must be > 0, got {base['bin_width']}")
    return base


def _specs(keys: tuple[str, ...], s: dict) -> list:
    from ._jobs import ModelSpec
    from .models import IsotopeNet, ResNet1d

    base_w, max_w, final_w = s["resnet_width"]
    resnet = partial(ResNet1d, base_width=base_w, max_width=max_w, final_width=final_w)
    lam = tuple(float(v) for v in s["lambdas"])
    out = []
    for key in keys:
        if key == "linear":
            out.append(ModelSpec("linear", None, grid=tuple(s["linear_grid"])))
        else:
            name = key.split("+")[0]
            build = IsotopeNet if name == "isotopenet" else resnet
            out.append(
                ModelSpec(
                    name,
                    build,
                    grid=lam if key.endswith("+drr") else (0.0,),
                    relative_cost=1.0 if name == "isotopenet" else 2.0,
                    epochs=None if name == "isotopenet" else s["resnet_epochs"],
                )
            )
    return out


def _read_biomarkers(path: Path) -> np.ndarray:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "mz" not in rows[0]:
        raise ValueError(f"{path}: a biomarker CSV needs an 'mz' column")
    peaks = []
    for r in rows:
        iso = (r.get("isotope_mz") or "").strip()
        peaks += [float(v) for v in iso.split(";")] if iso else [float(r["mz"])]
        adducts = (r.get("adduct_mz") or "").strip()
        peaks += [float(v) for v in adducts.split(";")] if adducts else []
    return np.asarray(peaks)


def _load(annotations: Path, mz_range: tuple[float, float], bin_width: float | None):
    from .dataset import plan_loading, table_from_plan

    plan = plan_loading(annotations, mz_range=None, bin_width=None)
    extents = [r.mz_extent() for r in plan.readers.values()]
    lo_d, hi_d = min(e[0] for e in extents), max(e[1] for e in extents)
    lo, hi = mz_range
    tol = 0.01 * (hi - lo)
    if lo < lo_d - tol or hi > hi_d + tol:
        raise ValueError(
            f"--mz-range {lo:g}–{hi:g} lies outside the data's m/z range {lo_d:.1f}–{hi_d:.1f}"
        )
    plan = plan_loading(plan.annotations, mz_range=mz_range, bin_width=bin_width)
    return table_from_plan(plan)


def _run(args: argparse.Namespace, *, simulate_seed: int | None) -> int:
    from .interlab import ProtocolConfig, run_interlab
    from .report import format_table, write_plots, write_report, write_tables
    from .training import TrainConfig

    t_start = time.perf_counter()
    s = _settings(args)  # bad options fail here, before any work
    train = TrainConfig(
        epochs=s["epochs"], batch_size=s["batch_size"], lr=s["lr"], engine=args.engine
    )
    workers = args.workers or min(os.cpu_count() or 1, 4)
    specs = _specs(tuple(args.models), s)
    fiedler = getattr(args, "fiedler", False)
    config = ProtocolConfig(
        n_splits=1 if fiedler else args.folds,
        validation=args.validation,
        inner_folds=s["inner_folds"],
        refit=s["refit"],
        train=train,
        seeds=tuple(args.seeds),
        intralab=tuple(s["intralab"]),
        n_bootstrap=s["n_bootstrap"],
        workers=workers,
    )
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    bar = None if args.no_progress else _tqdm()
    biomarkers = _read_biomarkers(args.biomarkers) if args.biomarkers else None
    if simulate_seed is not None:
        from .simulate import SimulationConfig, simulate_cohort

        _say(f"simulating the two-lab cohort (seed {simulate_seed}) into {out / 'cohort'}")
        cohort = simulate_cohort(out / "cohort", SimulationConfig(seed=simulate_seed))
        annotations = cohort.annotations
        if biomarkers is None:
            biomarkers = _read_biomarkers(cohort.biomarkers)
    else:
        annotations = args.annotations
    if fiedler:
        from .fiedler import default_fiedler_path, load_fiedler2009

        annotations = default_fiedler_path()
        table = load_fiedler2009(annotations, mz_range=s["mz_range"], bin_width=s["bin_width"])
    else:
        table = _load(annotations, s["mz_range"], s["bin_width"])
    _say(
        f"{len(table)} spectra × {table.intensities.shape[1]} m/z bins, classes "
        f"{table.classes}, labs {sorted(set(table.lab.tolist()))}"
    )
    progress = None
    if bar is not None:
        pbar = bar(
            total=1.0,
            unit="work",
            desc="training",
            dynamic_ncols=True,
            bar_format="{l_bar}{bar}| {percentage:3.0f}% [{elapsed}<{remaining}]",
        )

        def progress(done: float, total: float, what: str) -> None:
            pbar.total = total
            pbar.n = done
            pbar.set_postfix_str(what, refresh=False)
            pbar.refresh()

    try:
        result = run_interlab(
            table.intensities,
            table.label,
            table.patient,
            table.lab,
            specs,
            config=config,
            mz=table.mz,
            biomarkers=biomarkers,
            progress=progress,
        )
    finally:
        if bar is not None:
            pbar.close()
    records = list(result.records)
    write_tables(records, out)
    core = table.core if table.core is not None else table.file
    plots = write_plots(
        result,
        out,
        core=np.char.add(np.char.add(table.lab, ":"), core),
        xs=table.x,
        ys=table.y,
        y_true=table.label_index(),
    )
    seconds = time.perf_counter() - t_start
    notes = [
        f"Total run time {seconds / 60:.1f} min, {workers} worker process(es). "
        + (
            "Paper-scale settings (--full)."
            if args.full
            else "Quick demo settings; --full runs the paper's 400 epochs and λ grid."
        )
    ]
    write_report(result, out, plots, notes=notes)
    (out / "settings.json").write_text(
        json.dumps(
            {
                "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in s.items()},
                "workers": workers,
                "engine": args.engine,
                "seconds": seconds,
                "annotations": str(annotations),
                "simulated_seed": simulate_seed,
            },
            indent=1,
        )
    )
    print(format_table(records))
    _say(f"wrote {out / 'results.json'} and {out / 'report.html'} in {seconds / 60:.1f} min")
    return 0


def _tqdm():
    from tqdm.auto import tqdm

    return tqdm


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
