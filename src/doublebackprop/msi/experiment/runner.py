"""What ``doublebackprop demo`` and ``msi interlab`` run: load or simulate the cohort, run the
protocol with a progress bar, write tables, plots, the report and the settings."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from doublebackprop.msi.data.biomarkers import read_biomarkers
from doublebackprop.msi.experiment.settings import model_specs, settings_from_args


def _load(
    annotations: Path,
    mz_range: tuple[float, float] | None,
    bin_width: float | None,
    *,
    repair: bool = False,
):
    """The annotated spectra: the common m/z range of all files (their intersection), a
    requested range checked against every file (an error naming the file that lacks it)."""
    from doublebackprop.msi.data.dataset import plan_loading, table_from_plan

    try:
        plan = plan_loading(annotations, mz_range=mz_range, bin_width=bin_width, repair=repair)
    except ValueError as exc:
        if mz_range is not None and "does not cover the requested range" in str(exc):
            lo, hi = mz_range
            raise ValueError(f"--mz-range {lo:g}–{hi:g} lies outside the data: {exc}") from exc
        raise
    return table_from_plan(plan)


def data_record(table) -> dict:
    """What the results record about the data: the m/z axis, the notes (annotation warnings,
    what the common range cut per file) and every repaired spectrum by pixel."""
    rep = table.repaired if table.repaired is not None else np.full(len(table), "")
    rows = np.flatnonzero(rep != "")
    z = table.z if table.z is not None else np.ones(len(table), dtype=np.int64)
    return {
        "mz_range": [float(table.mz[0]), float(table.mz[-1])],
        "features": int(table.intensities.shape[1]),
        "notes": list(table.notes),
        "repaired_spectra": [
            {
                "file": str(table.file[r]),
                "x": int(table.x[r]),
                "y": int(table.y[r]),
                "z": int(z[r]),
                "repairs": str(rep[r]),
            }
            for r in rows.tolist()
        ],
    }


#: ``after(annotations, table, settings, result, out) -> (figures, notes)``: more work on the same
#: data, run after the experiment and shown in its report (the demo types the second lab's slides)
AfterHook = Callable[[Path, Any, dict[str, Any], Any, Path], tuple[list[Path], list[str]]]


def run_experiment(
    args: argparse.Namespace, *, simulate_seed: int | None, after: AfterHook | None = None
) -> int:
    """Run the inter-lab experiment as the parsed options say; a simulated cohort when
    ``simulate_seed`` is given; then ``after`` (see :data:`AfterHook`). Returns the exit code."""
    from doublebackprop.msi.experiment.plots import write_plots
    from doublebackprop.msi.experiment.protocol import ProtocolConfig, run_interlab
    from doublebackprop.msi.experiment.report import (
        format_table,
        write_predictions,
        write_report,
        write_tables,
    )
    from doublebackprop.msi.training import TrainConfig

    t_start = time.perf_counter()
    own = getattr(args, "annotations", None)
    simulated = simulate_seed is not None or (
        own is not None and (Path(own).parent / "ground_truth.json").is_file()
    )  # a cohort written by `msi simulate` keeps the paper's range as its default
    s = settings_from_args(args, simulated=simulated)  # bad options fail here, before any work
    relevance = getattr(args, "drr_relevance", "gradient_x_input")
    if relevance == "lrp" and args.engine not in ("adjoint", "autograd"):
        raise ValueError(
            f"--drr-relevance lrp needs --engine adjoint or autograd, got --engine {args.engine}"
        )
    lrp_epsilon = getattr(args, "lrp_epsilon", 0.01)
    if not lrp_epsilon >= 0:
        raise ValueError(f"--lrp-epsilon must be >= 0, got {lrp_epsilon}")
    train = TrainConfig(
        epochs=s["epochs"],
        batch_size=s["batch_size"],
        lr=s["lr"],
        engine=args.engine,
        penalty_reduction=s["lambda_convention"],
        relevance=relevance,
        lrp_epsilon=lrp_epsilon,
    )
    workers = args.workers or min(os.cpu_count() or 1, 4)
    specs = model_specs(tuple(s["models"]), s)
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
    biomarkers = read_biomarkers(args.biomarkers) if args.biomarkers else None
    if simulate_seed is not None:
        from doublebackprop.msi.simulate.cohort import SimulationConfig, simulate_cohort

        _say(f"simulating the two-lab cohort (seed {simulate_seed}) into {out / 'cohort'}")
        cohort = simulate_cohort(out / "cohort", SimulationConfig(seed=simulate_seed))
        annotations = cohort.annotations
        if biomarkers is None:
            biomarkers = read_biomarkers(cohort.biomarkers)
    else:
        annotations = args.annotations
    store = getattr(args, "store", None)
    if store is not None:
        from doublebackprop.msi.data.store import open_store

        if args.mz_range is not None or args.bin_width is not None:
            raise ValueError(
                "--store: the store's m/z axis was fixed by `msi convert`; drop --mz-range and "
                "--bin-width (or convert again with them)"
            )
        with open_store(store) as st:
            table = st.to_table()
        annotations = store
    elif fiedler:
        from doublebackprop.msi.data.fiedler import default_fiedler_path, load_fiedler2009

        annotations = default_fiedler_path()
        table = load_fiedler2009(annotations, mz_range=s["mz_range"], bin_width=s["bin_width"])
    else:
        table = _load(
            annotations, s["mz_range"], s["bin_width"], repair=getattr(args, "repair", False)
        )
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
            job_cache=out / ".jobs",
        )
    finally:
        if bar is not None:
            pbar.close()
    records = list(result.records)
    write_tables(records, out)
    # wall-clock time is not a result: kept apart so that results.json is reproducible
    timings = [
        {
            "model": a.spec.name,
            "drr": a.spec.drr,
            "protocol": a.protocol,
            "direction": a.direction,
            "train_seconds": a.seconds,
        }
        for a in result.arms
    ]
    (out / "timings.json").write_text(json.dumps(timings, indent=1))
    core = table.core if table.core is not None else table.file
    plots = write_plots(
        result,
        out,
        core=np.char.add(np.char.add(table.lab, ":"), core),
        xs=table.x,
        ys=table.y,
        y_true=table.label_index(),
        intensities=table.intensities,
    )
    write_predictions(
        result,
        out,
        file=table.file,
        x=table.x,
        y=table.y,
        patient=table.patient,
        label=table.label,
    )
    more_notes: list[str] = []
    if after is not None:
        figures, more_notes = after(Path(annotations), table, s, result, out)
        plots = [*plots, *figures]
    seconds = time.perf_counter() - t_start
    notes = [
        f"Total run time {seconds / 60:.1f} min, {workers} worker process(es). "
        + (
            "Paper-scale settings (--full)."
            if args.full
            else "Quick demo settings; --full runs the paper's 400 epochs and λ grid."
        )
    ]
    notes += [f"Data: {n}" for n in table.notes]
    n_rep = 0 if table.repaired is None else int((table.repaired != "").sum())
    if n_rep:
        notes.append(f"Data: {n_rep} spectra repaired (--repair); listed in settings.json.")
    shown = {
        "annotation file": str(annotations),
        "bin width (Da)": s["bin_width"] if s["bin_width"] is not None else "native axis",
        "models": ", ".join(s["models"]),
        "DRR λ grid": ", ".join(f"{v:g}" for v in s["lambdas"])
        + (
            " (per sample)"
            if s["lambda_convention"] == "per_sample"
            else " (the authors' convention: λ × the batch's summed relevance)"
        ),
        "DRR relevance": "gradient × input"
        if train.relevance == "gradient_x_input"
        else f"LRP-ε, ε = {train.lrp_epsilon:g}",
        "linear baseline bins": ", ".join(str(v) for v in s["linear_grid"]),
    }
    write_report(result, out, plots, notes=[*notes, *more_notes], settings=shown)
    (out / "settings.json").write_text(
        json.dumps(
            {
                "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in s.items()},
                "workers": workers,
                "engine": args.engine,
                "drr_relevance": train.relevance,
                "lrp_epsilon": train.lrp_epsilon if train.relevance == "lrp" else None,
                "seconds": seconds,
                "annotations": str(annotations),
                "simulated_seed": simulate_seed,
                "data": data_record(table),
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
