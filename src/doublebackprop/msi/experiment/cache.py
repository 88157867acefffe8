"""Finished jobs kept on disk, so that a killed experiment resumes without retraining them.

Each outcome is stored under a key that hashes everything the job's result depends on: the
spectra and labels, the model (name, builder, grid, epochs), the hyper-parameter, the seed, the
training and evaluation rows, and the training settings. A changed input is a new key, never a
stale result. Files are written atomically and read with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from doublebackprop.common.training import load_checkpoint, save_checkpoint
from doublebackprop.msi.experiment.interpret import RelevanceSummary
from doublebackprop.msi.experiment.plan import Cohort, Job, JobOutcome
from doublebackprop.msi.training import EpochStats, TrainConfig

__all__ = ["JobCache"]

_FIELDS = ("sum_r", "sum_abs", "count", "top_fraction", "gini")


class JobCache:
    """Outcomes of finished jobs in ``directory`` (see the module docstring)."""

    def __init__(self, directory: str | Path, cohort: Cohort, cfg: TrainConfig) -> None:
        self.directory = Path(directory)
        h = hashlib.sha256()
        for a in (np.ascontiguousarray(cohort.x), np.ascontiguousarray(cohort.y)):
            h.update(str((a.dtype, a.shape)).encode())
            h.update(memoryview(a).cast("B"))
        h.update(str(cohort.num_classes).encode())
        h.update(json.dumps(asdict(cfg), sort_keys=True).encode())
        self._base = h.hexdigest()

    def _path(self, job: Job) -> Path:
        s = job.spec
        h = hashlib.sha256(self._base.encode())
        h.update(repr((s.name, repr(s.build), s.grid, s.epochs, s.relative_cost)).encode())
        h.update(repr((float(job.hyper), int(job.seed), bool(job.relevance))).encode())
        for name, idx in [("train", job.train), *sorted(job.evals.items())]:
            h.update(name.encode())
            h.update(np.ascontiguousarray(idx, dtype=np.int64).tobytes())
        return self.directory / f"{h.hexdigest()[:40]}.pt"

    def get(self, job: Job) -> JobOutcome | None:
        """The stored outcome of ``job``, or None."""
        path = self._path(job)
        if not path.is_file():
            return None
        state = load_checkpoint(path)
        rel = state["relevance"]
        return JobOutcome(
            pred={k: v.numpy() for k, v in state["pred"].items()},
            scores=dict(state["scores"]),
            relevance=None
            if rel is None
            else RelevanceSummary(**{k: rel[k].numpy() for k in _FIELDS}),
            seconds=float(state["seconds"]),
            history=tuple(EpochStats(**h) for h in state["history"]),
        )

    def put(self, job: Job, outcome: JobOutcome) -> None:
        """Store ``outcome`` for ``job`` (atomically)."""
        rel = outcome.relevance
        save_checkpoint(
            {
                "pred": {k: torch.from_numpy(np.asarray(v)) for k, v in outcome.pred.items()},
                "scores": {k: float(v) for k, v in outcome.scores.items()},
                "relevance": None
                if rel is None
                else {k: torch.from_numpy(np.asarray(getattr(rel, k))) for k in _FIELDS},
                "seconds": float(outcome.seconds),
                "history": [asdict(h) for h in outcome.history],
            },
            self._path(job),
        )
