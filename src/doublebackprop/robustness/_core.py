"""Shared plumbing: scoped evaluation mode, validated bounds, gradients through the engine."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
from torch import nn

from doublebackprop.engine.objective import input_gradient
from doublebackprop.engine.validation import (
    check_inputs,
    check_label_range,
    check_labels,
    check_logits,
    check_model,
)

Tensor = torch.Tensor


def batch_view(v: Tensor, like: Tensor) -> Tensor:
    """``v`` of shape ``(N,)`` viewed as ``(N, 1, …, 1)`` to broadcast against ``like``."""
    return v.view(-1, *([1] * (like.dim() - 1)))


class RobustnessWarning(UserWarning):
    """A sanity check failed: the measured robustness may be overestimated."""


#: gradients for metrics and attacks are first order: the stock engine is the fastest
ENGINE = "autograd"


@contextlib.contextmanager
def evaluation(model: nn.Module) -> Iterator[nn.Module]:
    """``model.eval()`` and frozen parameters for the duration; both restored on exit."""
    modes = {m: m.training for m in model.modules()}
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for m, mode in modes.items():
            m.training = mode
        for p, flag in flags:
            p.requires_grad_(flag)


def check_bounds(bounds: object, where: str) -> tuple[float, float]:
    if (
        not isinstance(bounds, (tuple, list))
        or len(bounds) != 2
        or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
    ):
        raise TypeError(f"{where}: bounds must be a pair (low, high) of numbers, got {bounds!r}")
    lo, hi = float(bounds[0]), float(bounds[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{where}: bounds must be finite with low < high, got {bounds!r}")
    return lo, hi


def check_within(x: Tensor, bounds: tuple[float, float], where: str, name: str = "x") -> None:
    lo, hi = bounds
    if x.numel() and (float(x.min()) < lo or float(x.max()) > hi):
        raise ValueError(
            f"{where}: {name} must lie inside bounds {bounds} "
            "(declare the bounds your inputs use), "
            f"got values in [{float(x.min()):.4g}, {float(x.max()):.4g}]"
        )


def logits_of(model: nn.Module, x: Tensor, where: str) -> Tensor:
    with torch.no_grad():
        return check_logits(model(x), x.shape[0], where)


def check_batch(
    model: object, x: object, y: object | None, where: str
) -> tuple[nn.Module, Tensor, Tensor | None]:
    """Validated ``(model, x, y)``; ``y`` may be None (the predicted class is used then)."""
    model = check_model(model, where)
    x = check_inputs(x, where).detach()
    if y is not None:
        y = check_labels(y, x.shape[0], where).to(x.device)
    return model, x, y


def check_classes(y: Tensor, logits: Tensor, where: str) -> None:
    check_label_range(y, logits.shape[1], where)


class _Scalar(nn.Module):
    """Wraps a model: output ``fn(logits)`` as one column; the logits are kept for the caller."""

    def __init__(self, model: nn.Module, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.model, self.fn = model, fn
        self.logits: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        logits = self.model(x)
        self.logits = logits.detach()
        return self.fn(logits).unsqueeze(1)


def scalar_gradient(
    model: nn.Module, x: Tensor, fn: Callable[[Tensor], Tensor]
) -> tuple[Tensor, Tensor]:
    """``(logits, ∇_x fn(model(x))_i)`` with one forward and one backward, via the engine.

    ``fn`` maps logits ``(N, m)`` to one value per sample ``(N,)``; samples must not interact
    (eval mode), so the gradient of the batch sum is the per-sample gradient.
    """
    wrapped = _Scalar(model, fn)
    grad = input_gradient(wrapped, x, target=0, engine=ENGINE)
    assert wrapped.logits is not None
    return wrapped.logits, grad


def class_gradients(model: nn.Module, x: Tensor, classes: Tensor) -> tuple[Tensor, Tensor]:
    """Logits ``(N, m)`` and input gradients of the logits ``classes`` ``(N, K)``: ``(N, K, ...)``.

    One forward pass of the batch (not repeated per class) and ``K`` backward passes through the
    same graph, one per column of ``classes``; samples must not interact (eval mode), so the
    gradient of a column's batch sum is the per-sample gradient. (Measured on a small CNN on one
    CPU thread this is faster than repeating the batch ``K`` times or batching the ``K``
    vector-Jacobian products with ``vmap``.)
    """
    k = classes.shape[1]
    xr = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xr)
        cols = classes.to(logits.device)
        grads = []
        for c in range(k):
            score = logits.gather(1, cols[:, c : c + 1]).sum()
            (g,) = torch.autograd.grad(score, xr, retain_graph=c < k - 1)
            grads.append(g)
    return logits.detach(), torch.stack(grads, 1)


def per_sample_dot(a: Tensor, b: Tensor) -> Tensor:
    return (a.flatten(1) * b.flatten(1)).sum(1)
