"""Task losses other than cross-entropy with class indices (``objective(..., loss=...)``).

A task loss is a callable ``loss(logits, y) -> (N,)``: one value per sample, differentiable in
the logits (soft labels, label smoothing, regression). A penalty whose target is ``"loss"``
then differentiates *that* loss: its seed at the logits is ``∇_z loss_i``, computed with
``torch.func.grad`` so every engine (also the sweeps engine's head curvature) can use it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from doublebackprop.engine.penalties import Penalty, RelevancePenalty

__all__ = ["TaskLoss", "with_task_loss", "check_task_loss"]

Tensor = torch.Tensor
TaskLoss = Callable[[Tensor, Tensor], Tensor]

_INTEGER = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def check_task_loss(values: object, n: int, where: str) -> Tensor:
    """``values`` must be a ``(n,)`` tensor of per-sample losses; the error names ``where`` and shows the fix."""
    if not isinstance(values, torch.Tensor) or values.shape != (n,):
        got = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise ValueError(
            f"{where}: loss must return one value per sample, shape ({n},), got {got} "
            "(use reduction='none', e.g. loss=lambda z, y: F.mse_loss(z, y, reduction='none')"
            ".flatten(1).mean(1))"
        )
    return values


def _needs_class_indices(penalty: Penalty) -> bool:
    return isinstance(penalty, RelevancePenalty) or getattr(penalty, "target", None) == "true_logit"


def _check_class_indices(penalty: Penalty, y: Tensor, n: int) -> None:
    if _needs_class_indices(penalty) and not (y.dtype in _INTEGER and y.shape == (n,)):
        raise ValueError(
            f"objective: {penalty!r} selects the true-class logit and needs class indices y of "
            f"shape ({n},); with soft labels or regression targets use "
            "target='loss' or 'predicted_logit'"
        )


class _WithTaskLoss(Penalty):
    """``penalty`` with its ``"loss"`` target read as the given task loss."""

    #: ``y`` is whatever the loss takes, not necessarily class indices
    class_labels = False

    def __init__(self, penalty: Penalty, loss: TaskLoss) -> None:
        self.penalty, self.loss = penalty, loss
        self.linear_in_logits = penalty.linear_in_logits
        self.own_gradients = penalty.own_gradients

    def seeds(self, logits: Tensor, y: Tensor) -> Tensor:
        pen = self.penalty
        if getattr(pen, "target", None) == "loss":
            seed = torch.func.grad(lambda z: self.loss(z, y).sum())(logits)
            if getattr(pen, "reduction", "per_sample") == "batch_mean":
                seed = seed / logits.shape[0]
            return seed.unsqueeze(0)
        _check_class_indices(pen, y, logits.shape[0])
        return pen.seeds(logits, y)

    def input_gradients(self, model, x: Tensor, y: Tensor) -> Tensor:
        _check_class_indices(self.penalty, y, x.shape[0])
        return self.penalty.input_gradients(model, x, y)

    def per_sample(self, grads: Tensor, x: Tensor) -> Tensor:
        return self.penalty.per_sample(grads, x)

    def __repr__(self) -> str:
        return repr(self.penalty)


def with_task_loss(penalty: Penalty, loss: TaskLoss) -> Penalty:
    """``penalty`` for a task loss other than cross-entropy (see the module docstring)."""
    return _WithTaskLoss(penalty, loss)
