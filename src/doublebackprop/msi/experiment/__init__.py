"""The inter-lab tumour-typing experiment: protocol, training jobs, metrics, relevance
interpretation and the report. Data flows one way: ``config`` → ``plan`` → ``jobs`` → ``results`` →
``protocol`` → ``report``; ``metrics`` and ``interpret`` are used along the way."""

from doublebackprop.msi.experiment.config import PAPER_LAMBDAS, ProtocolConfig
from doublebackprop.msi.experiment.metrics import Score, balanced_accuracy, score_predictions
from doublebackprop.msi.experiment.plan import ModelSpec
from doublebackprop.msi.experiment.protocol import ExperimentResult, run_interlab
from doublebackprop.msi.experiment.results import Arm

__all__ = [
    "PAPER_LAMBDAS",
    "Arm",
    "ExperimentResult",
    "ModelSpec",
    "ProtocolConfig",
    "Score",
    "balanced_accuracy",
    "run_interlab",
    "score_predictions",
]
