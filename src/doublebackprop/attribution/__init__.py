"""Attribution methods: gradient-based saliency and LRP, all differentiable in the parameters.

>>> from doublebackprop import attribution as attr
>>> r = attr.gradient_x_input(model, x, y)                         # doctest: +SKIP
>>> r = attr.lrp(model, x, y, rule=attr.Epsilon(0.25))              # doctest: +SKIP
"""

from doublebackprop.attribution.gradients import (
    gradient,
    gradient_x_input,
    integrated_gradients,
    resolve_target,
    smoothgrad,
)
from doublebackprop.attribution.lrp import AlphaBeta, Epsilon, Gamma, LRPRule, ZPlus, lrp

__all__ = [
    "AlphaBeta",
    "Epsilon",
    "Gamma",
    "LRPRule",
    "ZPlus",
    "gradient",
    "gradient_x_input",
    "integrated_gradients",
    "lrp",
    "resolve_target",
    "smoothgrad",
]
