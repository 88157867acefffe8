"""``doublebackprop demo``: the main job.

It runs the inter-lab experiment on a simulated two-lab cohort (or on ``--annotations`` /
``--fiedler``), and then does what tumour typing is for: it trains a calibrated typer on the first
lab (:mod:`doublebackprop.msi.diagnosis`), types the second lab's slides as if they were new —
their annotations are used only to score the result — and shows a typed slide next to its
annotation in the report. Outputs: ``DIR/report.html`` and ``results.json`` (the experiment),
``DIR/model/`` (the bundle) and ``DIR/typing/`` (predictions, maps and per-slide reports).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_demo_arguments", "run_demo"]


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``doublebackprop demo``: the experiment's, plus ``--no-typing``."""
    from doublebackprop.msi.experiment.cli import add_demo_arguments as experiment_arguments

    experiment_arguments(parser)
    parser.add_argument(
        "--no-typing",
        action="store_true",
        help="skip training a typer on the first lab and typing the second lab's slides",
    )


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo as :func:`add_demo_arguments` parsed it; returns the exit code."""
    from doublebackprop.msi.experiment.runner import run_experiment

    own_data = args.annotations or args.store or args.fiedler
    seed = None if own_data else int(args.seed)
    # typing needs the imzML slides: not from a store, not for the 16 serum spectra
    typing = not (args.no_typing or args.fiedler or args.store)
    return run_experiment(args, simulate_seed=seed, after=type_second_lab if typing else None)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def type_second_lab(
    annotations: Path, table: Any, settings: dict[str, Any], result: Any, out: Path
) -> tuple[list[Path], list[str]]:
    """Train a typer on the first lab's spectra of ``table`` and type the second lab's slides.

    The typer's λ is the one validation chose most often for IsotopeNet + DRR in the experiment
    just run (its held-out patients then serve the calibration only), which keeps the demo
    within its time.

    Returns the figures (reliability diagram, one typed slide beside its annotation) and the
    notes (balanced accuracy on the second lab, ECE before and after calibration) for the report.
    """
    from doublebackprop.msi.data.annotations import read_annotations
    from doublebackprop.msi.diagnosis.bundle import save_bundle
    from doublebackprop.msi.diagnosis.provenance import describe_inputs
    from doublebackprop.msi.diagnosis.report import reliability_diagram
    from doublebackprop.msi.diagnosis.train import TyperSettings, train_typer
    from doublebackprop.msi.diagnosis.workflow import predict_slides

    labs = sorted(set(table.lab.tolist()))
    source, target = labs[0], labs[1]
    train = table.take(table.lab == source)
    ann = read_annotations(annotations)
    files = [ann.resolve(f) for f in ann.files()]
    lab_of = {ann.resolve(str(f)): str(lab) for f, lab in zip(ann.file, ann.lab)}
    inputs, spectrum_type = describe_inputs([f for f in files if lab_of[f] == source])
    n_patients = len(set(train.patient.tolist()))
    per_class = min(
        len(set(train.patient[train.label == c].tolist())) for c in set(train.label.tolist())
    )
    typer_settings = TyperSettings(
        epochs=int(settings["epochs"]),
        batch_size=int(settings["batch_size"]),
        lr=float(settings["lr"]),
        lambdas=_most_chosen(result, settings["lambdas"]),
        folds=max(2, min(5, per_class)),  # every fold, the held-out one too, holds each class
    )
    _say(f"training a typer on lab {source} ({len(train)} spectra, {n_patients} patients)")
    trained = train_typer(
        train,
        typer_settings,
        checkpoint_dir=out / ".typer-checkpoints",
        provenance={
            "annotations": str(annotations),
            "lab": source,
            "inputs": inputs,
            "spectrum_type": spectrum_type,
            "loading": {
                "mz_range": None if settings["mz_range"] is None else list(settings["mz_range"]),
                "bin_width": settings["bin_width"],
            },
        },
    )
    diagram = reliability_diagram(
        trained.held_out_logits,
        trained.held_out_y,
        trained.bundle.temperature,
        out / "typer_reliability.png",
    )
    model_dir = save_bundle(trained.bundle, out / "model", extra_files={"reliability.png": diagram})
    slides = [f for f in files if lab_of[f] == target]
    _say(f"typing lab {target}'s {len(slides)} slides as new slides")
    summary = predict_slides(
        model_dir, slides, out / "typing", annotations=annotations, top_k=6, progress=False
    )
    _write_lab_annotations(annotations, source, out / "model" / "training_annotations.csv")
    cal = trained.bundle.metrics["calibration"]
    score = summary.get("score", {})
    first = Path(slides[0]).stem
    notes = [
        f"Slide typing: a typer (IsotopeNet + DRR, λ = {trained.chosen:g}, the experiment's most "
        f"frequent choice) trained on lab {source} typed lab {target}'s {len(slides)} slides without "
        f"their annotations: spot balanced accuracy {100 * score.get('spot', np.nan):.1f} % "
        f"(95 % CI {100 * score.get('spot_ci', [np.nan, np.nan])[0]:.1f}–"
        f"{100 * score.get('spot_ci', [np.nan, np.nan])[1]:.1f}), patient "
        f"{100 * score.get('patient', np.nan):.1f} %. Calibration on lab {source}'s held-out "
        f"patients: T = {cal['temperature']:.3g}, ECE {100 * cal['ece_before']:.1f} % → "
        f"{100 * cal['ece_after_cross_fitted']:.1f} % (cross-fitted). The bundle is in model/, "
        f"the typed slides in typing/ (per-slide reports typing/*.html)."
    ]
    (out / "typer_reliability.png").unlink(missing_ok=True)
    return [out / "typing" / f"{first}_classes.png", model_dir / "reliability.png"], notes


def _most_chosen(result: Any, grid: Any) -> tuple[float, ...]:
    """The λ the experiment's validation picked most often for IsotopeNet + DRR (ties: the
    earlier grid value); the whole grid when the experiment had no such model."""
    picks = [
        v
        for r in result.records
        if r["model"] == "isotopenet" and r["drr"] and r["direction"] == "pooled"
        for v in r.get("lambda", [])
    ]
    grid = tuple(float(v) for v in grid)
    if not picks:
        return grid
    return (max(grid, key=lambda v: (picks.count(v), -grid.index(v))),)


def _write_lab_annotations(annotations: Path, lab: str, path: Path) -> None:
    """The rows of ``annotations`` the typer was trained on (provenance a person can open)."""
    with open(annotations, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(r for r in rows if r.get("lab") == lab)
