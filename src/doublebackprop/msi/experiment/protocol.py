"""The inter-lab tumour-typing protocol of the DRR paper (docs/papers.md).

Train on lab A and test on lab B, and the reverse. Patients are split into ``n_splits`` folds
(grouped by patient, stratified by class × lab); for outer fold ``k`` the model trains on the
source lab's spots outside fold ``k`` and is tested on the *target* lab's spots of fold ``k``, so
test spots are unseen in both lab and patient. Hyper-parameters (λ of DRR, the number of bins of
the linear baseline) are chosen per outer fold by balanced accuracy on validation folds
``k+1, …`` (training then leaves those folds out too). Where validation spots come from is
explicit and recorded: ``"target"`` (the paper's choice: target-lab spots of held-out patients —
it peeks at the target lab) or ``"source"`` (strict: source-lab spots only). An intra-lab run
(train and test in one lab, patient-disjoint) gives the contrast a confounded model shows.

The work is a list of independent training jobs (:mod:`.jobs`); with ``workers > 1`` they run
in separate processes with one thread each, which on a small CPU beats one process with
several threads for networks of this size.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from doublebackprop.msi.experiment.config import PAPER_LAMBDAS, ProtocolConfig
from doublebackprop.msi.experiment.interpret import biomarker_mask
from doublebackprop.msi.experiment.jobs import JobRunner
from doublebackprop.msi.experiment.plan import (
    ArmKey,
    Cohort,
    FoldKey,
    FoldPlan,
    Job,
    JobResult,
    JobTag,
    ModelSpec,
)
from doublebackprop.msi.experiment.results import Arm, assemble_arms, make_records

__all__ = [
    "Arm",
    "ModelSpec",
    "ProtocolConfig",
    "ExperimentResult",
    "run_interlab",
    "validate_cohort",
    "PAPER_LAMBDAS",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExperimentResult:
    """Records (one per model × direction, JSON-ready), arms with predictions, and context."""

    records: tuple[dict, ...]
    arms: tuple[Arm, ...]
    classes: tuple[str, ...]
    labs: tuple[str, str]
    mz: np.ndarray
    biomarkers: np.ndarray | None
    config: ProtocolConfig


def validate_cohort(
    labels: np.ndarray, patients: np.ndarray, labs: np.ndarray, *, n_splits: int
) -> tuple[str, str]:
    """Check the cohort suits the protocol before any training; returns the two lab names.

    Raises :class:`ValueError` naming what is missing: no lab or patient information, fewer or
    more than two labs, a single class, a lab without spots of a class, too few patients.

    Parameters
    ----------
    labels, patients, labs : ndarray
        ``(N,)`` class name, patient id and lab of every spot.
    n_splits : int
        Patient-grouped folds the protocol will make.
    """
    labels, patients, labs = (np.asarray(a).astype(str) for a in (labels, patients, labs))
    if len(labels) == 0:
        raise ValueError("the cohort holds no spectra")
    if np.any(np.char.str_len(patients) == 0):
        raise ValueError(
            "patient ids are missing (the annotations need a 'patient' column "
            "with a value on every row): the folds are grouped by patient"
        )
    if np.any(np.char.str_len(labs) == 0):
        raise ValueError(
            "lab names are missing (the annotations need a 'lab' column with a "
            "value on every row): the inter-lab protocol trains on one lab and "
            "tests on another"
        )
    classes = sorted(set(labels.tolist()))
    if len(classes) < 2:
        raise ValueError(
            f"a single class {classes} in the annotations: classification needs at least two"
        )
    lab_names = sorted(set(labs.tolist()))
    if len(lab_names) != 2:
        raise ValueError(f"the inter-lab protocol needs exactly two labs, found {lab_names}")
    for lab in lab_names:
        for c in classes:
            sel = (labs == lab) & (labels == c)
            if not sel.any():
                raise ValueError(
                    f"lab {lab!r} has no spots of class {c!r}: it can neither "
                    f"train nor test that class"
                )
            n_pat = len(set(patients[sel].tolist()))
            if n_pat < n_splits:
                logger.warning(
                    "lab %r class %r has %d patients for %d folds; some folds lack it",
                    lab,
                    c,
                    n_pat,
                    n_splits,
                )
    n_pat = len(set(patients.tolist()))
    if n_pat < n_splits:
        raise ValueError(f"{n_pat} patients are too few for {n_splits} patient-grouped folds")
    return lab_names[0], lab_names[1]


def _folds(labels: np.ndarray, patients: np.ndarray, labs: np.ndarray, cfg: ProtocolConfig):
    from doublebackprop.msi.data.splits import assert_patient_disjoint, grouped_stratified_kfold

    if cfg.n_splits == 1:
        both = set(patients[labs == labs[0]].tolist()) & set(patients[labs != labs[0]].tolist())
        if both:
            raise ValueError(
                f"n_splits=1 trains on one lab and tests on the other, but patients "
                f"{sorted(both)[:5]} are in both labs; use patient folds (>= 3)"
            )
        return np.zeros(len(labels), dtype=np.int64)
    # a patient measured in both labs keeps one fold; stratify by class × (set of labs)
    pl: dict[str, set[str]] = {}
    for p, lab in zip(patients.tolist(), labs.tolist()):
        pl.setdefault(p, set()).add(lab)
    strata = np.asarray([f"{c}|{'+'.join(sorted(pl[p]))}" for c, p in zip(labels, patients)])
    folds = grouped_stratified_kfold(strata, patients, n_splits=cfg.n_splits, seed=cfg.fold_seed)
    assert_patient_disjoint(folds, patients)
    return folds


def _plan(
    specs: Sequence[ModelSpec],
    folds: np.ndarray,
    labs: np.ndarray,
    lab_names: tuple[str, str],
    cfg: ProtocolConfig,
) -> list[FoldPlan]:
    """Every model's arms and outer folds, with the validation folds of each."""
    a, b = lab_names
    pairs = [ArmKey("interlab", a, b), ArmKey("interlab", b, a)]
    intra = [ArmKey("intralab", lab, lab) for lab in lab_names]
    out = []
    for spec in specs:
        for arm in pairs + (intra if spec.key in cfg.intralab else []):
            for k in range(cfg.n_splits):
                inner = (
                    ()
                    if cfg.n_splits == 1
                    else tuple((k + 1 + i) % cfg.n_splits for i in range(cfg.inner_folds))
                )
                out.append(FoldPlan(spec, FoldKey(arm, k), inner))
    return out


