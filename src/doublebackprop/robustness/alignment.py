"""Saliency, alignment and linearised robustness (Etmann, Lunz, Maass & Schönlieb, ICML 2019).

For logits ``Ψ`` and an input ``x`` with predicted class ``i`` and saliency ``g_i = ∇Ψ^i(x)``:

* alignment ``α(x) = |⟨x, g_i⟩| / ‖g_i‖`` and its cosine form ``|⟨x, g_i⟩| / (‖x‖‖g_i‖)``;
* bias term ``β_i(x) = Ψ^i(x) − ⟨g_i, x⟩`` (zero for positively homogeneous nets);
* linearised robustness ``ρ̂(x) = min_{j≠i} (Ψ^i − Ψ^j) / ‖g_i − g_j‖``, minimiser ``j*``.

**The exact relation.** Writing ``Ψ^k = ⟨g_k, x⟩ + β_k`` for every class and solving the definition
of ``ρ̂`` for ``⟨x, g_i⟩`` gives, for every sample and every network,

``⟨x, g_i⟩/‖g_i‖ = ρ̂‖g_i − g_j*‖/‖g_i‖ + ⟨x, g_j*⟩/‖g_i‖ − (β_i − β_j*)/‖g_i‖``.

:func:`alignment_report` returns each term. ``ρ̂ = α`` follows only when the runner-up's saliency
is the negative of the winner's and the biases vanish: antisymmetric binary logits
``(f, −f)`` of a positively homogeneous ``f`` (then ``g_j* = −g_i`` and the relation reads
``⟨x, g_i⟩/‖g_i‖ = 2ρ̂ − ⟨x, g_i⟩/‖g_i‖``). An ordinary two-logit network has independent
``g_1, g_2``, and ``ρ̂`` and ``α`` can differ arbitrarily, biases or not.

All quantities are evaluated in eval mode (the model's flags are restored afterwards); ``α``
depends on the scale and centring of ``x``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from doublebackprop.robustness._core import (
    check_batch,
    class_gradients,
    evaluation,
    logits_of,
    per_sample_dot,
)
from doublebackprop.robustness._core import scalar_gradient as _scalar_gradient
from doublebackprop.robustness.norms import L2, Norm, as_norm

__all__ = [
    "AlignmentReport",
    "alignment",
    "alignment_report",
    "bias_term",
    "cosine_alignment",
    "linearized_distance",
    "saliency",
]

Tensor = torch.Tensor


@dataclass(frozen=True)
class AlignmentReport:
    """Per-sample quantities of the ICML 2019 analysis, all of shape ``(N,)``.

    ``runner_up`` is the minimiser ``j*`` of ``ρ̂`` (``-1`` where ``ρ̂`` is infinite). The terms of the
    exact relation (see the module notes), each divided by ``‖g_i‖``:
    ``signed_alignment = margin_term + runner_up_term − bias_difference_term``, with
    ``signed_alignment = ⟨x, g_i⟩/‖g_i‖``, ``margin_term = ρ̂‖g_i − g_j*‖/‖g_i‖``,
    ``runner_up_term = ⟨x, g_j*⟩/‖g_i‖`` and ``bias_difference_term = (β_i − β_j*)/‖g_i‖``.
    ``relation_residual`` is the left side minus the right side: rounding error only.
    """

    predicted: Tensor
    alignment: Tensor
    cosine_alignment: Tensor
    bias: Tensor
    saliency_norm: Tensor
    linearized_distance: Tensor
    runner_up: Tensor
    signed_alignment: Tensor
    margin_term: Tensor
    runner_up_term: Tensor
    bias_difference_term: Tensor
    relation_residual: Tensor


def _zero_guard(norm: Tensor, where: str) -> Tensor:
    zero = norm == 0
    if zero.any():
        warnings.warn(
            f"{where}: {int(zero.sum())} sample(s) have a zero saliency map; "
            "their alignment is NaN",
            RuntimeWarning,
            stacklevel=3,
        )
    return torch.where(zero, torch.full_like(norm, float("nan")), norm)


def saliency(model: nn.Module, x: Tensor, target: Tensor | None = None) -> Tensor:
    """``∇_x Ψ^t(x)`` for the predicted class (``target=None``) or given classes, shape of ``x``.

    Examples
    --------
    >>> net = torch.nn.Linear(4, 3)
    >>> saliency(net, torch.randn(2, 4)).shape
    torch.Size([2, 4])
    """
    model, x, target = check_batch(model, x, target, "saliency")
    with evaluation(model):
        if target is None:
            target = logits_of(model, x, "saliency").argmax(1)
        _, g = _scalar_gradient(model, x, lambda z: z.gather(1, target.view(-1, 1)).squeeze(1))
    return g


def _predicted_saliency(model: nn.Module, x: Tensor, where: str) -> tuple[Tensor, Tensor, Tensor]:
    model, x, _ = check_batch(model, x, None, where)
    with evaluation(model):
        pred = logits_of(model, x, where).argmax(1)
        logits, g = _scalar_gradient(model, x, lambda z: z.gather(1, pred.view(-1, 1)).squeeze(1))
    return pred, logits, g


def alignment(model: nn.Module, x: Tensor) -> Tensor:
    """Per-sample alignment ``α(x) = |⟨x, ∇Ψ^{i*}(x)⟩| / ‖∇Ψ^{i*}(x)‖``.

    Shapes: ``x`` ``(N, ...)`` → ``(N,)``. NaN (with a warning) where the saliency is zero.

    Examples
    --------
    >>> net = torch.nn.Linear(4, 3, bias=False)
    >>> alignment(net, torch.randn(5, 4)).shape
    torch.Size([5])
    """
    _, _, g = _predicted_saliency(model, x, "alignment")
    return per_sample_dot(x, g).abs() / _zero_guard(g.flatten(1).norm(dim=1), "alignment")


def cosine_alignment(model: nn.Module, x: Tensor) -> Tensor:
    """Per-sample ``|⟨x, g⟩| / (‖x‖‖g‖)`` in ``[0, 1]`` (``α / ‖x‖``), shape ``(N,)``."""
    _, _, g = _predicted_saliency(model, x, "cosine_alignment")
    denom = _zero_guard(g.flatten(1).norm(dim=1) * x.flatten(1).norm(dim=1), "cosine_alignment")
    return per_sample_dot(x, g).abs() / denom


def bias_term(model: nn.Module, x: Tensor) -> Tensor:
    """Per-sample ``β(x) = Ψ^{i*}(x) − ⟨∇Ψ^{i*}(x), x⟩``, shape ``(N,)``."""
    pred, logits, g = _predicted_saliency(model, x, "bias_term")
    return logits.gather(1, pred.view(-1, 1)).squeeze(1) - per_sample_dot(x, g)


def _linearized(
    model: nn.Module,
    x: Tensor,
    where: str,
    norm: Norm | None = None,
    candidates: int | None = None,
) -> dict[str, Tensor]:
    """``ρ̂`` and its minimiser ``j*`` over the predicted class and the ``candidates − 1`` largest
    other logits (all classes when ``None``), with the gradients of the winner and of ``j*``."""
    model, x, _ = check_batch(model, x, None, where)
    if candidates is not None and (
        not isinstance(candidates, int) or isinstance(candidates, bool) or candidates < 2
    ):
        raise ValueError(f"{where}: candidates must be an int >= 2 or None, got {candidates!r}")
    with evaluation(model):
        logits = logits_of(model, x, where)
        n, m = logits.shape
        if m < 2:
            raise ValueError(f"{where}: the model must have at least 2 outputs, got {m}")
        pred = logits.argmax(1)
        k = m if candidates is None else min(candidates, m)
        others = logits.scatter(1, pred.view(-1, 1), -math.inf).topk(k - 1, dim=1).indices
        classes = torch.cat([pred.view(-1, 1), others], dim=1)  # (N, k), the winner first
        logits, jac = class_gradients(model, x, classes)
    idx = torch.arange(n, device=x.device)
    z = logits.gather(1, classes)
    gap = z[:, :1] - z  # (N, k), >= 0
    delta = (jac[:, :1] - jac).flatten(2)  # (N, k, d)
    if norm is None or isinstance(norm, L2):
        diff = delta.norm(dim=2)
    else:  # the distance in ‖·‖_p needs the dual norm of the gradient difference
        diff = norm.dual(delta.flatten(0, 1)).view(n, k)
    ratio = torch.where(diff == 0, torch.full_like(gap, math.inf), gap / diff)
    ratio[:, 0] = math.inf
    rho, col = ratio.min(1)
    found = torch.isfinite(rho)
    j = torch.where(found, classes[idx, col], torch.full_like(col, -1))
    return {
        "pred": pred,
        "logits": logits,
        "rho": rho,
        "runner_up": j,
        "g": jac[:, 0],
        "g_runner": torch.where(found.view(-1, *[1] * (x.dim() - 1)), jac[idx, col], jac[:, 0]),
    }


def linearized_distance(
    model: nn.Module, x: Tensor, *, norm: Norm | float = 2, candidates: int | None = None
) -> Tensor:
    """Per-sample ``ρ̂(x) = min_{j≠i*} (Ψ^{i*} − Ψ^j) / ‖∇Ψ^{i*} − ∇Ψ^j‖_*``, shape ``(N,)``.

    The first-order (DeepFool) estimate of the distance to the decision boundary in ``norm``
    (``‖·‖_*`` is its dual: L2 for L2, L1 for L∞); ``inf`` where every difference of gradients
    vanishes.

    Parameters
    ----------
    model : nn.Module
    x : Tensor
        ``(N, ...)``.
    norm : 2, math.inf, L2() or Linf()
    candidates : int or None
        For many classes: minimise over the predicted class's ``candidates − 1`` strongest
        runner-ups only (their gradients alone are computed); ``None``: every class (exact).

    Examples
    --------
    >>> net = torch.nn.Linear(4, 3)
    >>> linearized_distance(net, torch.randn(5, 4)).shape
    torch.Size([5])
    """
    where = "linearized_distance"
    return _linearized(model, x, where, as_norm(norm, where), candidates)["rho"]


def alignment_report(
    model: nn.Module, x: Tensor, *, candidates: int | None = None
) -> AlignmentReport:
    """All per-sample quantities at once, with the terms of the exact multi-class relation.

    Shapes: ``x`` ``(N, ...)`` → every field ``(N,)``.

    Parameters
    ----------
    model : nn.Module
    x : Tensor
    candidates : int or None
        As in :func:`linearized_distance` (the relation then holds with ``j*`` the minimiser
        among the candidates).

    Examples
    --------
    >>> net = torch.nn.Linear(4, 3)
    >>> rep = alignment_report(net, torch.randn(5, 4))
    >>> bool((rep.relation_residual.abs() < 1e-4).all())
    True
    """
    where = "alignment_report"
    lin = _linearized(model, x, where, None, candidates)
    pred, logits, rho_hat, j = (lin[k] for k in ("pred", "logits", "rho", "runner_up"))
    n = x.shape[0]
    idx = torch.arange(n, device=x.device)
    g, gj = lin["g"], lin["g_runner"]
    gnorm = g.flatten(1).norm(dim=1)
    safe = _zero_guard(gnorm, where)
    dot = per_sample_dot(x, g)
    alpha = dot.abs() / safe
    cos = alpha / x.flatten(1).norm(dim=1)
    beta = logits[idx, pred] - dot
    found = j >= 0
    jj = torch.where(found, j, pred)
    dot_j = per_sample_dot(x, gj)
    beta_j = logits[idx, jj] - dot_j
    nan = torch.full_like(alpha, float("nan"))
    signed = dot / safe
    margin_term = torch.where(found, rho_hat * (g - gj).flatten(1).norm(dim=1) / safe, nan)
    runner_term = torch.where(found, dot_j / safe, nan)
    bias_term_ = torch.where(found, (beta - beta_j) / safe, nan)
    return AlignmentReport(
        predicted=pred,
        alignment=alpha,
        cosine_alignment=cos,
        bias=beta,
        saliency_norm=gnorm,
        linearized_distance=rho_hat,
        runner_up=j,
        signed_alignment=signed,
        margin_term=margin_term,
        runner_up_term=runner_term,
        bias_difference_term=bias_term_,
        relation_residual=signed - (margin_term + runner_term - bias_term_),
    )
