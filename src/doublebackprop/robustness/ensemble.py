"""Best-of-ensemble minimal distances, robust accuracy and AutoAttack-style sanity checks."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from doublebackprop.robustness._core import (
    RobustnessWarning,
    check_batch,
    check_bounds,
    check_within,
    evaluation,
    logits_of,
    scalar_gradient,
)
from doublebackprop.robustness.attacks import (
    DDN,
    Attack,
    AttackResult,
    CarliniWagner,
    DeepFool,
    HopSkipJump,
    MinimalPGD,
    RandomDirections,
    Transfer,
)
from doublebackprop.robustness.norms import L2, Norm, as_norm

__all__ = [
    "EnsembleResult",
    "RobustnessWarning",
    "default_attacks",
    "ensemble_attack",
    "minimal_distance",
    "refine_to_boundary",
    "robust_accuracy",
]

Tensor = torch.Tensor


@dataclass(frozen=True)
class EnsembleResult:
    """Per-sample best verified adversarial over several attacks.

    ``distance`` ``(N,)``: the smallest verified distance (``inf`` where no attack succeeded);
    ``best`` ``(N,)``: index into ``attacks`` of the attack that achieved it (``-1`` where none);
    ``per_attack``: each attack's own distances (after refinement); ``masking_fraction``: share of
    the samples where the gradient-free attack beat every gradient attack by more than 10%;
    ``warnings``: the sanity messages that were also issued as :class:`RobustnessWarning`.
    """

    distance: Tensor
    adversarial: Tensor
    best: Tensor
    attacks: tuple[str, ...]
    per_attack: dict[str, Tensor]
    masking_fraction: float
    warnings: tuple[str, ...]


def default_attacks(norm: Norm, *, fast: bool = False) -> list[Attack]:
    """The default ensemble for ``norm``; ``fast``: fewer iterations (the study's quick mode).

    L2 includes the decision-based :class:`HopSkipJump` and L∞ the random-direction search: the
    gradient-free checks against gradient masking.

    Parameters
    ----------
    norm : Norm
    fast : bool
    """
    if isinstance(norm, L2):
        if fast:
            return [
                DeepFool(norm=norm, steps=50),
                DDN(steps=50),
                RandomDirections(norm=norm, directions=10),
                HopSkipJump(steps=10, queries=40),
            ]
        return [
            DeepFool(norm=norm),
            DDN(steps=100),
            CarliniWagner(binary_search_steps=5, steps=100),
            RandomDirections(norm=norm),
            HopSkipJump(),
        ]
    return [
        DeepFool(norm=norm),
        MinimalPGD(norm=norm, steps=10 if fast else 20),
        RandomDirections(norm=norm, directions=10 if fast else 20),
    ]


def refine_to_boundary(
    model: nn.Module, x: Tensor, result: AttackResult, y: Tensor, *, norm: Norm, steps: int = 10
) -> AttackResult:
    """Shrink each successful perturbation along the segment ``x → x_adv`` by bisection.

    Every point on the segment lies inside the bounds (they are convex); the returned points are
    verified adversarial, so distances can only decrease.

    Parameters
    ----------
    model : torch.nn.Module
    x : Tensor
        ``(N, ...)`` clean inputs.
    result : AttackResult
    y : Tensor
        ``(N,)`` labels.
    norm : Norm
    steps : int, default 10
        Bisection steps.
    """
    adv = result.adversarial
    ok = result.success & (result.distance > 0)
    if not ok.any():
        return result
    lo = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    hi = torch.ones_like(lo)
    shape = (-1,) + (1,) * (x.dim() - 1)
    with evaluation(model), torch.no_grad():
        for _ in range(steps):
            mid = (lo + hi) / 2
            pts = x + mid.view(shape) * (adv - x)
            fooled = model(pts).argmax(1) != y
            hi = torch.where(ok & fooled, mid, hi)
            lo = torch.where(ok & ~fooled, mid, lo)
        new = torch.where(ok.view(shape), x + hi.view(shape) * (adv - x), adv)
        success = torch.where(ok, model(new).argmax(1) != y, result.success)
    new = torch.where((ok & success).view(shape) | ~ok.view(shape), new, adv)
    distance = torch.where(result.success, norm(new - x), result.distance)
    return AttackResult(
        adversarial=new, success=result.success, distance=distance, attack=result.attack
    )


def ensemble_attack(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    bounds: tuple[float, float] = (0.0, 1.0),
    norm: Norm | float = 2,
    attacks: Sequence[Attack] | None = None,
    generator: torch.Generator | None = None,
    refine: bool = True,
    source: nn.Module | None = None,
) -> EnsembleResult:
    """Run several attacks and keep, per sample, the smallest *verified* adversarial distance.

    Parameters
    ----------
    model : torch.nn.Module
        Returns logits. Evaluated in eval mode (restored afterwards).
    x : Tensor
        ``(N, ...)`` inside ``bounds``.
    y : Tensor or None
        ``(N,)`` labels; ``None`` uses the predicted class (the distance to the decision boundary).
        Samples already misclassified get distance 0.
    bounds : (low, high)
    norm : 2, math.inf, L2() or Linf()
    attacks : sequence of Attack or None
        Default :func:`default_attacks`. All must use ``norm``.
    generator : torch.Generator or None
        Seeds every randomised attack (default: a generator seeded with 0).
    refine : bool
        Bisect each success towards ``x`` along its segment (:func:`refine_to_boundary`).
    source : nn.Module or None
        A model to transfer from (e.g. the same network without an input wrapper): adds
        :class:`Transfer` of the ensemble's first gradient attack from ``source``.

    Returns
    -------
    EnsembleResult
    """
    where = "ensemble_attack"
    model, x, y = check_batch(model, x, y, where)
    lo_hi = check_bounds(bounds, where)
    check_within(x, lo_hi, where)
    nrm = as_norm(norm, where)
    attacks = list(default_attacks(nrm) if attacks is None else attacks)
    if not attacks or not all(isinstance(a, Attack) for a in attacks):
        raise TypeError(f"{where}: attacks must be a non-empty sequence of Attack objects")
    if any(a.norm != nrm for a in attacks):
        raise ValueError(
            f"{where}: every attack must use the norm {nrm!r}, got {[a.name for a in attacks]}"
        )
    if source is not None:
        base = next((a for a in attacks if a.uses_gradients), None)
        if base is None:
            raise ValueError(f"{where}: source needs a gradient attack in attacks to transfer")
        attacks.append(Transfer(attack=base, source=source))
    gen = torch.Generator().manual_seed(0) if generator is None else generator
    with evaluation(model):
        if y is None:
            y = logits_of(model, x, where).argmax(1)
    messages = list(_gradient_checks(model, x, y))
    results = []
    for attack in attacks:
        res = attack(model, x, y, bounds=lo_hi, generator=gen)
        if refine:
            res = refine_to_boundary(model, x, res, y, norm=nrm)
        results.append(res)
    dist = torch.stack([r.distance for r in results])  # (A, N)
    best_d, best_i = dist.min(0)
    best_i = torch.where(torch.isfinite(best_d), best_i, torch.full_like(best_i, -1))
    adv = x.clone()
    for i, r in enumerate(results):
        sel = best_i == i
        adv[sel] = r.adversarial[sel]
    grad = [i for i, a in enumerate(attacks) if a.uses_gradients]
    free = [i for i, a in enumerate(attacks) if not a.uses_gradients]
    masking = 0.0
    if grad and free:
        g_best = dist[grad].min(0).values
        f_best = dist[free].min(0).values
        beaten = torch.isfinite(f_best) & (f_best < 0.9 * g_best)
        masking = float(beaten.float().mean())
        if masking > 0.05:
            who = [
                attacks[i].name
                for i in free
                if float((torch.isfinite(dist[i]) & (dist[i] < 0.9 * g_best)).float().mean()) > 0.05
            ]
            messages.append(
                f"attacks that use no gradient of the model ({', '.join(who)}) beat the "
                f"gradient attacks by more than 10% on {masking:.0%} of the samples: possible "
                "gradient masking (gradient-norm training can cause it); distances from "
                "gradient attacks alone would overestimate robustness"
            )
        broken_free = torch.isfinite(f_best)
        for i in grad:
            failed = broken_free & ~torch.isfinite(dist[i])
            share = float(failed.sum()) / max(int(broken_free.sum()), 1)
            if share > 0.25:
                messages.append(
                    f"{attacks[i].name} failed on {share:.0%} of the samples that attacks using "
                    "no gradient of the model broke: its gradients are unreliable here "
                    "(possible gradient masking)"
                )
    for m in messages:
        warnings.warn(f"{where}: {m}", RobustnessWarning, stacklevel=2)
    return EnsembleResult(
        distance=best_d,
        adversarial=adv,
        best=best_i,
        attacks=tuple(a.name for a in attacks),
        per_attack={a.name: r.distance for a, r in zip(attacks, results)},
        masking_fraction=masking,
        warnings=tuple(messages),
    )


def _gradient_checks(model: nn.Module, x: Tensor, y: Tensor) -> list[str]:
    with evaluation(model):
        _, g = scalar_gradient(model, x, lambda z: F.cross_entropy(z, y, reduction="none"))
    zero = g.flatten(1).abs().amax(1) == 0
    if zero.any():
        return [
            f"{int(zero.sum())} of {x.shape[0]} samples have an exactly zero loss gradient "
            "(saturated softmax, masked or non-differentiable model): "
            "gradient attacks cannot move them"
        ]
    return []


def minimal_distance(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    bounds: tuple[float, float] = (0.0, 1.0),
    norm: Norm | float = 2,
    attacks: Sequence[Attack] | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Per-sample best-of-ensemble minimal adversarial distance ``ρ(x)``, shape ``(N,)``.

    ``inf`` where no attack found a verified adversarial; ``0`` where ``x`` is already
    misclassified. See :func:`ensemble_attack` for the arguments.

    Parameters
    ----------
    model : torch.nn.Module
    x : Tensor
        ``(N, ...)``.
    y : Tensor or None
        ``(N,)`` labels (None: the predicted class).
    bounds : (float, float)
    norm : Norm or float
    attacks : sequence of Attack or None
        Default: :func:`default_attacks` for the norm.
    generator : torch.Generator or None

    Examples
    --------
    >>> net = torch.nn.Linear(4, 3)
    >>> minimal_distance(net, torch.rand(2, 4), bounds=(0.0, 1.0), norm=2).shape  # doctest: +SKIP
    torch.Size([2])
    """
    return ensemble_attack(
        model, x, y, bounds=bounds, norm=norm, attacks=attacks, generator=generator
    ).distance


def robust_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilons: Sequence[float],
    *,
    bounds: tuple[float, float] = (0.0, 1.0),
    norm: Norm | float = 2,
    attacks: Sequence[Attack] | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Accuracy under attack for each radius in ``epsilons``, shape ``(len(epsilons),)``.

    A sample counts as robust at ``ε`` if it is classified correctly and no attack in the ensemble
    found a verified adversarial within distance ``ε``; the curve is non-increasing in ``ε`` by
    construction, and at ``ε = 0`` it is the clean accuracy.

    Parameters
    ----------
    model : torch.nn.Module
    x : Tensor
        ``(N, ...)``.
    y : Tensor
        ``(N,)`` labels.
    epsilons : sequence of float
    bounds : (float, float)
    norm : Norm or float
    attacks : sequence of Attack or None
    generator : torch.Generator or None
    """
    where = "robust_accuracy"
    eps = torch.as_tensor(list(epsilons), dtype=torch.float64)
    if eps.dim() != 1 or eps.numel() == 0 or not torch.isfinite(eps).all() or (eps < 0).any():
        raise ValueError(f"{where}: epsilons must be a non-empty sequence of finite numbers >= 0")
    d = ensemble_attack(
        model, x, y, bounds=bounds, norm=norm, attacks=attacks, generator=generator
    ).distance.double()
    return (d.unsqueeze(0) > eps.unsqueeze(1)).double().mean(1).to(x.dtype)
