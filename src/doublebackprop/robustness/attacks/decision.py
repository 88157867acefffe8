"""Attacks that never use the attacked model's gradient: decision-based and transfer.

They are the gradient-masking checks of :func:`~doublebackprop.robustness.ensemble_attack`: a
model whose gradients are shattered or obfuscated (e.g. ``x ↦ net(x + 0.03·sin(1000x))``) defeats
gradient attacks but not these, and when either finds clearly smaller distances than the gradient
attacks the ensemble raises a :class:`~doublebackprop.robustness.RobustnessWarning`.

* :class:`HopSkipJump`: a batched variant of HopSkipJumpAttack (Chen, Jordan & Wainwright 2020),
  L2, which queries only the predicted label: a random adversarial start, a binary search to the
  boundary, then repeatedly a Monte-Carlo estimate of the boundary's normal from label queries
  around the boundary point, a geometric step along it, and a binary search back towards ``x``.
* :class:`Transfer`: runs a gradient attack on a *source* model (the same net without a wrapper,
  when given; by default the Gaussian-smoothed model ``E_ε Ψ(x + σε)``), then verifies each point on
  the attacked model, stretching the perturbation up to ``max_scale`` times where needed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from doublebackprop.robustness._core import batch_view
from doublebackprop.robustness.attacks.base import Attack, _positive_float, _positive_int
from doublebackprop.robustness.norms import L2, Norm, as_norm

__all__ = ["GaussianSmoothing", "HopSkipJump", "Transfer"]

Tensor = torch.Tensor


def _fooled(model: nn.Module, p: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        return model(p).argmax(1) != y


def _to_boundary(model, x, adv, y, active, steps: int) -> Tensor:
    """Bisection on the segment ``x → adv`` (``adv`` adversarial where ``active``)."""
    lo = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    hi = torch.ones_like(lo)
    for _ in range(steps):
        mid = (lo + hi) / 2
        ok = _fooled(model, x + batch_view(mid, x) * (adv - x), y)
        hi = torch.where(active & ok, mid, hi)
        lo = torch.where(active & ~ok, mid, lo)
    return torch.where(batch_view(active, x), x + batch_view(hi, x) * (adv - x), x)


class HopSkipJump(Attack):
    """Batched decision-based L2 attack (HopSkipJump style): label queries only, no gradients.

    Parameters
    ----------
    steps : int, default 20
        Iterations of (normal estimate, geometric step, binary search).
    queries : int, default 50
        Label queries per sample for each normal estimate.
    init_trials : int, default 50
        Uniform random images tried as adversarial starting points.
    search_steps : int, default 12
        Bisection steps of each binary search.
    """

    uses_gradients = False

    def __init__(
        self,
        *,
        steps: int = 20,
        queries: int = 50,
        init_trials: int = 50,
        search_steps: int = 12,
    ) -> None:
        _positive_int(steps=steps, queries=queries, init_trials=init_trials)
        _positive_int(search_steps=search_steps)
        self.norm: Norm = L2()
        self.steps, self.queries = steps, queries
        self.init_trials, self.search_steps = init_trials, search_steps

    def run(self, model, x, y, bounds, generator):
        lo, hi = bounds
        n, d = x.shape[0], x[0].numel()
        dev, dt = generator.device, x.dtype

        def rand(*shape: int) -> Tensor:
            return torch.rand(shape, generator=generator, device=dev, dtype=dt).to(x.device)

        start, found = x.clone(), torch.zeros(n, dtype=torch.bool, device=x.device)
        for _ in range(self.init_trials):
            cand = lo + (hi - lo) * rand(*x.shape)
            ok = ~found & _fooled(model, cand, y)
            start[ok], found = cand[ok], found | ok
            if bool(found.all()):
                break
        best = _to_boundary(model, x, start, y, found, self.search_steps)
        dist = torch.where(
            found, (best - x).flatten(1).norm(dim=1), torch.zeros_like(found, dtype=dt)
        )
        for t in range(1, self.steps + 1):
            if not bool(found.any()):
                break
            idx = found.nonzero().squeeze(1)
            xb, xs, ys, ds = best[idx], x[idx], y[idx], dist[idx]
            m = idx.numel()
            delta = ds / d  # the probe radius sqrt(d)·θ·dist with θ = d^(-3/2)
            u = torch.randn(
                (m, self.queries, *x.shape[1:]), generator=generator, device=dev, dtype=dt
            ).to(x.device)
            u = u / u.flatten(2).norm(dim=2).view(m, self.queries, *[1] * (x.dim() - 1))
            probes = (xb.unsqueeze(1) + batch_view(delta, xb).unsqueeze(1) * u).clamp(lo, hi)
            phi = _fooled(model, probes.flatten(0, 1), ys.repeat_interleave(self.queries)).view(
                m, self.queries
            )
            phi = phi.to(dt) * 2 - 1
            mean = phi.mean(1, keepdim=True)
            w = torch.where(mean.abs() == 1, phi, phi - mean)
            v = (w.view(m, self.queries, *[1] * (x.dim() - 1)) * (probes - xb.unsqueeze(1))).mean(1)
            vn = v.flatten(1).norm(dim=1)
            v = v / batch_view(torch.where(vn > 0, vn, torch.ones_like(vn)), v)
            xi = ds / math.sqrt(t)
            cand, ok = xb.clone(), torch.zeros(m, dtype=torch.bool, device=x.device)
            for _ in range(10):  # geometric step search: halve until adversarial
                trial = (xb + batch_view(xi, xb) * v).clamp(lo, hi)
                hit = ~ok & _fooled(model, trial, ys)
                cand[hit], ok = trial[hit], ok | hit
                xi = torch.where(ok, xi, xi / 2)
                if bool(ok.all()):
                    break
            new = _to_boundary(model, xs, cand, ys, ok, self.search_steps)
            nd = (new - xs).flatten(1).norm(dim=1)
            better = ok & (nd < ds) & _fooled(model, new, ys)
            best[idx[better]], dist[idx[better]] = new[better], nd[better]
        return torch.where(batch_view(found, x), best, x)


class GaussianSmoothing(nn.Module):
    """The smoothed classifier ``x ↦ mean_s Ψ(x + σ ε_s)``, ``ε_s`` drawn afresh on every call.

    A smooth surrogate for :class:`Transfer`: averaging over the noise removes gradient structure
    finer than ``σ``. Parameters: ``model``, ``sigma`` (> 0), ``samples`` (≥ 1), ``generator``.
    """

    def __init__(
        self, model: nn.Module, *, sigma: float, samples: int, generator: torch.Generator
    ) -> None:
        super().__init__()
        self.model, self.sigma, self.samples, self.generator = model, sigma, samples, generator

    def forward(self, x: Tensor) -> Tensor:
        g = self.generator
        eps = torch.randn((self.samples, *x.shape), generator=g, device=g.device, dtype=x.dtype)
        z = self.model((x.unsqueeze(0) + self.sigma * eps.to(x.device)).flatten(0, 1))
        return z.view(self.samples, x.shape[0], -1).mean(0)


class Transfer(Attack):
    """Attack a source model with a gradient attack, then verify the points on the attacked model.

    Parameters
    ----------
    attack : Attack
        The gradient attack run on the source (its norm is this attack's norm).
    source : nn.Module or None
        The source model, e.g. the same network without an input wrapper. ``None``: the
        Gaussian-smoothed attacked model (:class:`GaussianSmoothing`).
    sigma : float, default 0.1
        Noise level of the default surrogate.
    samples : int, default 16
        Noise draws per forward pass of the default surrogate.
    max_scale : float, default 4.0
        Where the transferred perturbation ``δ`` does not fool the model, ``t·δ`` is tried for
        ``t`` up to ``max_scale`` (the box is respected; the base class verifies).
    """

    uses_gradients = False  # never differentiates the attacked model

    def __init__(
        self,
        *,
        attack: Attack,
        source: nn.Module | None = None,
        sigma: float = 0.1,
        samples: int = 16,
        max_scale: float = 4.0,
    ) -> None:
        if not isinstance(attack, Attack):
            raise TypeError(f"Transfer: attack must be an Attack, got {attack!r}")
        if source is not None and not isinstance(source, nn.Module):
            raise TypeError(f"Transfer: source must be an nn.Module or None, got {source!r}")
        _positive_float("Transfer", sigma=sigma, max_scale=max_scale)
        _positive_int(samples=samples)
        self.attack, self.source, self.norm = attack, source, as_norm(attack.norm, "Transfer")
        self.sigma, self.samples, self.max_scale = float(sigma), samples, float(max_scale)

    @property
    def name(self) -> str:
        src = "source" if self.source is not None else f"smoothed σ={self.sigma:g}"
        return f"Transfer({self.attack.name}, {src})"

    def run(self, model, x, y, bounds, generator):
        lo, hi = bounds
        source = self.source
        if source is None:
            source = GaussianSmoothing(
                model, sigma=self.sigma, samples=self.samples, generator=generator
            )
        delta = self.attack(source, x, y, bounds=bounds, generator=generator).adversarial - x
        out, done = x.clone(), torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        t = 1.0
        while t <= self.max_scale + 1e-9:
            cand = (x + t * delta).clamp(lo, hi)
            hit = ~done & _fooled(model, cand, y)
            out[hit], done = cand[hit], done | hit
            t *= 1.25
        return out
