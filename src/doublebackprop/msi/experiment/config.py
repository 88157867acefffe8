"""Settings of the inter-lab protocol, shared by the protocol and its result assembly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from doublebackprop.msi.training import TrainConfig

__all__ = ["PAPER_LAMBDAS", "ProtocolConfig", "Validation"]

PAPER_LAMBDAS = tuple(float(10.0**-e) for e in np.arange(2.0, 5.01, 0.5))  # 1e-2 … 1e-5
Validation = Literal["target", "source"]


@dataclass(frozen=True)
class ProtocolConfig:
    """Settings of the inter-lab experiment.

    Parameters
    ----------
    n_splits : int, default 5
        Patient-grouped folds (>= 3). ``1``: no folds — train on the whole source lab and test
        on the whole target lab (leave-one-lab-out; for tiny cohorts whose labs hold different
        patients); hyper-parameters are then fixed at each grid's first value.
    validation : {"target", "source"}, default "target"
        Where the validation spots for hyper-parameter choice come from (see module docstring).
    inner_folds : int, default 1
        Validation folds per outer fold (the paper's code used 3 of the 4). Scores are averaged.
    refit : bool, default True
        Retrain on all source folds but the test fold with the chosen hyper-parameter (the
        paper). ``False`` tests the model trained for validation (needs ``inner_folds == 1``;
        then every model, also those without a grid, trains on the same smaller set).
    train : TrainConfig
        Epochs, batch, lr, engine; ``l1``/``l2`` are set from each spec's λ.
    seeds : tuple of int
        Independent trainings per job; scores are the mean over seeds.
    fold_seed : int
    intralab : tuple of str
        Spec keys (``"isotopenet"``, ``"isotopenet+drr"``, …) also run intra-lab.
    n_bootstrap : int, default 1000
    workers : int, default 1
    """

    n_splits: int = 5
    validation: Validation = "target"
    inner_folds: int = 1
    refit: bool = True
    train: TrainConfig = field(default_factory=TrainConfig)
    seeds: tuple[int, ...] = (0,)
    fold_seed: int = 0
    intralab: tuple[str, ...] = ()
    n_bootstrap: int = 1000
    workers: int = 1

    def __post_init__(self) -> None:
        if self.validation not in ("target", "source"):
            raise ValueError(f"validation must be 'target' or 'source', got {self.validation!r}")
        if not isinstance(self.n_splits, int) or self.n_splits < 3 and self.n_splits != 1:
            raise ValueError(
                f"n_splits must be 1 (leave-one-lab-out) or an int >= 3 (test, "
                f"validation, training), got {self.n_splits!r}"
            )
        if self.n_splits == 1:
            if not self.refit or self.intralab:
                raise ValueError(
                    "n_splits=1 (leave-one-lab-out) needs refit=True and no intra-lab runs"
                )
        elif not 1 <= self.inner_folds <= self.n_splits - 2:
            raise ValueError(
                f"inner_folds must be in 1..{self.n_splits - 2}, got {self.inner_folds}"
            )
        if not self.refit and self.inner_folds != 1:
            raise ValueError("refit=False needs inner_folds == 1")
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
