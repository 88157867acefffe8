"""Summaries of per-sample distances that keep failed attacks visible.

A sample that no attack broke has distance ``inf``: "not broken within the bounds and the attack
budgets", i.e. at least as robust as any broken sample. Dropping those samples before taking a
median would make a model look *less* robust the more often the attacks fail, so here they stay
in: the median is over all correctly classified samples, and is ``inf`` when more than half of
them were not broken. The failures and the robust accuracy are reported next to it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["DistanceSummary", "median", "median_ci", "summarize_distances"]

Tensor = torch.Tensor


def median(v: Tensor) -> float:
    """The middle order statistic of ``v`` ``(n,)`` (mean of the two middle ones for even ``n``);
    ``inf`` values are allowed and count as larger than any number; NaN for ``n = 0``.

    Parameters
    ----------
    v : Tensor
        ``(n,)`` without NaN.
    """
    s = v.double().sort().values
    n = s.numel()
    if n == 0:
        return math.nan
    lo, hi = float(s[(n - 1) // 2]), float(s[n // 2])
    return lo if lo == hi else (lo + hi) / 2


def median_ci(
    values: Tensor, *, level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the median, ``inf`` values included.

    Parameters
    ----------
    values : Tensor
        ``(n,)``; NaN is not allowed (drop undefined values before, and report how many).
    level : float, default 0.95
    resamples : int, default 2000
    seed : int, default 0
        Seeds the resampling generator (the interval is reproducible).

    Returns
    -------
    (low, high)
        ``(nan, nan)`` for fewer than 2 values.
    """
    v = values.detach().double().flatten().cpu()
    if torch.isnan(v).any():
        raise ValueError("median_ci: values contain NaN")
    if not 0 < level < 1:
        raise ValueError(f"median_ci: level must lie in (0, 1), got {level!r}")
    n = v.numel()
    if n < 2:
        return math.nan, math.nan
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (resamples, n), generator=g)
    meds = v[idx].sort(dim=1).values
    lo_mid, hi_mid = meds[:, (n - 1) // 2], meds[:, n // 2]
    both_inf = torch.isinf(lo_mid) & torch.isinf(hi_mid)
    med = torch.where(both_inf, hi_mid, (lo_mid + hi_mid) / 2).sort().values
    a = (1 - level) / 2
    k_lo = int(math.floor(a * (resamples - 1)))
    k_hi = int(math.ceil((1 - a) * (resamples - 1)))
    return float(med[k_lo]), float(med[k_hi])


@dataclass(frozen=True)
class DistanceSummary:
    """Minimal adversarial distances of one model, failures included.

    ``n`` correctly classified samples were attacked, ``n_broken`` of them broken (finite
    distance) and ``n_failed`` not (``inf``). ``median`` and ``ci`` are over all ``n`` (``inf``
    counts as larger than any distance). ``robust_accuracy`` maps each radius ``ε`` to the share of
    *all* ``n_total`` samples that are classified correctly and not broken within ``ε``.
    """

    n_total: int
    n: int
    n_broken: int
    n_failed: int
    median: float
    ci: tuple[float, float]
    robust_accuracy: dict[float, float]


def summarize_distances(
    distance: Tensor,
    correct: Tensor,
    *,
    epsilons: Sequence[float] = (),
    level: float = 0.95,
    seed: int = 0,
) -> DistanceSummary:
    """Summarise per-sample distances ``(N,)`` (``inf`` = not broken) of samples ``correct`` ``(N,)``.

    Parameters
    ----------
    distance : Tensor
        ``(N,)`` verified minimal distances, ``inf`` where no attack succeeded.
    correct : Tensor
        ``(N,)`` bool, where the clean prediction was right (only those are counted as attacked).
    epsilons : sequence of float
        Radii of the robust accuracy.
    level : float
        Confidence level of the bootstrap interval of the median.
    seed : int
        Seed of the bootstrap.

    Examples
    --------
    >>> d = torch.tensor([0.5, 1.0, float("inf"), float("inf"), float("inf")])
    >>> summarize_distances(d, torch.ones(5, dtype=torch.bool)).median
    inf
    """
    if distance.dim() != 1 or correct.shape != distance.shape or correct.dtype != torch.bool:
        raise ValueError(
            "summarize_distances: distance must be (N,) and correct an (N,) bool tensor, got "
            f"{tuple(distance.shape)} and {tuple(correct.shape)} {correct.dtype}"
        )
    d = distance.detach().double().cpu()
    ok = correct.detach().cpu()
    if torch.isnan(d[ok]).any():
        raise ValueError("summarize_distances: distances of correct samples contain NaN")
    mine = d[ok]
    finite = torch.isfinite(mine)
    robust = {}
    for e in epsilons:
        if not (isinstance(e, (int, float)) and math.isfinite(e) and e >= 0):
            raise ValueError(f"summarize_distances: epsilons must be finite and >= 0, got {e!r}")
        robust[float(e)] = float((mine > e).sum()) / max(d.numel(), 1)
    return DistanceSummary(
        n_total=int(d.numel()),
        n=int(mine.numel()),
        n_broken=int(finite.sum()),
        n_failed=int((~finite).sum()),
        median=median(mine),
        ci=median_ci(mine, level=level, seed=seed),
        robust_accuracy=robust,
    )