def _outside(folds: np.ndarray, k: int, n_splits: int) -> np.ndarray:
    """Training rows for test fold ``k``: the other folds (every row when there are no folds)."""
    return folds != k if n_splits > 1 else np.ones(len(folds), dtype=bool)


def _select(spec: ModelSpec, results: list[JobResult]) -> float:
    """Best grid value by mean validation balanced accuracy; ties → the earlier grid value."""
    scores = {}
    for h in spec.grid:
        vals = [r.scores["val"] for r in results if r.job.hyper == h]
        scores[h] = float(np.mean(vals)) if vals else -math.inf
    return max(spec.grid, key=lambda h: (scores[h], -spec.grid.index(h)))


def _fold_of(result: JobResult) -> FoldKey:
    assert result.job.tag is not None  # every protocol job is tagged
    return result.job.tag.fold


def _final_jobs(
    plan: list[FoldPlan],
    sel_res: list[JobResult],
    config: ProtocolConfig,
    folds: np.ndarray,
    labs: np.ndarray,
) -> tuple[dict[tuple[str, FoldKey], float], list[Job]]:
    """Chosen hyper-parameter per (model, outer fold) and the refit jobs that use it."""
    chosen: dict[tuple[str, FoldKey], float] = {}
    for fp in plan:
        mine = [r for r in sel_res if r.job.spec == fp.spec and _fold_of(r) == fp.fold]
        chosen[(fp.spec.key, fp.fold)] = _select(fp.spec, mine) if mine else fp.spec.grid[0]
    fin_jobs: list[Job] = []
    if not config.refit:
        return chosen, fin_jobs
    for fp in plan:
        arm, k = fp.fold.arm, fp.fold.test_fold
        for s in config.seeds:
            fin_jobs.append(
                Job(
                    spec=fp.spec,
                    hyper=float(chosen[(fp.spec.key, fp.fold)]),
                    seed=s,
                    train=np.flatnonzero(
                        (labs == arm.source) & _outside(folds, k, config.n_splits)
                    ),
                    evals={"test": np.flatnonzero((labs == arm.target) & (folds == k))},
                    tag=JobTag(fp.fold),
                    relevance=True,
                )
            )
    return chosen, fin_jobs


