"""Saliency, alignment and adversarial robustness (Etmann, Lunz, Maass & Schönlieb, ICML 2019).

>>> from doublebackprop import robustness as rb
>>> a = rb.alignment(model, x)                                            # doctest: +SKIP
>>> r_lin = rb.linearized_distance(model, x)                              # doctest: +SKIP
>>> d = rb.minimal_distance(model, x, y, bounds=(0.0, 1.0), norm=2)        # doctest: +SKIP
"""

from doublebackprop.robustness.alignment import (
    AlignmentReport,
    alignment,
    alignment_report,
    bias_term,
    cosine_alignment,
    linearized_distance,
    saliency,
)
from doublebackprop.robustness.attacks import (
    DDN,
    PGD,
    Attack,
    AttackResult,
    CarliniWagner,
    DeepFool,
    GaussianSmoothing,
    HopSkipJump,
    MinimalPGD,
    RandomDirections,
    Transfer,
    madry_pgd,
)
from doublebackprop.robustness.ensemble import (
    EnsembleResult,
    RobustnessWarning,
    default_attacks,
    ensemble_attack,
    minimal_distance,
    refine_to_boundary,
    robust_accuracy,
)
from doublebackprop.robustness.norms import L2, Linf, Norm
from doublebackprop.robustness.statistics import DistanceSummary, median_ci, summarize_distances

__all__ = [
    "DDN",
    "L2",
    "PGD",
    "AlignmentReport",
    "Attack",
    "AttackResult",
    "CarliniWagner",
    "DistanceSummary",
    "DeepFool",
    "EnsembleResult",
    "GaussianSmoothing",
    "HopSkipJump",
    "Linf",
    "MinimalPGD",
    "Norm",
    "RandomDirections",
    "RobustnessWarning",
    "Transfer",
    "alignment",
    "alignment_report",
    "bias_term",
    "cosine_alignment",
    "default_attacks",
    "ensemble_attack",
    "linearized_distance",
    "madry_pgd",
    "median_ci",
    "minimal_distance",
    "refine_to_boundary",
    "robust_accuracy",
    "saliency",
    "summarize_distances",
]
