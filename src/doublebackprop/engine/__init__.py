"""The engine: exact gradients of losses that contain input derivatives.

Layers, from the bottom up: ``operators`` (each layer's ``K``, ``K^T``, ``K^□``) ←
``layers`` (:class:`LocallyConnected1d`) ← ``converted``, ``converted_bn`` (modules whose
backward is built from the operators) ← ``adjoint`` (in-place conversion of a ``torch.nn``
model) ← ``explain`` ← ``penalties`` ← ``engines`` / ``sweeps`` ← ``tasks`` (other task losses)
← ``objective`` (the one entry point) ← ``gan`` (gradient penalties of discriminators).
``validation`` holds the boundary checks every layer above uses; ``_torch_compat`` holds the
private PyTorch API the engine needs.
"""

from doublebackprop.engine.adjoint import AdjointModule, adjoint, converted, is_adjoint
from doublebackprop.engine.engines import Adjoint, Autograd, Engine, FiniteDifference
from doublebackprop.engine.explain import Explanation, explain
from doublebackprop.engine.gan import gradient_penalty
from doublebackprop.engine.layers import LocallyConnected1d
from doublebackprop.engine.objective import ENGINES, PenaltyResult, input_gradient, objective
from doublebackprop.engine.penalties import (
    GradientFunctionPenalty,
    InputGradientPenalty,
    JacobianPenalty,
    Penalty,
    RelevancePenalty,
)
from doublebackprop.engine.sweeps import SweepCount, Sweeps

__all__ = [
    "ENGINES",
    "Adjoint",
    "AdjointModule",
    "Autograd",
    "Engine",
    "Explanation",
    "FiniteDifference",
    "GradientFunctionPenalty",
    "InputGradientPenalty",
    "JacobianPenalty",
    "LocallyConnected1d",
    "Penalty",
    "PenaltyResult",
    "RelevancePenalty",
    "SweepCount",
    "Sweeps",
    "adjoint",
    "converted",
    "explain",
    "gradient_penalty",
    "input_gradient",
    "is_adjoint",
    "objective",
]
