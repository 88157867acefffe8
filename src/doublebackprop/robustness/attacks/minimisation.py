"""Minimum-norm attacks that minimise the perturbation directly: DeepFool, DDN, Carlini–Wagner."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from doublebackprop.robustness._core import (
    batch_view,
    logits_of,
    scalar_gradient,
)
from doublebackprop.robustness.attacks.base import (
    Attack,
    _margin,
    _positive_float,
    _positive_int,
)
from doublebackprop.robustness.norms import (
    L2,
    Norm,
    as_norm,
)

__all__ = ["CarliniWagner", "DDN", "DeepFool"]

Tensor = torch.Tensor


def _difference_gradients(model, x: Tensor, cand: Tensor) -> tuple[Tensor, Tensor]:
    """Logits and ``∇_x(z_{cand_k} − z_{cand_0})`` for ``k ≥ 1``: ``(N, K−1, ...)``.

    One forward pass and ``K − 1`` backward passes (one fewer than the ``K`` class gradients).
    """
    xr = x.detach().requires_grad_(True)
    k = cand.shape[1]
    with torch.enable_grad():
        logits = model(xr)
        base = logits.gather(1, cand[:, :1])
        grads = []
        for c in range(1, k):
            score = (logits.gather(1, cand[:, c : c + 1]) - base).sum()
            (g,) = torch.autograd.grad(score, xr, retain_graph=c < k - 1)
            grads.append(g)
    return logits.detach(), torch.stack(grads, 1)


class DeepFool(Attack):
    """Batched DeepFool (Moosavi-Dezfooli et al. 2016), L2 or L∞.

    Parameters
    ----------
    norm : L2 or Linf
    steps : int, default 50
    candidates : int, default 10
        Classes considered: the label and the ``candidates − 1`` highest other logits at ``x``.
    overshoot : float, default 0.02
    """

    def __init__(
        self,
        *,
        norm: Norm | float = 2,
        steps: int = 50,
        candidates: int = 10,
        overshoot: float = 0.02,
    ) -> None:
        self.norm = as_norm(norm, "DeepFool")
        _positive_int(steps=steps, candidates=candidates)
        if candidates < 2:
            raise ValueError(f"DeepFool: candidates must be >= 2, got {candidates}")
        if not overshoot >= 0:
            raise ValueError(f"DeepFool: overshoot must be >= 0, got {overshoot}")
        self.steps, self.candidates, self.overshoot = steps, candidates, float(overshoot)

    def run(self, model, x, y, bounds, generator):
        lo, hi = bounds
        z0 = logits_of(model, x, self.name)
        k = min(self.candidates, z0.shape[1])
        others = z0.scatter(1, y.view(-1, 1), -math.inf).topk(k - 1, dim=1).indices
        cand = torch.cat([y.view(-1, 1), others], dim=1)
        total = torch.zeros_like(x)
        adv = x.clone()
        active = torch.arange(x.shape[0], device=x.device)
        for _ in range(self.steps):
            logits, w = _difference_gradients(model, adv[active], cand[active])
            keep = logits.argmax(1) == y[active]
            active, logits, w = active[keep], logits[keep], w[keep]
            if active.numel() == 0:
                break
            z = logits.gather(1, cand[active])
            f = (z[:, 1:] - z[:, :1]).abs()  # (n, k-1)
            wn = (
                w.flatten(2).norm(dim=2) if isinstance(self.norm, L2) else w.flatten(2).abs().sum(2)
            )
            dist = torch.where(wn > 0, f / wn.clamp_min(1e-30), torch.full_like(f, math.inf))
            j = dist.argmin(1)
            idx = torch.arange(active.numel(), device=x.device)
            fj, wj, wnj = f[idx, j], w[idx, j], wn[idx, j].clamp_min(1e-12)
            if isinstance(self.norm, L2):
                step = batch_view((fj + 1e-4) / wnj**2, wj) * wj
            else:
                step = batch_view((fj + 1e-4) / wnj, wj) * wj.sign()
            total[active] += step
            adv[active] = (x[active] + (1 + self.overshoot) * total[active]).clamp(lo, hi)
        return adv


class DDN(Attack):
    """Decoupled Direction and Norm (Rony et al. 2019), L2 minimal-norm attack.

    Parameters
    ----------
    steps : int, default 100
    init_epsilon : float, default 1.0
    gamma : float, default 0.05
        Relative change of the norm budget per step.
    step_size : float, default 1.0
        Initial step length, cosine-annealed to 1% of it.
    """

    def __init__(
        self,
        *,
        steps: int = 100,
        init_epsilon: float = 1.0,
        gamma: float = 0.05,
        step_size: float = 1.0,
    ) -> None:
        _positive_int(steps=steps)
        _positive_float("DDN", init_epsilon=init_epsilon, gamma=gamma, step_size=step_size)
        self.steps, self.init_epsilon, self.gamma, self.step_size = (
            steps,
            init_epsilon,
            gamma,
            step_size,
        )
        self.norm = L2()

    def run(self, model, x, y, bounds, generator):
        lo, hi = bounds
        n = x.shape[0]
        delta = torch.zeros_like(x)
        eps = torch.full((n,), self.init_epsilon, dtype=x.dtype, device=x.device)
        best = x.clone()
        best_norm = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
        for i in range(self.steps + 1):
            logits, g = scalar_gradient(
                model, x + delta, lambda z: F.cross_entropy(z, y, reduction="none")
            )
            is_adv = logits.argmax(1) != y
            norm = self.norm(delta)
            better = is_adv & (norm < best_norm)
            best[better], best_norm[better] = (x + delta)[better], norm[better]
            if i == self.steps:
                break
            alpha = (
                0.01 * self.step_size
                + 0.99 * self.step_size * (1 + math.cos(math.pi * i / self.steps)) / 2
            )
            delta = delta + alpha * self.norm.ascent(g)
            eps = torch.where(is_adv, eps * (1 - self.gamma), eps * (1 + self.gamma))
            eps = torch.minimum(eps, best_norm)
            dn = self.norm(delta).clamp_min(1e-12)
            delta = delta * batch_view(eps / dn, delta)
            delta = (x + delta).clamp(lo, hi) - x
        return best


class CarliniWagner(Attack):
    """Carlini–Wagner L2 (2017): tanh box reparametrisation, Adam, binary search over the constant.

    Parameters
    ----------
    binary_search_steps : int, default 5
    steps : int, default 100
    step_size : float, default 0.05
    confidence : float, default 0
    initial_const : float, default 1.0
    """

    def __init__(
        self,
        *,
        binary_search_steps: int = 5,
        steps: int = 100,
        step_size: float = 0.05,
        confidence: float = 0.0,
        initial_const: float = 1.0,
    ) -> None:
        _positive_int(binary_search_steps=binary_search_steps, steps=steps)
        _positive_float("CarliniWagner", step_size=step_size, initial_const=initial_const)
        if not confidence >= 0:
            raise ValueError(f"CarliniWagner: confidence must be >= 0, got {confidence}")
        self.binary_search_steps, self.steps, self.step_size = binary_search_steps, steps, step_size
        self.confidence, self.initial_const = float(confidence), float(initial_const)
        self.norm = L2()

    def run(self, model, x, y, bounds, generator):
        lo, hi = bounds
        half = (hi - lo) / 2

        def to_x(w: Tensor) -> Tensor:
            return (torch.tanh(w) * half + lo + half).clamp(lo, hi)

        w0 = torch.atanh(((x - lo) / half - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        n = x.shape[0]
        const = torch.full((n,), self.initial_const, dtype=x.dtype, device=x.device)
        lower = torch.zeros_like(const)
        upper = torch.full_like(const, math.inf)
        best = x.clone()
        best_norm = torch.full_like(const, math.inf)
        for _ in range(self.binary_search_steps):
            m = torch.zeros_like(x)
            m1, m2 = torch.zeros_like(x), torch.zeros_like(x)
            found = torch.zeros(n, dtype=torch.bool, device=x.device)
            for t in range(1, self.steps + 1):
                w = w0 + m
                adv = to_x(w)

                def hinge(z: Tensor, c: Tensor = const) -> Tensor:
                    return c * (_margin(z, y) + self.confidence).clamp_min(0)

                logits, g = scalar_gradient(model, adv, hinge)
                is_adv = logits.argmax(1) != y
                norm = self.norm(adv - x)
                better = is_adv & (norm < best_norm)
                best[better], best_norm[better] = adv[better], norm[better]
                found |= is_adv
                gx = g + 2 * (adv - x)
                gm = gx * (1 - torch.tanh(w) ** 2) * half
                m1 = 0.9 * m1 + 0.1 * gm
                m2 = 0.999 * m2 + 0.001 * gm**2
                m = m - self.step_size * (m1 / (1 - 0.9**t)) / ((m2 / (1 - 0.999**t)).sqrt() + 1e-8)
            upper = torch.where(found, torch.minimum(upper, const), upper)
            lower = torch.where(found, lower, torch.maximum(lower, const))
            const = torch.where(torch.isfinite(upper), (lower + upper) / 2, const * 10)
        return best