def run_interlab(
    x: np.ndarray,
    labels: np.ndarray,
    patients: np.ndarray,
    labs: np.ndarray,
    specs: Sequence[ModelSpec],
    *,
    config: ProtocolConfig,
    mz: np.ndarray | None = None,
    classes: Sequence[str] | None = None,
    biomarkers: np.ndarray | None = None,
    biomarker_tolerance: float = 0.5,
    progress: Callable[[float, float, str], None] | None = None,
    job_cache: str | Path | None = None,
) -> ExperimentResult:
    """Run the protocol for every spec; returns records and per-spot predictions.

    Parameters
    ----------
    x : ndarray
        Spectra ``(N, L)`` (TIC-normalised and cropped).
    labels : ndarray
        Class names ``(N,)``.
    patients, labs : ndarray
        ``(N,)`` patient ids and lab names (exactly two labs).
    specs : sequence of ModelSpec
    config : ProtocolConfig
    mz : ndarray or None
        ``(L,)`` m/z axis (for relevance on biomarkers and plots).
    biomarkers : ndarray or None
        True biomarker peak m/z (e.g. every isotope peak); with it each record gets
        ``relevance_on_biomarkers`` (fraction of |r| mass within ``±biomarker_tolerance`` Da).
    progress : callable or None
        ``progress(done, total, description)`` with work counted in spectrum-epochs.
    job_cache : path or None
        Keep every finished job there; a rerun (after a kill) takes them instead of training.

    Returns
    -------
    ExperimentResult
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    labels, patients, labs = (np.asarray(a).astype(str) for a in (labels, patients, labs))
    n = x.shape[0]
    for name, arr in (("labels", labels), ("patients", patients), ("labs", labs)):
        if arr.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    if not np.isfinite(x).all():
        raise ValueError("x contains NaN or Inf")
    lab_names = validate_cohort(labels, patients, labs, n_splits=max(config.n_splits, 2))
    cls = tuple(sorted(set(labels.tolist()))) if classes is None else tuple(classes)
    y = np.searchsorted(np.asarray(cls), labels).astype(np.int64)
    mzv = np.arange(x.shape[1], dtype=np.float64) if mz is None else np.asarray(mz, np.float64)
    if not specs:
        raise ValueError("specs must name at least one model")
    keys = [spec.key for spec in specs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"specs must have distinct keys (name + '+drr'), got {keys}")
    mask = None if biomarkers is None else biomarker_mask(mzv, biomarkers, biomarker_tolerance)
    folds = _folds(labels, patients, labs, config)
    plan = _plan(specs, folds, labs, lab_names, config)

    def where(lab: str, fold_sel: np.ndarray) -> np.ndarray:
        return np.flatnonzero((labs == lab) & fold_sel)

    # phase 1: validation jobs (grid specs, or all specs when refit=False)
    sel_jobs: list[Job] = []
    for fp in plan:
        spec, src, tgt, k = fp.spec, fp.fold.arm.source, fp.fold.arm.target, fp.fold.test_fold
        if config.refit and len(spec.grid) == 1:
            continue
        val_lab = tgt if config.validation == "target" else src
        for v in fp.inner_folds:
            train = where(src, (folds != k) & (folds != v))
            evals = {"val": where(val_lab, folds == v)}
            if not config.refit:
                evals["test"] = where(tgt, folds == k)
            for h in spec.grid:
                for s in config.seeds:
                    sel_jobs.append(
                        Job(
                            spec=spec,
                            hyper=h,
                            seed=s,
                            train=train,
                            evals=evals,
                            tag=JobTag(fp.fold, v),
                            relevance=not config.refit,
                        )
                    )
    final_jobs_planned = [] if not config.refit else plan
    total = sum(j.cost(config.train) for j in sel_jobs)
    total += sum(
        len(where(fp.fold.arm.source, _outside(folds, fp.fold.test_fold, config.n_splits)))
        * fp.spec.train_config(config.train).epochs
        * fp.spec.relative_cost
        * len(config.seeds)
        for fp in final_jobs_planned
    )
    done = [0.0]

    def tick(job: Job, fraction: float) -> None:
        done[0] += job.cost(config.train) * fraction
        if progress is not None:
            progress(done[0], total, job.spec.key)

    cohort = Cohort(x, y, len(cls))
    with JobRunner(cohort, config.train, workers=config.workers, cache_dir=job_cache) as runner:
        sel_res = runner.run(sel_jobs, on_progress=tick)
        chosen, fin_jobs = _final_jobs(plan, sel_res, config, folds, labs)
        fin_res = runner.run(fin_jobs, on_progress=tick)

    if config.refit:
        test_res = fin_res
    else:
        test_res = [r for r in sel_res if r.job.hyper == chosen[(r.job.spec.key, _fold_of(r))]]
    arms = assemble_arms(plan, test_res, chosen, config)
    records = make_records(arms, y, patients, labs, cls, mask, config)
    return ExperimentResult(
        records=tuple(records),
        arms=tuple(arms),
        classes=cls,
        labs=lab_names,
        mz=mzv,
        biomarkers=None if biomarkers is None else np.asarray(biomarkers, np.float64),
        config=config,
    )


def result_to_json(result: ExperimentResult) -> dict:
    """A JSON-ready summary of the experiment (records plus settings)."""
    cfg = asdict(replace(result.config))
    return {
        "records": list(result.records),
        "classes": list(result.classes),
        "labs": list(result.labs),
        "config": cfg,
    }
