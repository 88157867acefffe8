"""Batched adversarial attacks: the :class:`Attack` base, gradient-ascent and minimisation attacks,
and Madry PGD for adversarial training (:func:`madry_pgd`)."""

from doublebackprop.robustness.attacks.base import Attack, AttackResult
from doublebackprop.robustness.attacks.decision import GaussianSmoothing, HopSkipJump, Transfer
from doublebackprop.robustness.attacks.gradient import PGD, MinimalPGD, RandomDirections
from doublebackprop.robustness.attacks.madry import madry_pgd
from doublebackprop.robustness.attacks.minimisation import DDN, CarliniWagner, DeepFool

__all__ = [
    "DDN",
    "PGD",
    "Attack",
    "AttackResult",
    "CarliniWagner",
    "DeepFool",
    "GaussianSmoothing",
    "HopSkipJump",
    "MinimalPGD",
    "RandomDirections",
    "Transfer",
    "madry_pgd",
]
