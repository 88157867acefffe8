"""The inter-lab protocol and its metrics, on small in-memory cohorts."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from doublebackprop.msi.experiment import jobs as _jobs
from doublebackprop.msi.experiment import protocol as il
from doublebackprop.msi.experiment.metrics import balanced_accuracy, patient_vote, score_predictions
from doublebackprop.msi.experiment.protocol import (
    ModelSpec,
    ProtocolConfig,
    run_interlab,
    validate_cohort,
)
from doublebackprop.msi.models import IsotopeNet
from doublebackprop.msi.training import TrainConfig


def cohort(patients_per_lab=10, spots=4, length=40, seed=0, shared_patients=False):
    """Two labs; class peak at bin 10 (both labs), a lab/batch artefact at bin L-5 that follows
    the class in lab A and the opposite class in lab B."""
    rng = np.random.default_rng(seed)
    rows = []
    for li, lab in enumerate("AB"):
        for p in range(patients_per_lab):
            c = p % 2
            pid = f"P{p}" if shared_patients else f"{lab}{p}"
            for _ in range(spots):
                x = rng.random(length) * 0.5
                x[10] += 1.5 * c + rng.normal(0, 0.3)
                x[length - 5] += 2.0 * (c if li == 0 else 1 - c)
                rows.append((x, "ovary" if c else "breast", pid, lab))
    x = np.stack([r[0] for r in rows]).astype(np.float32)
    labels, patients, labs = (np.array([r[i] for r in rows]) for i in (1, 2, 3))
    return x, labels, patients, labs


def test_balanced_accuracy_and_votes():
    assert balanced_accuracy(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0])) == 0.5
    assert balanced_accuracy(np.array([1, 1]), np.array([1, 0]), num_classes=2) == 0.5
    ids, truth, voted = patient_vote(
        np.array([0, 0, 0, 1, 1]), np.array([0, 1, 1, 0, 1]), np.array(["a", "a", "a", "b", "b"]), 2
    )
    assert ids.tolist() == ["a", "b"] and truth.tolist() == [0, 1]
    assert voted.tolist() == [1, 0]  # b ties 1:1 → lowest class


def test_bootstrap_ci_contains_estimate_and_shrinks():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 5).astype(str)
    y = np.repeat(np.arange(40) % 2, 5)
    pred = np.where(rng.random(200) < 0.8, y, 1 - y)
    s = score_predictions(y, pred, groups, num_classes=2, n_bootstrap=300)
    assert s.spot_ci[0] <= s.spot <= s.spot_ci[1]
    assert s.patient_ci[0] <= s.patient <= s.patient_ci[1]
    assert s.n_patients == 40 and s.n_spots == 200
    perfect = score_predictions(y, y, groups, num_classes=2, n_bootstrap=50)
    assert perfect.spot == perfect.patient == 1.0 and perfect.spot_ci == (1.0, 1.0)
    # several seeds: the mean of the per-seed scores
    two = score_predictions(y, np.stack([y, 1 - y]), groups, num_classes=2, n_bootstrap=0)
    assert two.spot == 0.5


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(3, 6))
def test_folds_never_split_a_patient_and_jobs_are_lab_and_patient_disjoint(seed, n_splits):
    x, labels, patients, labs = cohort(
        patients_per_lab=2 * n_splits, spots=2, seed=seed % 7, shared_patients=seed % 2 == 0
    )
    for validation in ("target", "source"):
        cfg = ProtocolConfig(
            n_splits=n_splits, validation=validation, fold_seed=seed, inner_folds=1, refit=True
        )
        folds = il._folds(labels, patients, labs, cfg)
        for p in set(patients.tolist()):
            assert len(set(folds[patients == p].tolist())) == 1
        spec = ModelSpec("linear", None, grid=(2, 4))
        plan = il._plan([spec], folds, labs, ("A", "B"), cfg)
        assert {(fp.fold.arm.source, fp.fold.arm.target) for fp in plan} == {("A", "B"), ("B", "A")}
        for fp in plan:
            assert fp.fold.test_fold not in fp.inner_folds


def _capture_jobs(monkeypatch):
    seen = []
    real = _jobs.JobRunner.run

    def spy(self, jobs, on_progress=None):
        seen.extend(jobs)
        return real(self, jobs, on_progress)

    monkeypatch.setattr(_jobs.JobRunner, "run", spy)
    return seen


@pytest.mark.parametrize("validation", ["target", "source"])
def test_protocol_jobs_respect_labs_patients_and_validation_source(monkeypatch, validation):
    x, labels, patients, labs = cohort(shared_patients=True)
    jobs = _capture_jobs(monkeypatch)
    cfg = ProtocolConfig(validation=validation, n_bootstrap=20, intralab=("linear",))
    res = run_interlab(
        x, labels, patients, labs, [ModelSpec("linear", None, grid=(1, 3, 10))], config=cfg
    )
    assert jobs
    for job in jobs:
        src, tgt = job.tag.fold.arm.source, job.tag.fold.arm.target
        assert set(labs[job.train].tolist()) == {src}
        for name, idx in job.evals.items():
            assert not set(patients[idx]) & set(patients[job.train]), name
        if "test" in job.evals:
            assert set(labs[job.evals["test"]].tolist()) == {tgt}
        if "val" in job.evals:
            want = tgt if validation == "target" else src
            assert set(labs[job.evals["val"]].tolist()) == {want}
    # every spot is tested exactly once per inter-lab model
    arms = [a for a in res.arms if a.protocol == "interlab"]
    idx = np.concatenate([a.index for a in arms])
    assert sorted(idx.tolist()) == list(range(len(x)))
    recs = {(r["protocol"], r["direction"]): r for r in res.records}
    assert set(recs) == {
        ("interlab", "A->B"),
        ("interlab", "B->A"),
        ("interlab", "pooled"),
        ("intralab", "A->A"),
        ("intralab", "B->B"),
        ("intralab", "within-lab"),
    }
    assert all(r["validation"] == validation for r in res.records)
    assert len(recs[("interlab", "pooled")]["n_features"]) == 10  # one choice per fold × dir
    # the artefact flips between labs: within-lab is easy, the linear model still transfers
    # through the shared peak only if it picked it; both are valid balanced accuracies
    for r in res.records:
        assert 0 <= r["spot_balanced_accuracy"] <= 1 and 0 <= r["patient_balanced_accuracy"] <= 1
    assert recs[("intralab", "within-lab")]["spot_balanced_accuracy"] > 0.9


def test_selection_picks_best_validation_score_earliest_on_ties():
    spec = ModelSpec("isotopenet", IsotopeNet, grid=(1e-1, 1e-2, 1e-3))
    fake = [
        _jobs.JobResult(
            job=_jobs.Job(spec, h, 0, np.zeros(1), {}),
            outcome=_jobs.JobOutcome(pred={}, scores={"val": s}, relevance=None, seconds=0),
        )
        for h, s in ((1e-1, 0.6), (1e-2, 0.8), (1e-3, 0.8))
    ]
    assert il._select(spec, fake) == 1e-2


def test_end_to_end_networks_no_refit_records_and_relevance():
    x, labels, patients, labs = cohort(patients_per_lab=6, spots=3, length=30)
    iso = partial(IsotopeNet, dropout=0.0)
    specs = [
        ModelSpec("isotopenet", iso, epochs=2),  # overrides the protocol's epochs
        ModelSpec("isotopenet", iso, grid=(1e-2, 1e-1)),
        ModelSpec("linear", None, grid=(2, 5)),
    ]
    cfg = ProtocolConfig(
        n_splits=3, refit=False, n_bootstrap=10, train=TrainConfig(epochs=1, batch_size=8)
    )
    with pytest.raises(ValueError, match="epochs"):
        ModelSpec("isotopenet", iso, epochs=0)
    mz = np.linspace(700, 729, 30)
    calls = []
    res = run_interlab(
        x,
        labels,
        patients,
        labs,
        specs,
        config=cfg,
        mz=mz,
        biomarkers=np.array([mz[10]]),
        biomarker_tolerance=0.4,
        progress=lambda done, total, what: calls.append((done, total, what)),
    )
    assert calls and calls[-1][0] == pytest.approx(calls[-1][1])  # progress reaches 100 %
    assert all(b[0] >= a[0] for a, b in zip(calls, calls[1:]))
    pooled = [r for r in res.records if r["direction"] == "pooled"]
    assert [(r["model"], r["drr"]) for r in pooled] == [
        ("isotopenet", False),
        ("isotopenet", True),
        ("linear", False),
    ]
    for r in pooled:
        assert 0 <= r["relevance_on_biomarkers"] <= 1
        assert 0 < r["relevance_top1pct_mass"] <= 1 and 0 <= r["relevance_gini"] <= 1
    drr = next(r for r in pooled if r["drr"])
    assert set(drr["lambda"]) <= {1e-2, 1e-1} and len(drr["lambda"]) == 6
    assert [r.get("epochs") for r in pooled] == [2, 1, None]

    x32 = x.astype(np.float32)
    cohort_ = _jobs.Cohort(x32, (labels == "ovary").astype(np.int64), 2)
    job = _jobs.Job(specs[0], 0.0, 0, np.arange(12), {"test": np.arange(12, 18)})
    history = _jobs._execute(job, cohort_, cfg.train).history
    assert len(history) == 2  # the spec's epochs, not the protocol's 1
    assert (
        next(r for r in pooled if r["model"] == "isotopenet" and not r["drr"])["validation"]
        == "target"
    )  # no-refit: even λ = 0 models validate (same training set)


@pytest.mark.slow  # spawns two worker processes (~10 s idle machine)
def test_workers_give_identical_results_to_in_process():
    x, labels, patients, labs = cohort(patients_per_lab=6, spots=2, length=30)
    specs = [
        ModelSpec("isotopenet", partial(IsotopeNet, dropout=0.0), grid=(1e-2,)),
        ModelSpec("linear", None, grid=(3,)),
    ]
    out = []
    for workers in (1, 2):
        cfg = ProtocolConfig(
            n_splits=3, n_bootstrap=0, workers=workers, train=TrainConfig(epochs=1, batch_size=6)
        )
        out.append(run_interlab(x, labels, patients, labs, specs, config=cfg))
    for a, b in zip(*(r.arms for r in out)):
        np.testing.assert_array_equal(a.index, b.index)
        np.testing.assert_array_equal(a.pred, b.pred)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda lb, p, lab: (lb, p, np.full_like(lab, "")), "lab"),
        (lambda lb, p, lab: (lb, np.full_like(p, ""), lab), "patient"),
        (lambda lb, p, lab: (np.full_like(lb, "breast"), p, lab), "single class"),
        (lambda lb, p, lab: (lb, p, np.where(lab == "A", "A", "C")), None),  # still 2 labs: ok
        (lambda lb, p, lab: (lb, p, np.full_like(lab, "A")), "two labs"),
    ],
)
def test_bad_cohorts_fail_before_training(mutate, message):
    x, labels, patients, labs = cohort()
    lb, p, lab = mutate(labels, patients, labs)
    if message is None:
        assert validate_cohort(lb, p, lab, n_splits=5) == ("A", "C")
        return
    with pytest.raises(ValueError, match=message):
        validate_cohort(lb, p, lab, n_splits=5)


def test_lab_without_a_class_and_negative_lambda():
    x, labels, patients, labs = cohort()
    drop = ~((labs == "B") & (labels == "ovary"))
    with pytest.raises(ValueError, match="lab 'B' has no spots of class 'ovary'"):
        run_interlab(
            x[drop],
            labels[drop],
            patients[drop],
            labs[drop],
            [ModelSpec("linear", None, grid=(3,))],
            config=ProtocolConfig(),
        )
    with pytest.raises(ValueError, match="λ must be"):
        ModelSpec("isotopenet", IsotopeNet, grid=(-1e-3,))
    with pytest.raises(ValueError, match="λ = 0 and λ > 0"):
        ModelSpec("isotopenet", IsotopeNet, grid=(0.0, 1e-3))
    with pytest.raises(ValueError, match="distinct keys"):
        spec = ModelSpec("linear", None, grid=(3,))
        run_interlab(x, labels, patients, labs, [spec, spec], config=ProtocolConfig())
    with pytest.raises(ValueError, match="inner_folds"):
        ProtocolConfig(inner_folds=4)
    with pytest.raises(ValueError, match="validation"):
        ProtocolConfig(validation="test")  # type: ignore[arg-type]


def test_leave_one_lab_out_mode_uses_whole_labs(monkeypatch):
    x, labels, patients, labs = cohort(patients_per_lab=2, spots=2)
    jobs = _capture_jobs(monkeypatch)
    cfg = ProtocolConfig(n_splits=1, n_bootstrap=5)
    res = run_interlab(
        x, labels, patients, labs, [ModelSpec("linear", None, grid=(2, 50))], config=cfg
    )
    final = [j for j in jobs if "test" in j.evals]
    assert len(final) == 2 and all(j.hyper == 2 for j in final)  # first grid value, no search
    for j in final:
        src, tgt = j.tag.fold.arm.source, j.tag.fold.arm.target
        np.testing.assert_array_equal(j.train, np.flatnonzero(labs == src))
        np.testing.assert_array_equal(j.evals["test"], np.flatnonzero(labs == tgt))
    assert {r["direction"] for r in res.records} == {"A->B", "B->A", "pooled"}
    x2, labels2, patients2, labs2 = cohort(patients_per_lab=2, spots=2, shared_patients=True)
    with pytest.raises(ValueError, match="in both labs"):
        run_interlab(
            x2, labels2, patients2, labs2, [ModelSpec("linear", None, grid=(2,))], config=cfg
        )
    with pytest.raises(ValueError, match="n_splits"):
        ProtocolConfig(n_splits=2)
