"""The loss surface of double-backprop penalties along a line in parameter space.

For fixed ``θ`` a ReLU network is piecewise linear in ``x``, so its saliency is piecewise constant
and *jumps* in ``θ`` whenever a pre-activation crosses zero: a single sample's penalty is
discontinuous along ``θ + t·d``. Averaged over a batch, every sample jumps at different ``t`` and
the curve looks almost continuous ("pseudo-smoothing"); a Softplus network has no jumps at all.
This module evaluates the penalty on such lines and measures the jumps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from doublebackprop.engine.adjoint import converted
from doublebackprop.engine.objective import objective
from doublebackprop.engine.penalties import Penalty

__all__ = [
    "LineScan",
    "MIN_POINTS",
    "scan_line",
    "random_direction",
    "jump_statistic",
    "refinement_ratio",
]

#: Fewest points on a line that resolve the jumps: the refinement ratio of the smooth (Softplus)
#: reference curve is 0.61 / 0.59 / 0.54 / 0.505 / 0.502 at 5 / 11 / 21 / 41 / 81 points
#: (measured on the digits CNN), so from 41 points a ratio near 1 means a jump, not a coarse grid.
MIN_POINTS = 41


@dataclass(frozen=True)
class LineScan:
    """Penalty values along ``θ + t·d`` for one batch size."""

    batch_size: int
    t: np.ndarray
    values: np.ndarray

    @property
    def max_jump(self) -> float:
        return jump_statistic(self.values)

    @property
    def refinement_ratio(self) -> float:
        return refinement_ratio(self.values)


def random_direction(model: nn.Module, generator: torch.Generator) -> list[torch.Tensor]:
    """A random direction with each parameter tensor scaled to the norm of that tensor
    ("filter normalisation"), so ``t`` is comparable across layers."""
    out = []
    for p in model.parameters():
        d = torch.randn(p.shape, generator=generator, dtype=p.dtype)
        out.append(d * (p.detach().norm() / d.norm().clamp_min(1e-12)))
    return out


def jump_statistic(values: np.ndarray) -> float:
    """Largest step between neighbouring points relative to the curve's range.

    A continuous curve sampled finely has small steps (→ 0 as the grid refines); a jump keeps a
    step of its own size whatever the grid."""
    span = float(np.ptp(values))
    return 0.0 if span == 0 else float(np.abs(np.diff(values)).max() / span)


def refinement_ratio(values: np.ndarray) -> float:
    """Largest neighbour step on the grid over the largest step on every other point.

    ≈ 0.5 for a continuous curve (steps shrink with the spacing), → 1 where a jump dominates
    (its size does not depend on the spacing)."""
    if len(values) < 3:
        raise ValueError(f"refinement_ratio needs at least 3 values, got {len(values)}")
    fine = np.abs(np.diff(values)).max()
    coarse = np.abs(np.diff(values[::2])).max()
    return 0.0 if coarse == 0 else float(fine / coarse)


@torch.no_grad()
def _set(
    params: list[nn.Parameter], base: list[torch.Tensor], d: list[torch.Tensor], t: float
) -> None:
    for p, b, di in zip(params, base, d):
        p.copy_(b + t * di)


def scan_line(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    penalty: Penalty,
    *,
    batch_sizes: tuple[int, ...],
    t: np.ndarray,
    generator: torch.Generator,
    progress: Callable[[str], None] | None = None,
) -> list[LineScan]:
    """Penalty (without the task loss) along one random line, for the first ``b`` samples of
    ``x`` for each ``b`` in ``batch_sizes``. The model's parameters are restored afterwards;
    ``progress`` gets one line per batch size.

    Parameters
    ----------
    model : torch.nn.Module
    x, y : Tensor
        Inputs ``(N, ...)`` and labels ``(N,)``.
    penalty : Penalty
    batch_sizes : tuple of int
    t : ndarray
        Positions along the line.
    generator : torch.Generator
        Draws the random direction.
    progress : callable or None
    """
    params = list(model.parameters())
    base = [p.detach().clone() for p in params]
    direction = random_direction(model, generator)
    scans = []
    with converted(model) as fast:  # the caller's model keeps its own classes
        try:
            for b in batch_sizes:
                values = []
                for ti in t:
                    _set(params, base, direction, float(ti))
                    res = objective(fast, x[:b], y[:b], penalty=penalty)
                    values.append(float(res.penalty.detach()))
                scans.append(LineScan(b, np.asarray(t), np.asarray(values)))
                if progress is not None:
                    progress(f"batch {b}: {len(t)} points done")
        finally:
            _set(params, base, direction, 0.0)
    return scans
