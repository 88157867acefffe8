"""Assembling the predictions of the protocol's jobs into arms and JSON-ready records."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from doublebackprop.msi.experiment.config import ProtocolConfig
from doublebackprop.msi.experiment.interpret import RelevanceSummary
from doublebackprop.msi.experiment.metrics import score_predictions
from doublebackprop.msi.experiment.plan import ArmKey, FoldKey, FoldPlan, JobResult, ModelSpec

__all__ = ["Arm", "assemble_arms", "make_records", "record_label"]


@dataclass(frozen=True)
class Arm:
    """The predictions of one (model, protocol, direction) arm over all its test folds."""

    spec: ModelSpec
    protocol: str  # "interlab" | "intralab"
    source: str
    target: str
    index: np.ndarray  # (n,) rows of the cohort
    pred: np.ndarray  # (S, n) predicted class per seed
    chosen: tuple[float, ...]  # chosen hyper-parameter per outer fold
    relevance: RelevanceSummary | None
    seconds: float

    @property
    def direction(self) -> str:
        return f"{self.source}->{self.target}"


def _fold(r: JobResult) -> FoldKey:
    assert r.job.tag is not None  # every protocol job is tagged
    return r.job.tag.fold


def assemble_arms(
    plan: list[FoldPlan],
    results: list[JobResult],
    chosen: dict[tuple[str, FoldKey], float],
    cfg: ProtocolConfig,
) -> list[Arm]:
    """The test predictions of every (model, arm), in plan order, seeds stacked.

    Parameters
    ----------
    plan : list of FoldPlan
    results : list of JobResult
        The test jobs (refits, or the validation jobs that were chosen).
    chosen : dict
        ``(model key, FoldKey) → hyper-parameter`` picked per outer fold.
    cfg : ProtocolConfig
    """
    arms = []
    keys: list[tuple[ModelSpec, ArmKey]] = []
    for fp in plan:
        if (fp.spec, fp.fold.arm) not in keys:
            keys.append((fp.spec, fp.fold.arm))
    for spec, arm in keys:
        mine = [r for r in results if r.job.spec == spec and _fold(r).arm == arm]
        mine.sort(key=lambda r: (_fold(r).test_fold, r.job.seed))
        index: list[np.ndarray] = []
        preds: dict[int, list[np.ndarray]] = {s: [] for s in cfg.seeds}
        rel: RelevanceSummary | None = None
        secs = 0.0
        for r in mine:
            secs += r.seconds
            preds[r.job.seed].append(r.pred["test"])
            if r.job.seed == cfg.seeds[0]:
                index.append(r.job.evals["test"])
                if r.relevance is not None:
                    rel = r.relevance if rel is None else rel.merge(r.relevance)
        idx = np.concatenate(index) if index else np.zeros(0, np.int64)
        pred = (
            np.stack([np.concatenate(preds[s]) for s in cfg.seeds]) if index else np.zeros((1, 0))
        )
        picks = tuple(chosen[(spec.key, FoldKey(arm, k))] for k in range(cfg.n_splits))
        arms.append(
            Arm(
                spec=spec,
                protocol=arm.protocol,
                source=arm.source,
                target=arm.target,
                index=idx,
                pred=pred,
                chosen=picks,
                relevance=rel,
                seconds=secs,
            )
        )
    return arms


def _record(
    spec: ModelSpec,
    protocol: str,
    direction: str,
    arms: list[Arm],
    y,
    patients,
    labs,
    classes,
    mask,
    cfg: ProtocolConfig,
) -> dict:
    idx = np.concatenate([a.index for a in arms])
    pred = np.concatenate([a.pred for a in arms], axis=1)
    groups = np.char.add(np.char.add(patients[idx], "@"), labs[idx])
    sc = score_predictions(
        y[idx],
        pred,
        groups,
        num_classes=len(classes),
        n_bootstrap=cfg.n_bootstrap,
        seed=cfg.fold_seed,
    )
    rel = None
    for a in arms:
        if a.relevance is not None:
            rel = a.relevance if rel is None else rel.merge(a.relevance)
    rec = {
        "model": spec.name,
        "drr": spec.drr,
        "protocol": protocol,
        "direction": direction,
        "validation": cfg.validation if (len(spec.grid) > 1 or not cfg.refit) else "none",
        "spot_balanced_accuracy": sc.spot,
        "spot_ci": list(sc.spot_ci),
        "patient_balanced_accuracy": sc.patient,
        "patient_ci": list(sc.patient_ci),
        "n_spots": sc.n_spots,
        "n_patients": sc.n_patients,
        spec.hyper_name: [c for a in arms for c in a.chosen],
        "seeds": list(cfg.seeds),
    }
    if spec.build is not None:
        rec["epochs"] = spec.train_config(cfg.train).epochs
    if spec.drr:
        rec["lambda_convention"] = cfg.train.penalty_reduction
        rec["drr_relevance"] = cfg.train.relevance
    if rel is not None:
        rec["relevance_top1pct_mass"] = rel.top_fraction_mean
        rec["relevance_gini"] = rel.gini_mean
        if mask is not None:
            rec["relevance_on_biomarkers"] = rel.mass_fraction(mask)
    return rec


def make_records(arms: list[Arm], y, patients, labs, classes, mask, cfg) -> list[dict]:
    """Per model: its directions, then pooled; inter-lab before intra-lab.

    Parameters
    ----------
    arms : list of Arm
    y : ndarray
        ``(N,)`` class indices of the cohort.
    patients, labs : ndarray
        ``(N,)`` patient ids and labs.
    classes : sequence of str
    mask : ndarray or None
        ``(L,)`` bins within the biomarker tolerance (for ``relevance_on_biomarkers``).
    cfg : ProtocolConfig
    """
    out = []
    groups: dict[tuple, list[Arm]] = {}
    for a in arms:
        groups.setdefault((a.spec, a.protocol), []).append(a)
    for (spec, protocol), members in groups.items():
        for a in members:
            out.append(
                _record(spec, protocol, a.direction, [a], y, patients, labs, classes, mask, cfg)
            )
        name = "pooled" if protocol == "interlab" else "within-lab"
        out.append(_record(spec, protocol, name, members, y, patients, labs, classes, mask, cfg))
    return out


def record_label(rec: dict) -> str:
    """``"isotopenet + DRR"``: how tables and plots name a record's model."""
    return rec["model"] + (" + DRR" if rec["drr"] else "")
