"""Madry et al. (2018) PGD for adversarial *training*: a perturbed point for every sample.

Unlike the evaluation attacks (:class:`~doublebackprop.robustness.Attack`, which keep the clean
input wherever the label did not flip and return the first iterate that flips), training needs the
inner maximisation of ``max_{‖δ‖ ≤ ε} ℓ(x + δ, y)`` for every sample: a random start in the ball,
a fixed number of steepest-ascent steps on the cross-entropy, projection onto the ball and the box
after each step, and the last (or the highest-loss) iterate — whether or not it is misclassified.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from doublebackprop.robustness._core import (
    batch_view,
    check_batch,
    check_bounds,
    check_within,
    evaluation,
    scalar_gradient,
)
from doublebackprop.robustness.attacks.base import _generator, _positive_float, _positive_int
from doublebackprop.robustness.norms import L2, Linf, Norm, as_norm

__all__ = ["madry_pgd", "random_start"]

Tensor = torch.Tensor


def random_start(
    x: Tensor, eps: Tensor, norm: Norm, bounds: tuple[float, float], generator: torch.Generator
) -> Tensor:
    """A random perturbation inside the ``eps`` ball ``(N,)`` and the box, drawn from ``generator``.

    L∞: uniform in the cube; L2: a uniform direction times a radius uniform in ``[0, eps]``.

    Parameters
    ----------
    x : Tensor
        ``(N, ...)`` clean inputs.
    eps : Tensor
        ``(N,)`` radii.
    norm : Norm
    bounds : (float, float)
    generator : torch.Generator
    """
    lo, hi = bounds
    if isinstance(norm, Linf):
        u = torch.rand(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
        delta = (2 * u.to(x.device) - 1) * batch_view(eps, x)
    else:
        d = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
        r = torch.rand(x.shape[0], generator=generator, device=generator.device, dtype=x.dtype)
        delta = L2().ascent(d.to(x.device)) * batch_view(eps * r.to(x.device), x)
    return (x + delta).clamp(lo, hi) - x


def madry_pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    epsilon: float,
    norm: Norm | float = 2,
    steps: int = 10,
    step_size: float | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    select: Literal["last", "max_loss"] = "last",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Training-time PGD: the perturbed batch ``x + δ`` with ``‖δ_i‖ ≤ ε`` for *every* sample.

    Parameters
    ----------
    model : nn.Module
        Returns logits; run in eval mode with frozen parameters (both restored afterwards).
    x : Tensor
        ``(N, ...)`` inside ``bounds``.
    y : Tensor
        ``(N,)`` labels.
    epsilon : float
        Radius of the ball, > 0.
    norm : 2, math.inf, L2() or Linf()
    steps : int, default 10
        Fixed number of ascent steps (no early stop).
    step_size : float or None
        Length of each step; default ``2.5·ε / steps`` (Madry et al.).
    bounds : (low, high)
    select : {"last", "max_loss"}
        Return the last iterate, or per sample the iterate with the highest cross-entropy
        (the random start included).
    generator : torch.Generator or None
        Draws the random start (default: seeded with 0).

    Returns
    -------
    Tensor
        ``(N, ...)``, inside ``bounds`` and the ball around ``x``.

    Examples
    --------
    >>> net = torch.nn.Linear(4, 3)
    >>> madry_pgd(net, torch.rand(2, 4), torch.tensor([0, 1]), epsilon=0.1).shape
    torch.Size([2, 4])
    """
    where = "madry_pgd"
    if y is None:
        raise ValueError(f"{where}: y (the labels) is required")
    model, x, labels = check_batch(model, x, y, where)
    assert labels is not None
    y = labels
    lo_hi = check_bounds(bounds, where)
    check_within(x, lo_hi, where)
    _positive_float(where, epsilon=epsilon)
    _positive_int(steps=steps)
    if step_size is not None:
        _positive_float(where, step_size=step_size)
    if select not in ("last", "max_loss"):
        raise ValueError(f"{where}: select must be 'last' or 'max_loss', got {select!r}")
    nrm = as_norm(norm, where)
    gen = _generator(generator, 0)
    x = x.detach()
    eps = torch.full((x.shape[0],), float(epsilon), dtype=x.dtype, device=x.device)
    alpha = 2.5 * float(epsilon) / steps if step_size is None else float(step_size)
    lo, hi = lo_hi

    def ce(z: Tensor) -> Tensor:
        return F.cross_entropy(z, y, reduction="none")

    with evaluation(model):
        delta = random_start(x, eps, nrm, lo_hi, gen)
        best = x + delta
        best_loss = torch.full_like(eps, -math.inf)
        for _ in range(steps):
            logits, g = scalar_gradient(model, x + delta, ce)
            if select == "max_loss":
                loss = ce(logits)
                better = loss > best_loss
                best = torch.where(batch_view(better, x), x + delta, best)
                best_loss = torch.where(better, loss, best_loss)
            delta = nrm.project(delta + alpha * nrm.ascent(g), eps)
            delta = (x + delta).clamp(lo, hi) - x
        if select == "last":
            return (x + delta).detach()
        with torch.no_grad():
            better = ce(model(x + delta)) > best_loss
        return torch.where(batch_view(better, x), x + delta, best).detach()
