"""Training a tumour typer for new slides: λ chosen on held-out patients, probabilities
calibrated on them, everything written as a :mod:`bundle <.bundle>`.

The patients are split into ``folds`` patient-grouped, class-stratified folds. Fold 0 is held
out: every candidate (each λ of DRR, or each number of bins of the linear baseline) trains on the
other folds and is scored by balanced accuracy on fold 0; the best candidate (ties: the earlier
grid value) is the model of the bundle. Its logits on fold 0 fit the temperature. The ECE after
calibration is reported *cross-fitted* — the held-out patients are split in two, the temperature
is fitted on one half and the ECE measured on the other, both ways — so that it is not measured
on the data the temperature was fitted to. The deployed model has therefore not seen the held-out
patients; with 5 folds that is a fifth of them, the price of honest selection and calibration.

Candidates train through :func:`doublebackprop.msi.training.train_model` with a checkpoint each
in ``<out>.checkpoints/``: an interrupted run resumes where it stopped, and finished candidates are
not retrained.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from doublebackprop.common.training import seeded
from doublebackprop.msi.data.dataset import SpectraTable
from doublebackprop.msi.data.preprocess import Pipeline
from doublebackprop.msi.data.splits import grouped_stratified_kfold
from doublebackprop.msi.diagnosis.bundle import Bundle, LinearScores, ModelConfig, build_network
from doublebackprop.msi.diagnosis.calibration import (
    expected_calibration_error,
    fit_temperature,
    softmax,
)
from doublebackprop.msi.experiment.metrics import balanced_accuracy
from doublebackprop.msi.models import LinearBaseline
from doublebackprop.msi.training import TrainConfig, predict_logits, train_model

__all__ = ["TrainedTyper", "TyperSettings", "train_typer"]


@dataclass(frozen=True)
class TyperSettings:
    """Settings of :func:`train_typer` (defaults: the quick demo's, minutes on 2 cores).

    Parameters
    ----------
    architecture : {"isotopenet", "resnet1d", "linear"}, default "isotopenet"
    drr : bool, default True
        Deep Relevance Regularization (networks only); False trains plain cross-entropy.
    lambdas : tuple of float
        DRR's λ grid (λ₁ = λ₂ = λ, per-sample convention), chosen on the held-out patients.
    linear_grid : tuple of int
        Numbers of m/z bins of the linear baseline.
    epochs, batch_size, lr, engine
        Network training (:class:`~doublebackprop.msi.training.TrainConfig`).
    folds : int, default 5
        Patient-grouped folds; fold 0 is held out for selection and calibration.
    seed : int, default 0
        Folds, weight initialisation and batch order.
    options : dict
        Architecture keyword options (e.g. ``{"dropout": 0.3}``).
    """

    architecture: str = "isotopenet"
    drr: bool = True
    lambdas: tuple[float, ...] = (0.15, 0.3)
    linear_grid: tuple[int, ...] = (5, 10, 20, 50, 100, 200)
    epochs: int = 15
    batch_size: int = 32
    lr: float = 3e-3
    engine: str = "adjoint"
    folds: int = 5
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ModelConfig(self.architecture, 1, 2)  # validates the name
        if not isinstance(self.folds, int) or self.folds < 2:
            raise ValueError(f"folds must be an int >= 2, got {self.folds!r}")
        if self.architecture != "linear" and self.drr:
            if not self.lambdas or any(not (v > 0 and math.isfinite(v)) for v in self.lambdas):
                raise ValueError(f"lambdas must be finite numbers > 0, got {self.lambdas!r}")
        if self.architecture == "linear" and (not self.linear_grid or min(self.linear_grid) < 1):
            raise ValueError(f"linear_grid must hold ints >= 1, got {self.linear_grid!r}")
        TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, engine=self.engine)

    @property
    def grid(self) -> tuple[float, ...]:
        """The candidates: λ values, (0,) without DRR, or numbers of bins."""
        if self.architecture == "linear":
            return tuple(float(n) for n in self.linear_grid)
        return tuple(self.lambdas) if self.drr else (0.0,)


@dataclass(frozen=True, eq=False)
class TrainedTyper:
    """The bundle and what the held-out patients said about it."""

    bundle: Bundle
    validation: dict[str, float]  # candidate → balanced accuracy on the held-out patients
    chosen: float
    held_out_y: np.ndarray
    held_out_logits: np.ndarray


def _split_patients(table: SpectraTable, folds: int, seed: int) -> np.ndarray:
    groups = np.char.add(np.char.add(table.patient.astype(str), "@"), table.lab.astype(str))
    n_groups = len(set(groups.tolist()))
    if n_groups < folds:
        raise ValueError(
            f"{n_groups} patients are too few for {folds} patient-grouped folds "
            "(lower --folds or add patients)"
        )
    return grouped_stratified_kfold(table.label, groups, n_splits=folds, seed=seed)


def train_typer(
    table: SpectraTable,
    settings: TyperSettings,
    *,
    checkpoint_dir: Path | None = None,
    provenance: dict[str, Any] | None = None,
    progress: Callable[[str, float], None] | None = None,
) -> TrainedTyper:
    """Train, select and calibrate a tumour typer on every labelled spectrum of ``table``.

    Parameters
    ----------
    table : SpectraTable
        Preprocessed, labelled spectra (``load_table`` or a store's ``to_table()``).
    settings : TyperSettings
    checkpoint_dir : Path or None
        Per-candidate checkpoints (resumable); None trains without checkpoints.
    provenance : dict or None
        Recorded in the bundle as given (input files, settings, versions are added).
    progress : callable or None
        ``progress(candidate, fraction_of_all_training_done)`` after every epoch.

    Returns
    -------
    TrainedTyper
    """
    classes = table.classes
    if len(classes) < 2:
        raise ValueError(f"training needs at least two classes, got {list(classes)}")
    y = table.label_index()
    folds = _split_patients(table, settings.folds, settings.seed)
    held, train = folds == 0, folds != 0
    if len(set(y[held].tolist())) < len(classes):
        raise ValueError(
            "the held-out patients lack a class; add patients of every class or change --seed"
        )
    x = np.ascontiguousarray(table.intensities, dtype=np.float32)
    length, k = x.shape[1], len(classes)
    cfg = TrainConfig(
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        engine=settings.engine,
        seed=settings.seed,
    )
    grid = settings.grid
    scores: dict[str, float] = {}
    models: dict[float, torch.nn.Module] = {}
    total = len(grid) * (1 if settings.architecture == "linear" else max(cfg.epochs, 1))
    done = [0]

    def report(name: str) -> None:
        done[0] += 1
        if progress is not None:
            progress(name, done[0] / total)

    if settings.architecture == "linear":
        fit = LinearBaseline(grid=settings.linear_grid).fit(x[train], y[train], x[held], y[held])
        scores = {str(int(n)): float(s) for n, s in fit.validation_scores.items()}
        chosen = float(fit.n_features)
        models[chosen] = LinearScores.from_fit(fit, length, k)
        for _ in grid:
            report("linear")
    else:
        config = ModelConfig(settings.architecture, length, k, dict(settings.options))
        for i, lam in enumerate(grid):
            with seeded(settings.seed):
                net = build_network(config)
            ckpt = None if checkpoint_dir is None else checkpoint_dir / f"candidate-{i}.pt"
            name = f"λ={lam:g}" if lam > 0 else "plain"
            train_model(
                net,
                x[train],
                y[train],
                config=replace(cfg, l1=float(lam), l2=float(lam)),
                num_classes=k,
                callback=partial(_epoch_done, report, name),
                checkpoint=ckpt,
            )
            pred = predict_logits(net, x[held]).argmax(1).numpy()
            scores[f"{lam:g}"] = balanced_accuracy(y[held], pred, num_classes=k)
            models[lam] = net
        best = max(range(len(grid)), key=lambda j: (scores[f"{grid[j]:g}"], -j))
        chosen = grid[best]
    model = models[chosen].eval()
    logits = predict_logits(model, x[held]).double().numpy()
    temperature = fit_temperature(logits, y[held])
    ece_before = expected_calibration_error(softmax(logits), y[held])
    ece_after = _cross_fitted_ece(logits, y[held], table, held, settings.seed)
    architecture = settings.architecture
    config = ModelConfig(
        architecture, length, k, {} if architecture == "linear" else dict(settings.options)
    )
    prov = dict(provenance or {})
    prov.setdefault("versions", _versions())
    prov["settings"] = {**asdict(settings), "grid": list(grid)}
    metrics = {
        "validation": {
            "held_out_patients": int(len(set(table.patient[held].tolist()))),
            "held_out_spectra": int(held.sum()),
            "training_spectra": int(train.sum()),
            "balanced_accuracy": scores,
            "chosen": chosen,
        },
        "calibration": {
            "temperature": temperature,
            "ece_before": ece_before,
            "ece_after_cross_fitted": ece_after,
            "bins": 15,
        },
    }
    bundle = Bundle(
        config=config,
        state={n: t.detach().clone() for n, t in model.state_dict().items()},
        pipeline=Pipeline.from_json(table.pipeline),
        mz=np.asarray(table.mz, dtype=np.float64),
        classes=classes,
        temperature=temperature,
        metrics=metrics,
        provenance=prov,
    )
    return TrainedTyper(bundle, scores, chosen, y[held], logits)


def _epoch_done(report: Callable[[str], None], name: str, stats: object, total: int) -> None:
    report(name)


def _cross_fitted_ece(
    logits: np.ndarray, y: np.ndarray, table: SpectraTable, held: np.ndarray, seed: int
) -> float:
    """ECE with the temperature fitted on the other half of the held-out patients."""
    patients = table.patient[held].astype(str)
    names = sorted(set(patients.tolist()))
    if len(names) < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    half = set(rng.permutation(names)[: len(names) // 2].tolist())
    a = np.asarray([p in half for p in patients])
    prob = np.empty_like(logits)
    for part, other in ((a, ~a), (~a, a)):
        prob[part] = softmax(logits[part], fit_temperature(logits[other], y[other]))
    return expected_calibration_error(prob, y)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("doublebackprop", "torch", "numpy", "scikit-learn", "pyimzML"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out
