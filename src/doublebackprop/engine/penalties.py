"""Losses that contain input derivatives.

A penalty is described by two things every engine can use:

* ``seeds(logits, y)`` — the cotangent(s) ``c_r = ∇_z h_r`` at the logits, shape ``(R, N, m)``:
  the input gradient of row ``r`` is ``s_r = J_z(x)^T c_r``. A seed that does not depend on the
  logits (a logit selector, a projection) makes the differentiated scalar *linear in the logits*;
  ``linear_in_logits`` says so, and then a locally linear network needs no second backward sweep.
* ``per_sample(grads, x)`` — the penalty of each sample from the input gradients ``(R, N, *x)``.

A penalty may instead compute its input gradients itself (``own_gradients``), as the DRR penalty
with LRP relevance does: ``input_gradients(model, x, y)`` then returns ``(R, N, *x)`` gradients
of a *modified* network (LRP's rule layers), differentiable in the parameters. Only the graph
engines (``adjoint``, ``autograd``) run such penalties.

Conventions: every penalty is a per-sample quantity; the objective averages ``w_i·penalty_i``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Penalty",
    "InputGradientPenalty",
    "RelevancePenalty",
    "JacobianPenalty",
    "GradientFunctionPenalty",
]

Tensor = torch.Tensor
Target = Literal["loss", "true_logit", "predicted_logit"]
_TARGETS = ("loss", "true_logit", "predicted_logit")
_RELEVANCES = ("gradient_x_input", "lrp")


def _check_nonneg(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{owner}: {name} must be a finite number >= 0, got {value!r}")


def target_seeds(target: Target, logits: Tensor, y: Tensor, *, batch_mean: bool = False) -> Tensor:
    """Cotangent ``∇_z h`` at the logits for one target, shape ``(1, N, m)``.

    ``"loss"``: the per-sample cross-entropy, ``softmax(z) - onehot(y)`` (depends on ``z``);
    ``"true_logit"``/``"predicted_logit"``: a one-hot selector (constant).
    ``batch_mean`` divides by ``N`` (the gradient of the batch-mean loss).
    """
    if target == "loss":
        seed = torch.softmax(logits, dim=1) - F.one_hot(y, logits.shape[1]).to(logits.dtype)
    elif target == "true_logit":
        seed = F.one_hot(y, logits.shape[1]).to(logits.dtype)
    elif target == "predicted_logit":
        seed = F.one_hot(logits.detach().argmax(1), logits.shape[1]).to(logits.dtype)
    else:  # pragma: no cover - validated by constructors
        raise ValueError(f"target must be one of {_TARGETS}, got {target!r}")
    if batch_mean:
        seed = seed / logits.shape[0]
    return seed.unsqueeze(0)


class Penalty(ABC):
    """Base of penalties on input gradients (see the module docstring)."""

    #: the differentiated scalar is linear in the logits (its seed is constant)
    linear_in_logits: bool = True
    #: the penalty computes its own input gradients (:meth:`input_gradients`), not ``J^T c``
    own_gradients: bool = False

    @abstractmethod
    def seeds(self, logits: Tensor, y: Tensor) -> Tensor:
        """Cotangents at the logits, shape ``(R, N, m)``."""

    @abstractmethod
    def per_sample(self, grads: Tensor, x: Tensor) -> Tensor:
        """Penalty per sample, shape ``(N,)``, from input gradients ``(R, N, *x.shape[1:])``."""

    def input_gradients(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """The penalty's own input gradients ``(R, N, *x)`` (only where ``own_gradients``).

        Parameters
        ----------
        model : nn.Module
            The model the engine runs.
        x : Tensor
            ``(N, ...)`` inputs (detached).
        y : Tensor
            ``(N,)`` class indices.
        """
        raise NotImplementedError(f"{type(self).__name__} does not compute its own gradients")


class InputGradientPenalty(Penalty):
    """``weight · ‖∇_x target‖_p^power`` per sample (Drucker & LeCun's double backprop).

    Parameters
    ----------
    weight : float
    target : {"loss", "true_logit", "predicted_logit"}
        ``"loss"``: the gradient of the sample's own cross-entropy ``ℓ_i``.
    p : float, default 2
        The norm (``p >= 1``; ``math.inf`` for the max-norm).
    power : float, default 2
    reduction : {"per_sample", "batch_mean"}, default "per_sample"
        ``"batch_mean"`` differentiates the batch-*mean* loss instead (an extra ``1/N`` in every
        gradient, ``1/N²`` in a squared norm), as the ICML 2019 code did.

    Examples
    --------
    >>> pen = InputGradientPenalty(weight=0.1, target="loss", p=2, power=2)
    """

    def __init__(
        self,
        *,
        weight: float,
        target: Target = "loss",
        p: float = 2,
        power: float = 2,
        reduction: Literal["per_sample", "batch_mean"] = "per_sample",
    ) -> None:
        _check_nonneg("InputGradientPenalty", weight=weight, power=power)
        if target not in _TARGETS:
            raise ValueError(
                f"InputGradientPenalty: target must be one of {_TARGETS}, got {target!r}"
            )
        if not (p == math.inf or (isinstance(p, (int, float)) and p >= 1)):
            raise ValueError(f"InputGradientPenalty: p must be >= 1 or math.inf, got {p!r}")
        if reduction not in ("per_sample", "batch_mean"):
            raise ValueError(
                f"InputGradientPenalty: reduction must be 'per_sample' or 'batch_mean', got {reduction!r}"
            )
        self.weight, self.target, self.p, self.power, self.reduction = (
            float(weight),
            target,
            p,
            float(power),
            reduction,
        )
        self.linear_in_logits = target != "loss"

    def seeds(self, logits: Tensor, y: Tensor) -> Tensor:
        return target_seeds(self.target, logits, y, batch_mean=self.reduction == "batch_mean")

    def per_sample(self, grads: Tensor, x: Tensor) -> Tensor:
        g = grads[0].flatten(1)
        if self.p == 2 and self.power == 2:
            return self.weight * g.pow(2).sum(1)
        return self.weight * torch.linalg.vector_norm(g, ord=self.p, dim=1).pow(self.power)

    def __repr__(self) -> str:
        return (
            f"InputGradientPenalty(weight={self.weight}, target={self.target!r}, p={self.p}, "
            f"power={self.power}, reduction={self.reduction!r})"
        )


class RelevancePenalty(Penalty):
    """Deep Relevance Regularization: ``l1‖r‖₁ + l2‖r‖₂²`` of the true class's relevance ``r``.

    The default relevance is gradient × input, ``r = x ⊙ ∇_x z_y`` (``z_y``: the true-class
    logit), as in the DRR paper. ``relevance="lrp"`` uses LRP instead, ``r = x ⊙ ∇̃_x z_y`` with
    the rule-modified gradient of :func:`doublebackprop.attribution.lrp`, exactly differentiable
    in the parameters (the ratios of every rule layer included). Balanced class weights multiply
    the whole per-sample loss through ``objective(..., sample_weight=w)``.

    Parameters
    ----------
    l1, l2 : float
        Weights of ``‖r‖₁`` and ``‖r‖₂²`` (the DRR paper: ``l1 = l2 = λ``).
    reduction : {"per_sample", "batch_sum"}, default "per_sample"
        ``"per_sample"``: sample ``i`` is penalised by its own relevance. ``"batch_sum"``: the
        convention of the DRR authors' Keras code, which flattens the whole batch's relevance
        before summing: every sample's loss gets ``l1 Σ_j‖r_j‖₁ + l2 Σ_j‖r_j‖₂²`` over the
        batch, i.e. batch size × the per-sample penalty on average (λ = 10⁻² at batch 150 is
        per-sample λ = 1.5).
    relevance : {"gradient_x_input", "lrp"}, default "gradient_x_input"
        ``"lrp"`` needs ``rule`` and the ``adjoint`` or ``autograd`` engine. LRP uses
        BatchNorm's running statistics as they were before this step's forward (its eval-mode
        map) and, in train mode, a dropout mask of its own; the task loss uses the model's
        forward as it is.
    rule : LRPRule or None
        With ``relevance="lrp"``: the rule of the linear layers, e.g.
        ``doublebackprop.attribution.Epsilon(0.01)``.
    first_rule : LRPRule or None
        With ``relevance="lrp"``: another rule for the first linear layer called.

    Examples
    --------
    >>> pen = RelevancePenalty(l1=1e-3, l2=1e-3)
    >>> paper = RelevancePenalty(l1=1e-2, l2=1e-2, reduction="batch_sum")
    >>> from doublebackprop.attribution import Epsilon
    >>> with_lrp = RelevancePenalty(l1=1e-3, l2=1e-3, relevance="lrp", rule=Epsilon(0.01))
    """

    def __init__(
        self,
        *,
        l1: float,
        l2: float,
        reduction: Literal["per_sample", "batch_sum"] = "per_sample",
        relevance: Literal["gradient_x_input", "lrp"] = "gradient_x_input",
        rule: object = None,
        first_rule: object = None,
    ) -> None:
        _check_nonneg("RelevancePenalty", l1=l1, l2=l2)
        if reduction not in ("per_sample", "batch_sum"):
            raise ValueError(
                f"RelevancePenalty: reduction must be 'per_sample' or 'batch_sum', got {reduction!r}"
            )
        if relevance not in _RELEVANCES:
            raise ValueError(
                f"RelevancePenalty: relevance must be one of {_RELEVANCES}, got {relevance!r}"
            )
        if relevance == "lrp":
            if rule is None:
                raise ValueError(
                    "RelevancePenalty: relevance='lrp' needs an LRP rule, e.g. "
                    "rule=doublebackprop.attribution.Epsilon(0.01)"
                )
            for name, r in (("rule", rule), ("first_rule", first_rule)):
                if r is not None and not callable(getattr(r, "modified_gradient", None)):
                    raise TypeError(
                        f"RelevancePenalty: {name} must be an LRP rule (Epsilon, ZPlus, "
                        f"AlphaBeta, Gamma from doublebackprop.attribution), got {r!r}"
                    )
        elif rule is not None or first_rule is not None:
            raise ValueError(
                "RelevancePenalty: rule and first_rule are LRP settings; pass relevance='lrp' "
                "to use them"
            )
        self.l1, self.l2, self.reduction = float(l1), float(l2), reduction
        self.relevance, self.rule, self.first_rule = relevance, rule, first_rule
        self.own_gradients = relevance == "lrp"

    def seeds(self, logits: Tensor, y: Tensor) -> Tensor:
        return target_seeds("true_logit", logits, y)

    def input_gradients(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        if not self.own_gradients:
            return super().input_gradients(model, x, y)
        g = self.rule.modified_gradient(  # type: ignore[attr-defined]
            model, x, y, first_rule=self.first_rule, create_graph=True
        )
        return g.unsqueeze(0)

    def per_sample(self, grads: Tensor, x: Tensor) -> Tensor:
        r = (x * grads[0]).flatten(1)
        own = self.l1 * r.abs().sum(1) + self.l2 * r.pow(2).sum(1)
        if self.reduction == "batch_sum":
            return own.sum().expand_as(own)  # the same batch total in every sample's loss
        return own

    def __repr__(self) -> str:
        extra = "" if self.reduction == "per_sample" else f", reduction={self.reduction!r}"
        if self.relevance == "lrp":
            extra += f", relevance='lrp', rule={self.rule!r}"
            if self.first_rule is not None:
                extra += f", first_rule={self.first_rule!r}"
        return f"RelevancePenalty(l1={self.l1}, l2={self.l2}{extra})"


class JacobianPenalty(Penalty):
    """``weight · ‖J_f(x)‖_F²`` over all logits, exact or by random projections.

    Parameters
    ----------
    weight : float
    projections : int or None, default None
        ``None``: exact, one row per logit. ``k``: the unbiased estimator
        ``mean_j ‖J^T u_j‖²`` with ``u_j ~ N(0, I)``, ``k`` rows.
    generator : torch.Generator or None
        Source of the projections (so runs are reproducible).
    """

    def __init__(
        self,
        *,
        weight: float,
        projections: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        _check_nonneg("JacobianPenalty", weight=weight)
        if projections is not None and (not isinstance(projections, int) or projections < 1):
            raise ValueError(
                f"JacobianPenalty: projections must be an int >= 1 or None, got {projections!r}"
            )
        self.weight, self.projections, self.generator = float(weight), projections, generator

    def seeds(self, logits: Tensor, y: Tensor) -> Tensor:
        n, m = logits.shape
        if self.projections is None:
            eye = torch.eye(m, dtype=logits.dtype, device=logits.device)
            return eye[:, None, :].expand(m, n, m)
        u = torch.randn(
            (self.projections, n, m),
            generator=self.generator,
            dtype=logits.dtype,
            device="cpu" if self.generator is None else self.generator.device,
        )
        return u.to(logits.device)

    def per_sample(self, grads: Tensor, x: Tensor) -> Tensor:
        sq = grads.flatten(2).pow(2).sum(2)  # (R, N)
        total = sq.sum(0) if self.projections is None else sq.mean(0)
        return self.weight * total

    def __repr__(self) -> str:
        return f"JacobianPenalty(weight={self.weight}, projections={self.projections})"


class GradientFunctionPenalty(Penalty):
    """A user-defined penalty ``fn(grad, x) -> (N,)`` of the input gradient of ``target``.

    ``fn`` must be differentiable in ``grad`` and return one value per sample.

    Examples
    --------
    >>> pen = GradientFunctionPenalty(lambda g, x: g.flatten(1).abs().amax(1), target="true_logit")
    """

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor], *, target: Target = "loss") -> None:
        if not callable(fn):
            raise TypeError(
                f"GradientFunctionPenalty: fn must be callable, got {type(fn).__name__}"
            )
        if target not in _TARGETS:
            raise ValueError(
                f"GradientFunctionPenalty: target must be one of {_TARGETS}, got {target!r}"
            )
        self.fn, self.target = fn, target
        self.linear_in_logits = target != "loss"

    def seeds(self, logits: Tensor, y: Tensor) -> Tensor:
        return target_seeds(self.target, logits, y)

    def per_sample(self, grads: Tensor, x: Tensor) -> Tensor:
        out = self.fn(grads[0], x)
        if not isinstance(out, torch.Tensor) or out.shape != (x.shape[0],):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"GradientFunctionPenalty: fn must return a tensor of shape ({x.shape[0]},), got {got}"
            )
        return out
