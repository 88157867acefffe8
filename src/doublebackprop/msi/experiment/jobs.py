"""Independent training jobs of the inter-lab protocol, run in-process or in a process pool.

A job trains one model (a spec at one hyper-parameter value and seed) on some rows of the cohort
and predicts others. Worker processes are started with ``spawn`` (safe with torch's thread
pools), use one thread each, and read the spectra from a memory-mapped ``.npy`` file, so the
cohort is neither copied per job nor pickled.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np
import torch

from doublebackprop.msi.experiment.cache import JobCache
from doublebackprop.msi.experiment.interpret import (
    RelevanceSummary,
    linear_relevance,
    model_relevance,
)
from doublebackprop.msi.experiment.metrics import balanced_accuracy
from doublebackprop.msi.experiment.plan import Cohort, Job, JobOutcome, JobResult
from doublebackprop.msi.models import LinearBaseline
from doublebackprop.msi.training import TrainConfig, predict_logits, train_model

__all__ = ["JobRunner", "run_jobs"]

logger = logging.getLogger(__name__)


_WORKER: dict[str, Any] = {}


def _execute(
    job: Job, cohort: Cohort, cfg: TrainConfig, report: Callable[[float], None] | None = None
) -> JobOutcome:
    """Train/fit, predict every eval set, summarise relevance; ``report(fraction)`` per epoch."""
    x, y, k = cohort.x, cohort.y, cohort.num_classes
    t0 = time.perf_counter()
    xt, yt = np.asarray(x[job.train]), y[job.train]
    pred: dict[str, np.ndarray] = {}
    rel = None
    history: tuple = ()
    test = job.evals.get("test")
    if job.spec.build is None and len(np.unique(yt)) < 2:
        # a tiny cohort can leave one class out of a training fold: predict the class seen
        logger.warning("%s: training fold holds one class only; predicting it", job.spec.key)
        for name, idx in job.evals.items():
            pred[name] = np.full(len(idx), yt[0] if len(yt) else 0, dtype=np.int64)
    elif job.spec.build is None:
        fit = LinearBaseline(grid=(int(job.hyper),)).fit(xt, yt)
        for name, idx in job.evals.items():
            pred[name] = fit.predict(np.asarray(x[idx])) if len(idx) else np.zeros(0, np.int64)
        if job.relevance and test is not None and len(test):
            rel = RelevanceSummary.from_relevance(
                linear_relevance(fit, np.asarray(x[test]), y[test]), y[test], k
            )
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(job.seed)
            model = job.spec.build(input_length=x.shape[1], num_classes=k)
        run_cfg = replace(
            job.spec.train_config(cfg), l1=float(job.hyper), l2=float(job.hyper), seed=job.seed
        )
        res = train_model(
            model,
            torch.from_numpy(xt),
            torch.from_numpy(yt),
            config=run_cfg,
            num_classes=k,
            callback=None if report is None else (lambda st, total: report(1.0 / max(total, 1))),
        )
        history = res.history
        for name, idx in job.evals.items():
            logits = predict_logits(model, np.asarray(x[idx])) if len(idx) else torch.zeros(0, k)
            pred[name] = logits.argmax(1).numpy()
        if job.relevance and test is not None and len(test):
            r = model_relevance(model, np.asarray(x[test]), y[test], engine=cfg.engine)
            rel = RelevanceSummary.from_relevance(r, y[test], k)
    scores = {
        name: balanced_accuracy(y[idx], pred[name], num_classes=k)
        for name, idx in job.evals.items()
        if len(idx)
    }
    return JobOutcome(pred, scores, rel, time.perf_counter() - t0, history)


def _init_worker(path: str, y: np.ndarray, num_classes: int, queue: object) -> None:
    torch.set_num_threads(1)
    _WORKER["cohort"] = Cohort(np.load(path, mmap_mode="r"), y, num_classes)
    _WORKER["queue"] = queue


def _run_in_worker(index: int, job: Job, cfg: TrainConfig) -> JobOutcome:
    queue = _WORKER["queue"]
    return _execute(job, _WORKER["cohort"], cfg, report=lambda f: queue.put((index, f)))


class JobRunner:
    """Runs batches of jobs in-process or in one pool of ``workers`` spawned processes.

    Use as a context manager so the pool (and the memory-mapped cohort) is created once for
    all batches and removed afterwards. With ``cache_dir`` every finished job's outcome is kept
    there (:class:`~.cache.JobCache`) and a rerun takes it instead of training again.

    Parameters
    ----------
    cohort : Cohort
    cfg : TrainConfig
    workers : int, default 1
    cache_dir : path or None
        Where finished jobs are kept (see :class:`~doublebackprop.msi.experiment.cache.JobCache`).
    """

    def __init__(
        self,
        cohort: Cohort,
        cfg: TrainConfig,
        *,
        workers: int = 1,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        self.cohort, self.cfg, self.workers = cohort, cfg, workers
        self.cache = None if cache_dir is None else JobCache(cache_dir, cohort, cfg)
        self._pool: ProcessPoolExecutor | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._queue: object = None

    def __enter__(self) -> JobRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            import multiprocessing as mp

            self._tmp = tempfile.TemporaryDirectory(prefix="dbp-cohort-")
            path = os.path.join(self._tmp.name, "x.npy")
            np.save(path, np.ascontiguousarray(self.cohort.x, dtype=np.float32))
            ctx = mp.get_context("spawn")
            self._queue = ctx.Queue()
            init = (path, self.cohort.y, self.cohort.num_classes, self._queue)
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=ctx,
                initializer=_init_worker,
                initargs=init,
            )
        return self._pool

    def run(
        self, jobs: Sequence[Job], on_progress: Callable[[Job, float], None] | None = None
    ) -> list[JobResult]:
        """Run ``jobs`` (largest first across the workers); results in job order.

        ``on_progress(job, fraction)`` is called after every training epoch and when a job
        ends, with the fraction of that job done since the last call (they sum to 1).
        """
        out: list[JobResult | None] = [None] * len(jobs)
        done = [0.0] * len(jobs)

        def advance(i: int, fraction: float) -> None:
            fraction = min(fraction, 1.0 - done[i])
            done[i] += fraction
            if on_progress is not None and fraction > 0:
                on_progress(jobs[i], fraction)

        def store(i: int, outcome: JobOutcome, *, new: bool = True) -> None:
            out[i] = JobResult(job=jobs[i], outcome=outcome)
            if new and self.cache is not None:
                self.cache.put(jobs[i], outcome)
            advance(i, 1.0)

        todo = []
        for i, job in enumerate(jobs):  # jobs a killed run finished are not trained again
            cached = None if self.cache is None else self.cache.get(job)
            if cached is None:
                todo.append(i)
            else:
                store(i, cached, new=False)

        if self.workers <= 1 or len(todo) <= 1:
            for i in todo:
                # ≤ 95 % per epochs: evaluation and relevance finish the job
                report = partial(lambda i, f: advance(i, 0.95 * f), i)
                store(i, _execute(jobs[i], self.cohort, self.cfg, report=report))
            return out  # type: ignore[return-value]
        pool = self._get_pool()
        order = sorted(todo, key=lambda i: -jobs[i].cost(self.cfg))
        pending = {
            pool.submit(partial(_run_in_worker, cfg=self.cfg), i, _lean(jobs[i])): i for i in order
        }
        while pending:
            finished, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            self._drain(advance)
            for fut in finished:
                store(pending.pop(fut), fut.result())
        return out  # type: ignore[return-value]

    def _drain(self, advance: Callable[[int, float], None]) -> None:
        import queue as queue_mod

        while True:
            try:
                i, fraction = self._queue.get_nowait()  # type: ignore[attr-defined]
            except queue_mod.Empty:
                return
            advance(i, 0.95 * fraction)


def run_jobs(
    jobs: Sequence[Job],
    cohort: Cohort,
    cfg: TrainConfig,
    *,
    workers: int = 1,
    on_progress: Callable[[Job, float], None] | None = None,
) -> list[JobResult]:
    """One batch of jobs (see :class:`JobRunner`).

    Parameters
    ----------
    jobs : sequence of Job
    cohort : Cohort
        The spectra and labels every job reads.
    cfg : TrainConfig
        Training settings (each job sets λ and its seed).
    workers : int, default 1
        Processes; 1 runs in this process.
    on_progress : callable or None
        ``on_progress(job, fraction)``, see :meth:`JobRunner.run`.
    """
    with JobRunner(cohort, cfg, workers=workers) as runner:
        return runner.run(jobs, on_progress)


def _lean(job: Job) -> Job:
    """The job as sent to a worker (arrays as int64, nothing else)."""
    return replace(
        job,
        train=np.asarray(job.train, np.int64),
        evals={k: np.asarray(v, np.int64) for k, v in job.evals.items()},
    )
