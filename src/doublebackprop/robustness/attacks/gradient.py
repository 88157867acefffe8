"""Gradient-ascent attacks: PGD at a fixed ε, its minimal-ε search, and random directions."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from doublebackprop.robustness._core import (
    batch_view,
    scalar_gradient,
)
from doublebackprop.robustness.attacks.base import (
    Attack,
    _positive_float,
    _positive_int,
    _randn,
)
from doublebackprop.robustness.norms import (
    L2,
    Linf,
    Norm,
    as_norm,
)

__all__ = ["MinimalPGD", "PGD", "RandomDirections"]

Tensor = torch.Tensor


def _pgd(
    model, x, y, eps, norm, steps, rel_step_size, random_start, bounds, generator
) -> tuple[Tensor, Tensor]:
    """PGD with per-sample ``eps`` ``(N,)``; returns the first adversarial iterate per sample
    (else the last) and where one was found."""
    lo, hi = bounds
    if random_start:
        if isinstance(norm, Linf):
            u = torch.rand(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(
                x.device
            )
            delta = (2 * u - 1) * batch_view(eps, x)
        else:
            d = L2().ascent(_randn(x.shape, generator, x))
            r = torch.rand(
                x.shape[0], generator=generator, device=generator.device, dtype=x.dtype
            ).to(x.device)
            delta = d * batch_view(eps * r, x)
        delta = (x + delta).clamp(lo, hi) - x
    else:
        delta = torch.zeros_like(x)
    step = rel_step_size * eps
    out = x + delta
    found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for _ in range(steps):
        logits, g = scalar_gradient(
            model, x + delta, lambda z: F.cross_entropy(z, y, reduction="none")
        )
        new = (logits.argmax(1) != y) & ~found
        out[new], found = (x + delta)[new], found | new
        delta = norm.project(delta + batch_view(step, x) * norm.ascent(g), eps)
        delta = (x + delta).clamp(lo, hi) - x
    with torch.no_grad():
        new = (model(x + delta).argmax(1) != y) & ~found
    out[new], found = (x + delta)[new], found | new
    out[~found] = (x + delta)[~found]
    return out, found


class PGD(Attack):
    """Projected gradient descent on the cross-entropy within a fixed ``epsilon`` ball (L2 or L∞).

    Parameters
    ----------
    epsilon : float
    norm : L2 or Linf, default Linf
    steps : int, default 40
    rel_step_size : float, default 0.1
        Step length as a fraction of ``epsilon``.
    random_start : bool, default True
        Start uniformly in the ball, drawn from the ``generator``.
    """

    def __init__(
        self,
        *,
        epsilon: float,
        norm: Norm | float = math.inf,
        steps: int = 40,
        rel_step_size: float = 0.1,
        random_start: bool = True,
    ) -> None:
        if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and epsilon >= 0):
            raise ValueError(f"PGD: epsilon must be a finite number >= 0, got {epsilon!r}")
        _positive_int(steps=steps)
        _positive_float("PGD", rel_step_size=rel_step_size)
        self.epsilon, self.norm, self.steps = float(epsilon), as_norm(norm, "PGD"), steps
        self.rel_step_size, self.random_start = rel_step_size, bool(random_start)

    def run(self, model, x, y, bounds, generator):
        eps = torch.full((x.shape[0],), self.epsilon, dtype=x.dtype, device=x.device)
        out, _ = _pgd(
            model,
            x,
            y,
            eps,
            self.norm,
            self.steps,
            self.rel_step_size,
            self.random_start,
            bounds,
            generator,
        )
        return out


class MinimalPGD(Attack):
    """Minimal ``epsilon`` by bisection, PGD at every trial radius (batched, per-sample radii).

    Parameters
    ----------
    norm : L2 or Linf, default Linf
    max_epsilon : float, default 1.0
        Upper end of the search (doubled up to 4 times while samples remain unbroken).
    search_steps : int, default 8
    steps : int, default 20
        PGD steps per trial.
    """

    def __init__(
        self,
        *,
        norm: Norm | float = math.inf,
        max_epsilon: float = 1.0,
        search_steps: int = 8,
        steps: int = 20,
    ) -> None:
        self.norm = as_norm(norm, "MinimalPGD")
        _positive_float("MinimalPGD", max_epsilon=max_epsilon)
        _positive_int(search_steps=search_steps, steps=steps)
        self.max_epsilon, self.search_steps, self.steps = max_epsilon, search_steps, steps

    def run(self, model, x, y, bounds, generator):
        n = x.shape[0]
        best = x.clone()
        lo_eps = torch.zeros(n, dtype=x.dtype, device=x.device)
        hi_eps = torch.full_like(lo_eps, math.inf)
        eps = torch.full_like(lo_eps, self.max_epsilon)
        for _ in range(4):  # find an upper end that breaks the samples
            todo = ~torch.isfinite(hi_eps)
            if not todo.any():
                break
            out, ok = _pgd(
                model,
                x[todo],
                y[todo],
                eps[todo],
                self.norm,
                self.steps,
                0.1,
                True,
                bounds,
                generator,
            )
            idx = todo.nonzero().squeeze(1)
            best[idx[ok]] = out[ok]
            hi_eps[idx[ok]] = eps[idx[ok]]
            eps[idx[~ok]] *= 2
        done = torch.isfinite(hi_eps)
        for _ in range(self.search_steps):
            if not done.any():
                break
            mid = (lo_eps + hi_eps) / 2
            idx = done.nonzero().squeeze(1)
            out, ok = _pgd(
                model, x[idx], y[idx], mid[idx], self.norm, self.steps, 0.1, True, bounds, generator
            )
            best[idx[ok]] = out[ok]
            hi_eps[idx[ok]] = mid[idx[ok]]
            lo_eps[idx[~ok]] = mid[idx[~ok]]
        return best


class RandomDirections(Attack):
    """Gradient-free: the smallest scale along random directions that changes the prediction.

    Used by the ensemble as a gradient-masking check (a gradient-free attack should not beat the
    gradient attacks).

    Parameters
    ----------
    norm : L2 or Linf, default L2
    directions : int, default 20
    search_steps : int, default 10
        Bisection steps after a geometric scan.
    """

    uses_gradients = False

    def __init__(
        self, *, norm: Norm | float = 2, directions: int = 20, search_steps: int = 10
    ) -> None:
        self.norm = as_norm(norm, "RandomDirections")
        _positive_int(directions=directions, search_steps=search_steps)
        self.directions, self.search_steps = directions, search_steps

    def run(self, model, x, y, bounds, generator):
        lo, hi = bounds
        n = x.shape[0]
        best = x.clone()
        best_norm = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
        diameter = self.norm(torch.full_like(x[:1], hi - lo)).item()
        scales = [diameter * 2.0**-k for k in range(12, -1, -1)]

        def fooled(t: Tensor, d: Tensor) -> Tensor:
            with torch.no_grad():
                return model((x + batch_view(t, x) * d).clamp(lo, hi)).argmax(1) != y

        for _ in range(self.directions):
            d = self.norm.ascent(_randn(x.shape, generator, x))
            if isinstance(self.norm, L2):
                d = L2().ascent(d)
            upper = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
            for s in scales:
                todo = ~torch.isfinite(upper)
                if not todo.any():
                    break
                t = torch.full((n,), s, dtype=x.dtype, device=x.device)
                upper = torch.where(todo & fooled(t, d), t, upper)
            found = torch.isfinite(upper)
            low = torch.where(found, upper / 2, upper)
            for _ in range(self.search_steps):
                mid = (low + upper) / 2
                ok = found & fooled(torch.where(found, mid, torch.zeros_like(mid)), d)
                upper = torch.where(ok, mid, upper)
                low = torch.where(found & ~ok, mid, low)
            cand = (
                x + batch_view(torch.where(found, upper, torch.zeros_like(upper)), x) * d
            ).clamp(lo, hi)
            norm = torch.where(found, self.norm(cand - x), torch.full_like(upper, math.inf))
            better = norm < best_norm
            best[better], best_norm[better] = cand[better], norm[better]
        return best
