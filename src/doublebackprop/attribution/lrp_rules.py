"""LRP rules for linear layers: which modified weights and biases a rule uses, and how it mixes them.

A rule maps a layer's weight ``W`` and bias ``b`` to parts ``[(c, W', b', ε)]``; the relevance a
layer with input ``a`` and output ``z = Wa + b`` passes down is

``R_in = a ⊙ Σ_parts c · W'^T (R_out / (z' + ε·sign z'))``,  with ``z' = W'a + b'``.

In the gradient form used by :func:`doublebackprop.attribution.lrp` this is the input gradient of
``Σ c · z' ⊙ q`` with the ratio ``q = z / (z' + ε·sign z')`` held fixed during that one input
derivative.

A rule also computes that input gradient for a whole model (:meth:`LRPRule.modified_gradient`),
which is how the DRR penalty ``RelevancePenalty(relevance="lrp", rule=...)`` of the engine reaches
LRP without the engine depending on this package.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from doublebackprop.attribution.lrp_graph import modified_gradient

__all__ = ["AlphaBeta", "Epsilon", "Gamma", "LRPRule", "ZPlus"]

Tensor = torch.Tensor
Part = tuple[float, Tensor, "Tensor | None", float]


class LRPRule:
    """Base of LRP rules for linear layers: modified weights/biases and a combination."""

    #: the stabiliser of the rule's denominator (used by pooling and stand-alone BatchNorm too)
    stabilizer: float = 1e-9

    def parts(self, w: Tensor, b: Tensor | None) -> list[Part]:
        """``[(coefficient, W', b', ε)]``: the rule's gradient is ``Σ c·W'^T(R / (z' + ε))``.

        Parameters
        ----------
        w : Tensor
            The layer's weight (BatchNorm folded in where it follows the layer in a plain
            ``nn.Sequential``).
        b : Tensor or None
            The layer's bias.
        """
        raise NotImplementedError

    def modified_gradient(
        self,
        model: nn.Module,
        x: Tensor,
        classes: Tensor,
        *,
        first_rule: LRPRule | None = None,
        create_graph: bool = False,
    ) -> Tensor:
        """``∇_x`` of ``model`` with this rule on its linear layers; the relevance is ``x ⊙`` it.

        Parameters
        ----------
        model : nn.Module
            See :func:`doublebackprop.attribution.lrp` for the modules it may hold.
        x : Tensor
            ``(N, ...)`` inputs.
        classes : Tensor
            ``(N,)`` class indices whose logit is explained.
        first_rule : LRPRule or None
            Another rule for the first linear layer called.
        create_graph : bool
            Keep the graph: the result is exactly differentiable in the parameters.
        """
        return modified_gradient(
            model, x, classes, rule=self, first_rule=first_rule, create_graph=create_graph
        )


@dataclass(frozen=True)
class Epsilon(LRPRule):
    """LRP-ε: ``R_j = a_j Σ_k w_jk R_k / (z_k + ε·sign z_k)``; ``epsilon=0`` is LRP-0.

    Parameters
    ----------
    epsilon : float, default 1e-6
    """

    epsilon: float = 1e-6

    def __post_init__(self) -> None:
        if not (isinstance(self.epsilon, (int, float)) and self.epsilon >= 0):
            raise ValueError(f"Epsilon: epsilon must be a number >= 0, got {self.epsilon!r}")

    @property
    def stabilizer(self) -> float:  # type: ignore[override]
        return float(self.epsilon)

    def parts(self, w, b):
        return [(1.0, w, b, float(self.epsilon))]


@dataclass(frozen=True)
class ZPlus(LRPRule):
    """LRP-z⁺: only positive weights (``W⁺``, no bias); for non-negative inputs."""

    def parts(self, w, b):
        return [(1.0, w.clamp(min=0), None, 1e-9)]


@dataclass(frozen=True)
class AlphaBeta(LRPRule):
    """LRP-αβ with ``α − β = 1``: ``α·(W⁺ part) − β·(W⁻ part)`` (non-negative inputs).

    Parameters
    ----------
    alpha : float, default 2
    beta : float, default 1
    """

    alpha: float = 2.0
    beta: float = 1.0

    def __post_init__(self) -> None:
        if abs(self.alpha - self.beta - 1) > 1e-9 or self.beta < 0:
            raise ValueError(
                f"AlphaBeta: need alpha - beta = 1 and beta >= 0, got {self.alpha}, {self.beta}"
            )

    def parts(self, w, b):
        bp = None if b is None else b.clamp(min=0)
        bn = None if b is None else b.clamp(max=0)
        return [(self.alpha, w.clamp(min=0), bp, 1e-9), (-self.beta, w.clamp(max=0), bn, 1e-9)]


@dataclass(frozen=True)
class Gamma(LRPRule):
    """LRP-γ: ``W + γW⁺`` (and ``b + γb⁺``), favouring positive contributions.

    Parameters
    ----------
    gamma : float, default 0.25
    """

    gamma: float = 0.25

    def parts(self, w, b):
        return [
            (
                1.0,
                w + self.gamma * w.clamp(min=0),
                None if b is None else b + self.gamma * b.clamp(min=0),
                1e-9,
            )
        ]
