"""A killed experiment resumes from its finished jobs, and a rerun gives the same records."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest

from doublebackprop.msi.experiment import jobs as jobs_module
from doublebackprop.msi.experiment.cache import JobCache
from doublebackprop.msi.experiment.config import ProtocolConfig
from doublebackprop.msi.experiment.plan import Cohort, Job, ModelSpec
from doublebackprop.msi.experiment.protocol import run_interlab
from doublebackprop.msi.models import IsotopeNet
from doublebackprop.msi.training import TrainConfig
from tests.msi.experiment.test_protocol import cohort


def _run(job_cache=None, progress=None):
    x, labels, patients, labs = cohort(patients_per_lab=6, spots=3, length=30)
    specs = [
        ModelSpec("isotopenet", partial(IsotopeNet, dropout=0.0), grid=(1e-2,)),
        ModelSpec("linear", None, grid=(2, 5)),
    ]
    cfg = ProtocolConfig(
        n_splits=3, refit=False, n_bootstrap=20, train=TrainConfig(epochs=1, batch_size=8)
    )
    res = run_interlab(
        x, labels, patients, labs, specs, config=cfg, job_cache=job_cache, progress=progress
    )
    return json.loads(json.dumps(list(res.records), default=float))


def test_same_seed_same_records():
    assert _run() == _run()


def test_killed_run_resumes_without_retraining_finished_jobs(tmp_path, monkeypatch):
    whole = _run()

    def kill(done: float, total: float, what: str) -> None:
        if done > 0.5 * total:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, progress=kill)
    finished = len(list(tmp_path.glob("*.pt")))
    assert finished > 0
    calls = []
    real = jobs_module._execute

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(jobs_module, "_execute", counting)
    resumed = _run(tmp_path)
    assert resumed == whole
    assert len(calls) + finished == len(list(tmp_path.glob("*.pt")))  # only the rest trained
    calls.clear()
    assert _run(tmp_path) == whole and not calls  # a finished run retrains nothing


def test_cache_keys_change_with_the_data(tmp_path):
    x = np.zeros((4, 3), np.float32)
    a = JobCache(tmp_path, Cohort(x, np.array([0, 1, 0, 1]), 2), TrainConfig())
    b = JobCache(tmp_path, Cohort(x + 1, np.array([0, 1, 0, 1]), 2), TrainConfig())
    job = Job(ModelSpec("linear", None, grid=(2,)), 2.0, 0, np.arange(2), {"test": np.arange(2, 4)})
    assert a._path(job) != b._path(job)
