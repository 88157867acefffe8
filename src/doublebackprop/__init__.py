"""doublebackprop: fast, exact double backpropagation for PyTorch models.

Losses that contain derivatives with respect to the *input* — gradient-norm penalties,
Jacobian penalties, relevance (gradient × input) regularisation — computed exactly and close to
the analytic cost floor, plus the saliency/robustness toolkit and the MALDI imaging tumour-typing
pipeline built on them.

The package is layered; imports point downwards only::

    common                      leaf utilities (paths, checkpoints, plotting)
    engine                      operators, converted layers, engines, penalties, objective
    attribution, robustness     saliency methods / alignment, attacks, robustness ensemble
    vision, msi                 applications: the image study, MALDI tumour typing
    tools                       benchmarks, operator counts, loss landscapes, reference nets
    cli                         the ``doublebackprop`` command

>>> import doublebackprop as dbp
>>> fast = dbp.adjoint(model)                                  # doctest: +SKIP
>>> res = dbp.objective(fast, x, y, penalty=dbp.RelevancePenalty(l1=1e-3, l2=1e-3))  # doctest: +SKIP
>>> res.total.backward()                                       # doctest: +SKIP
"""

from importlib.metadata import PackageNotFoundError, version

from doublebackprop.engine import (
    Adjoint,
    Autograd,
    Engine,
    FiniteDifference,
    GradientFunctionPenalty,
    InputGradientPenalty,
    JacobianPenalty,
    LocallyConnected1d,
    Penalty,
    PenaltyResult,
    RelevancePenalty,
    SweepCount,
    Sweeps,
    adjoint,
    explain,
    gradient_penalty,
    input_gradient,
    objective,
)

try:
    __version__ = version("doublebackprop")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "Adjoint",
    "Autograd",
    "Engine",
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
    "__version__",
    "adjoint",
    "explain",
    "gradient_penalty",
    "input_gradient",
    "objective",
]
