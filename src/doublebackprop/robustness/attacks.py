"""Batched adversarial attacks with box bounds, explicit seeding and verified results.

Every attack subclasses :class:`Attack`, whose final ``__call__`` validates the arguments,
checks that ``x`` lies inside the declared bounds (nothing is clamped silently), runs the model in
eval mode with frozen parameters (restored afterwards), calls the one hook ``run`` on the samples
that are still classified correctly, and *verifies* the returned points: a distance is reported
only where the prediction really changed (``inf`` elsewhere).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ._core import (
    check_batch,
    check_bounds,
    check_classes,
    check_within,
    class_gradients,
    evaluation,
    logits_of,
    scalar_gradient,
)
from .norms import L2, Linf, Norm, as_norm

__all__ = [
    "Attack",
    "AttackResult",
    "CarliniWagner",
    "DDN",
    "DeepFool",
    "MinimalPGD",
    "PGD",
    "RandomDirections",
]

Tensor = torch.Tensor
Bounds = tuple[float, float]


@dataclass(frozen=True)
class AttackResult:
    """Outcome of one attack on a batch.

    ``adversarial`` ``(N, ...)`` are the returned points (``x`` where the sample was already
    misclassified or the attack failed), ``success`` ``(N,)`` says where the prediction differs from
    the label (verified by a forward pass), ``distance`` ``(N,)`` is ``‖adversarial − x‖`` there and
    ``inf`` elsewhere (``0`` for samples misclassified from the start).
    """

    adversarial: Tensor
    success: Tensor
    distance: Tensor
    attack: str


def _view(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def _generator(generator: torch.Generator | None, seed: int) -> torch.Generator:
    if generator is None:
        return torch.Generator().manual_seed(seed)
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}"
        )
    return generator


def _randn(shape: torch.Size, generator: torch.Generator, like: Tensor) -> Tensor:
    return torch.randn(shape, generator=generator, device=generator.device, dtype=like.dtype).to(
        like.device
    )


class Attack(ABC):
    """Base class: a final ``__call__`` and one hook, :meth:`run`.

    Subclasses set ``norm`` and implement ``run(model, x, y, bounds, generator) -> x_adv`` for a
    batch of correctly classified samples; ``x_adv`` must lie inside ``bounds``.
    """

    norm: Norm = L2()
    #: whether the attack uses gradients (the gradient-masking check compares the two kinds)
    uses_gradients: bool = True
    #: the default seed when no generator is passed (results are reproducible either way)
    seed: int = 0

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "__call__" in cls.__dict__:
            raise TypeError(f"{cls.__name__}: implement run(), not __call__ (it is final)")

    @property
    def name(self) -> str:
        return f"{type(self).__name__}({type(self.norm).__name__})"

    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor | None = None,
        *,
        bounds: Bounds = (0.0, 1.0),
        generator: torch.Generator | None = None,
    ) -> AttackResult:
        """Attack ``model`` at ``x`` (``(N, ...)``) with labels ``y`` (``(N,)``; ``None``: the
        predicted class). Returns an :class:`AttackResult`."""
        where = self.name
        model, x, y = check_batch(model, x, y, where)
        lo_hi = check_bounds(bounds, where)
        check_within(x, lo_hi, where)
        gen = _generator(generator, self.seed)
        with evaluation(model):
            logits = logits_of(model, x, where)
            _check_logits_scale(logits, where)
            if y is None:
                y = logits.argmax(1)
            check_classes(y, logits, where)
            todo = (logits.argmax(1) == y).nonzero().squeeze(1)
            adv = x.clone()
            if todo.numel():
                out = self.run(model, x[todo], y[todo], lo_hi, gen).detach()
                if out.shape != x[todo].shape:
                    raise RuntimeError(f"{where}: run() returned shape {tuple(out.shape)}")
                adv[todo] = out.to(x.dtype)
            check_within(adv, lo_hi, where, name="the attack's output (a bug in the attack)")
            success = logits_of(model, adv, where).argmax(1) != y
        adv = torch.where(_view(success, x), adv, x)
        distance = torch.where(
            success, self.norm(adv - x), torch.full_like(success, math.inf, dtype=x.dtype)
        )
        return AttackResult(adversarial=adv, success=success, distance=distance, attack=where)

    @abstractmethod
    def run(
        self, model: nn.Module, x: Tensor, y: Tensor, bounds: Bounds, generator: torch.Generator
    ) -> Tensor:
        """Adversarial candidates for correctly classified ``x`` with labels ``y``."""

    def __repr__(self) -> str:
        return self.name


def _check_logits_scale(logits: Tensor, where: str) -> None:
    import warnings

    from .ensemble import RobustnessWarning

    if logits.shape[1] > 1 and logits.min() >= 0 and logits.max() <= 1:
        if torch.allclose(logits.sum(1), torch.ones_like(logits[:, 0]), atol=1e-4):
            warnings.warn(
                f"{where}: the model's outputs look like probabilities "
                "(rows in [0, 1] summing to 1); "
                "attacks and distances expect logits",
                RobustnessWarning,
                stacklevel=4,
            )


def _margin(z: Tensor, y: Tensor) -> Tensor:
    """``z_y − max_{j≠y} z_j`` per sample (positive while correctly classified)."""
    other = z.clone()
    other.scatter_(1, y.view(-1, 1), -math.inf)
    return z.gather(1, y.view(-1, 1)).squeeze(1) - other.amax(1)


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
            logits, grads = class_gradients(model, adv[active], cand[active])
            keep = logits.argmax(1) == y[active]
            active, logits, grads = active[keep], logits[keep], grads[keep]
            if active.numel() == 0:
                break
            z = logits.gather(1, cand[active])
            f = (z[:, 1:] - z[:, :1]).abs()  # (n, k-1)
            w = grads[:, 1:] - grads[:, :1]
            wn = (
                w.flatten(2).norm(dim=2) if isinstance(self.norm, L2) else w.flatten(2).abs().sum(2)
            )
            dist = torch.where(wn > 0, f / wn.clamp_min(1e-30), torch.full_like(f, math.inf))
            j = dist.argmin(1)
            idx = torch.arange(active.numel(), device=x.device)
            fj, wj, wnj = f[idx, j], w[idx, j], wn[idx, j].clamp_min(1e-12)
            if isinstance(self.norm, L2):
                step = _view((fj + 1e-4) / wnj**2, wj) * wj
            else:
                step = _view((fj + 1e-4) / wnj, wj) * wj.sign()
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
            delta = delta * _view(eps / dn, delta)
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
                c = const
                logits, g = scalar_gradient(
                    model, adv, lambda z, c=c: c * (_margin(z, y) + self.confidence).clamp_min(0)
                )
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
            delta = (2 * u - 1) * _view(eps, x)
        else:
            d = L2().ascent(_randn(x.shape, generator, x))
            r = torch.rand(
                x.shape[0], generator=generator, device=generator.device, dtype=x.dtype
            ).to(x.device)
            delta = d * _view(eps * r, x)
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
        delta = norm.project(delta + _view(step, x) * norm.ascent(g), eps)
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
                return model((x + _view(t, x) * d).clamp(lo, hi)).argmax(1) != y

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
            cand = (x + _view(torch.where(found, upper, torch.zeros_like(upper)), x) * d).clamp(
                lo, hi
            )
            norm = torch.where(found, self.norm(cand - x), torch.full_like(upper, math.inf))
            better = norm < best_norm
            best[better], best_norm[better] = cand[better], norm[better]
        return best


def _positive_int(**values: object) -> None:
    for name, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")


def _positive_float(owner: str, **values: object) -> None:
    for name, v in values.items():
        if (
            not isinstance(v, (int, float))
            or isinstance(v, bool)
            or not (math.isfinite(v) and v > 0)
        ):
            raise ValueError(f"{owner}: {name} must be a finite number > 0, got {v!r}")
