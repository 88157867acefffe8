"""Gradient penalties of GAN discriminators: R1/R2 (StyleGAN-type training) and WGAN-GP.

``weight · mean_i (‖∇_{x_i} D(x)_i‖₂ − center)²`` for a scalar-output discriminator, no labels,
no cross-entropy. ``center=0`` on real (R1) or fake (R2) samples; ``center=1`` on random
interpolates between real and fake samples (Gulrajani et al.'s WGAN-GP).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from doublebackprop.engine.engines import Engine
from doublebackprop.engine.objective import resolve_engine
from doublebackprop.engine.penalties import Penalty
from doublebackprop.engine.validation import check_inputs, check_model, restored_on_error

__all__ = ["gradient_penalty"]

Tensor = torch.Tensor


class _CriticGradientPenalty(Penalty):
    """``weight · (‖∇_x D‖₂ − center)²`` per sample; the seed selects the one output."""

    #: there are no labels
    class_labels = False

    def __init__(self, center: float, weight: float) -> None:
        self.center, self.weight = center, weight

    def seeds(self, logits: Tensor, y: Tensor | None) -> Tensor:
        return torch.ones_like(logits).unsqueeze(0)

    def per_sample(self, grads: Tensor, x: Tensor) -> Tensor:
        sq = grads[0].flatten(1).pow(2).sum(1)
        if self.center == 0:  # R1/R2: ‖g‖², smooth also where g = 0
            return self.weight * sq
        return self.weight * (sq.sqrt() - self.center).pow(2)

    def __repr__(self) -> str:
        return f"gradient_penalty(center={self.center}, weight={self.weight})"


class _Column(nn.Module):
    """``D(x)`` of shape ``(N,)`` as ``(N, 1)`` (the engines work on ``(N, m)`` outputs)."""

    def __init__(self, critic: nn.Module) -> None:
        super().__init__()
        self.critic = critic

    def forward(self, x: Tensor) -> Tensor:
        out = self.critic(x)
        if not isinstance(out, torch.Tensor) or out.shape not in ((x.shape[0],), (x.shape[0], 1)):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"gradient_penalty: the model must return one score per sample, shape "
                f"({x.shape[0]},) or ({x.shape[0]}, 1), got {got}"
            )
        return out.reshape(x.shape[0], 1)


def gradient_penalty(
    model: nn.Module,
    x: Tensor,
    *,
    center: float = 0.0,
    weight: float = 1.0,
    engine: str | Engine = "adjoint",
) -> Tensor:
    """``weight · mean_i (‖∇_{x_i} D(x)_i‖₂ − center)²``, differentiable in the parameters.

    Parameters
    ----------
    model : torch.nn.Module
        The discriminator (critic) ``D``; returns one score per sample.
    x : Tensor
        ``(N, ...)``: real samples (R1), fake ones (R2) or interpolates (WGAN-GP).
    center : float, default 0.0
        ``0``: R1/R2 (``weight · mean ‖∇D‖²``; StyleGAN uses ``weight = γ/2``). ``1``: WGAN-GP
        (Gulrajani et al. use ``weight = 10``).
    weight : float, default 1.0
    engine : {"adjoint", "autograd", "sweeps", "finite_difference"} or Engine
        The sweeps engine needs an ``nn.Sequential`` returning ``(N, 1)``.

    Returns
    -------
    Tensor
        A scalar; ``backward()`` deposits the penalty's parameter gradient.

    Shapes
    ------
    ``x``: ``(N, ...)``; ``model(x)``: ``(N,)`` or ``(N, 1)``.

    Examples
    --------
    >>> critic = nn.Sequential(nn.Linear(4, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1))
    >>> real, fake = torch.randn(6, 4), torch.randn(6, 4)
    >>> r1 = gradient_penalty(critic, real, weight=5.0)                    # R1, γ = 10
    >>> eps = torch.rand(6, 1)
    >>> gp = gradient_penalty(critic, eps * real + (1 - eps) * fake, center=1.0, weight=10.0)
    >>> (r1 + gp).backward()
    """
    where = "gradient_penalty"
    check_model(model, where)
    x = check_inputs(x, where)
    for name, value in (("center", center), ("weight", weight)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{where}: {name} must be a finite number >= 0, got {value!r}")
    eng = resolve_engine(engine)
    pen = _CriticGradientPenalty(float(center), float(weight))
    net = model if eng.name == "sweeps" else _Column(model)
    with restored_on_error(model):
        _, term = eng.penalty_term(net, x, None, pen, None)
    return term
