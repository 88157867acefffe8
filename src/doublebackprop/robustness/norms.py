"""Norm objects used by the attacks: per-sample norms, steepest-ascent directions, projections."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch

from doublebackprop.robustness._core import batch_view

__all__ = ["Norm", "L2", "Linf", "as_norm"]

Tensor = torch.Tensor


class Norm(ABC):
    """A vector norm applied per sample (over all non-batch dimensions)."""

    #: the ``p`` of the norm (``math.inf`` for the max-norm)
    p: float

    @abstractmethod
    def __call__(self, v: Tensor) -> Tensor:
        """Per-sample norm of ``v`` ``(N, ...)`` → ``(N,)``."""

    @abstractmethod
    def dual(self, v: Tensor) -> Tensor:
        """Per-sample dual norm (``‖·‖_q`` with ``1/p + 1/q = 1``) → ``(N,)``."""

    @abstractmethod
    def ascent(self, g: Tensor) -> Tensor:
        """Steepest-ascent direction of unit norm for gradient ``g`` (zero where ``g = 0``)."""

    @abstractmethod
    def project(self, delta: Tensor, eps: Tensor) -> Tensor:
        """Project ``delta`` onto the ball of radius ``eps`` ``(N,)``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


class L2(Norm):
    """The Euclidean norm."""

    p = 2.0

    def __call__(self, v: Tensor) -> Tensor:
        return v.flatten(1).norm(dim=1)

    def dual(self, v: Tensor) -> Tensor:
        return v.flatten(1).norm(dim=1)

    def ascent(self, g: Tensor) -> Tensor:
        n = self(g)
        return g / batch_view(torch.where(n > 0, n, torch.ones_like(n)), g)

    def project(self, delta: Tensor, eps: Tensor) -> Tensor:
        n = self(delta)
        factor = torch.where(n > eps, eps / n.clamp_min(1e-30), torch.ones_like(n))
        return delta * batch_view(factor, delta)


class Linf(Norm):
    """The max-norm."""

    p = math.inf

    def __call__(self, v: Tensor) -> Tensor:
        return v.flatten(1).abs().amax(dim=1)

    def dual(self, v: Tensor) -> Tensor:
        return v.flatten(1).abs().sum(dim=1)

    def ascent(self, g: Tensor) -> Tensor:
        return g.sign()

    def project(self, delta: Tensor, eps: Tensor) -> Tensor:
        e = batch_view(eps, delta)
        return torch.maximum(torch.minimum(delta, e), -e)


def as_norm(norm: object, where: str) -> Norm:
    """A :class:`Norm` from itself or from ``2`` / ``math.inf`` (the CLI and contract edge)."""
    if isinstance(norm, Norm):
        return norm
    if isinstance(norm, (int, float)) and not isinstance(norm, bool):
        if norm == 2:
            return L2()
        if norm == math.inf:
            return Linf()
    raise ValueError(f"{where}: norm must be 2, math.inf, L2() or Linf(), got {norm!r}")
