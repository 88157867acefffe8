"""What the protocol plans: the models (:class:`ModelSpec`), its arms and folds, the jobs and
their outcomes — plain frozen records, no behaviour beyond small derived properties."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
from torch import nn

from doublebackprop.msi.experiment.interpret import RelevanceSummary
from doublebackprop.msi.training import TrainConfig

__all__ = [
    "ArmKey",
    "Cohort",
    "FoldKey",
    "FoldPlan",
    "Job",
    "JobOutcome",
    "JobResult",
    "JobTag",
    "ModelSpec",
]


@dataclass(frozen=True)
class ModelSpec:
    """A model of the experiment: a name, how to build it, and its hyper-parameter grid.

    ``build(input_length=L, num_classes=K)`` returns a network (it must be picklable for worker
    processes: a class or a :func:`functools.partial` of one); ``build=None`` is the linear
    baseline, whose grid holds numbers of m/z bins. For networks the grid holds DRR's λ
    (λ₁ = λ₂ = λ; 0 = plain cross-entropy). ``epochs`` overrides the protocol's training
    epochs for this model (None: use them).

    Examples
    --------
    >>> from doublebackprop.msi.models import IsotopeNet
    >>> ModelSpec("isotopenet", IsotopeNet, grid=(1e-2, 1e-3)).key
    'isotopenet+drr'
    """

    name: str
    build: Callable[..., nn.Module] | None
    grid: tuple = (0.0,)
    relative_cost: float = 1.0
    epochs: int | None = None

    def __post_init__(self) -> None:
        if self.epochs is not None and (not isinstance(self.epochs, int) or self.epochs < 1):
            raise ValueError(f"ModelSpec {self.name!r}: epochs must be an int >= 1 or None")
        grid = tuple(self.grid)
        if not grid:
            raise ValueError(f"ModelSpec {self.name!r}: grid must not be empty")
        for g in grid:
            if not isinstance(g, (int, float)) or not np.isfinite(g) or g < 0:
                what = "λ" if self.build is not None else "number of bins"
                raise ValueError(
                    f"ModelSpec {self.name!r}: {what} must be a finite number >= 0, got {g!r}"
                )
        if self.build is None and min(grid) < 1:
            raise ValueError(f"ModelSpec {self.name!r}: numbers of bins must be >= 1")
        if self.build is not None and len(grid) > 1 and min(grid) == 0:
            raise ValueError(
                f"ModelSpec {self.name!r}: mix of λ = 0 and λ > 0 in one grid; "
                "make two specs (with and without DRR)"
            )
        object.__setattr__(self, "grid", grid)

    @property
    def drr(self) -> bool:
        return self.build is not None and max(self.grid) > 0

    @property
    def key(self) -> str:
        return self.name + ("+drr" if self.drr else "")

    def train_config(self, cfg: TrainConfig) -> TrainConfig:
        """The protocol's training settings with this model's epochs."""
        return cfg if self.epochs is None else replace(cfg, epochs=self.epochs)

    @property
    def hyper_name(self) -> str:
        return "n_features" if self.build is None else "lambda"


@dataclass(frozen=True)
class ArmKey:
    """One arm of the protocol: train in ``source``, test in ``target`` (equal for intra-lab)."""

    protocol: str  # "interlab" | "intralab"
    source: str
    target: str


@dataclass(frozen=True)
class FoldKey:
    """One outer fold of an arm: the patients of fold ``test_fold`` are tested."""

    arm: ArmKey
    test_fold: int


@dataclass(frozen=True)
class JobTag:
    """Where a job belongs: its outer fold, and the validation fold it is scored on (None for a
    refit on all training folds)."""

    fold: FoldKey
    val_fold: int | None = None


@dataclass(frozen=True)
class FoldPlan:
    """What the protocol runs for one model on one outer fold."""

    spec: ModelSpec
    fold: FoldKey
    inner_folds: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class Cohort:
    """The data every job reads: spectra ``x`` ``(N, L)``, class indices ``y`` ``(N,)``."""

    x: np.ndarray
    y: np.ndarray
    num_classes: int


@dataclass(frozen=True, eq=False)
class Job:
    """One training (or linear fit) on rows ``train``, predicting each of ``evals``' row sets."""

    spec: ModelSpec
    hyper: float
    seed: int
    train: np.ndarray
    evals: dict[str, np.ndarray]
    tag: JobTag | None = None
    relevance: bool = False

    def cost(self, cfg: TrainConfig) -> float:
        """Relative work of the job (spectra × epochs × model cost), for progress and scheduling."""
        if self.spec.build is None:
            return float(len(self.train))
        return float(
            len(self.train)
            * max(self.spec.train_config(cfg).epochs, 1)
            * self.spec.relative_cost
            * (2.0 if self.hyper > 0 else 1.0)
        )


@dataclass(frozen=True, eq=False)
class JobOutcome:
    """What a job produced: predicted classes and balanced accuracy per eval set, the relevance
    summary on ``test`` (when asked for), run time and the training history."""

    pred: dict[str, np.ndarray]
    scores: dict[str, float]
    relevance: RelevanceSummary | None
    seconds: float
    history: tuple = field(default=())


@dataclass(frozen=True, eq=False)
class JobResult:
    """A job with its outcome."""

    job: Job
    outcome: JobOutcome

    @property
    def pred(self) -> dict[str, np.ndarray]:
        return self.outcome.pred

    @property
    def scores(self) -> dict[str, float]:
        return self.outcome.scores

    @property
    def relevance(self) -> RelevanceSummary | None:
        return self.outcome.relevance

    @property
    def seconds(self) -> float:
        return self.outcome.seconds
