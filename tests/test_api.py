"""A snapshot of the public API: a change here is a visible, deliberate diff."""

import doublebackprop as dbp


def test_public_api_snapshot():
    assert sorted(dbp.__all__) == [
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
    for name in dbp.__all__:
        assert hasattr(dbp, name)
