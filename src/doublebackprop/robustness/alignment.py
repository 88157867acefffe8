"""Saliency, alignment and linearised robustness (Etmann, Lunz, Maass & Schönlieb, ICML 2019).

For logits ``Ψ`` and an input ``x`` with predicted class ``i*`` and saliency ``g = ∇Ψ^{i*}(x)``:

* alignment ``α(x) = |⟨x, g⟩| / ‖g‖`` and its cosine form ``|⟨x, g⟩| / (‖x‖‖g‖)``;
* bias term ``β(x) = Ψ^{i*}(x) − ⟨g, x⟩`` (zero for positively homogeneous nets);
* linearised robustness ``ρ̂(x) = min_{j≠i*} (Ψ^{i*} − Ψ^j) / ‖∇Ψ^{i*} − ∇Ψ^j‖``.

For a binary, positively homogeneous net ``ρ̂ = α``; with biases ``|ρ̂ − α| ≤ |β| / ‖g‖``.
All quantities are evaluated in eval mode (the model's flags are restored afterwards); ``α``
depends on the scale and centring of ``x``.
"""

from __future__ import annotations

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

    ``bound`` is ``|β| / ‖g‖`` and ``bound_gap`` is ``|ρ̂ − α|``; ``bound_holds`` says where
    ``bound_gap ≤ bound`` (a theorem for binary nets, an empirical statement for multi-class ones).
    """

    predicted: Tensor
    alignment: Tensor
    cosine_alignment: Tensor
    bias: Tensor
    saliency_norm: Tensor
    linearized_distance: Tensor
    bound: Tensor
    bound_gap: Tensor
    bound_holds: Tensor


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


def _linearized(model: nn.Module, x: Tensor, where: str) -> tuple[Tensor, Tensor, Tensor]:
    """``(pred, logits, ρ̂)`` and the gradients of all logits, batched over classes."""
    model, x, _ = check_batch(model, x, None, where)
    with evaluation(model):
        logits = logits_of(model, x, where)
        n, m = logits.shape
        if m < 2:
            raise ValueError(f"{where}: the model must have at least 2 outputs, got {m}")
        classes = torch.arange(m, device=x.device).expand(n, m)
        logits, jac = class_gradients(model, x, classes)
    pred = logits.argmax(1)
    idx = torch.arange(n, device=x.device)
    gap = logits[idx, pred].unsqueeze(1) - logits  # (N, m), >= 0
    diff = (jac[idx, pred].unsqueeze(1) - jac).flatten(2).norm(dim=2)  # (N, m)
    ratio = gap / diff
    ratio[idx, pred] = float("inf")
    ratio = torch.where(diff == 0, torch.full_like(ratio, float("inf")), ratio)
    return pred, jac[idx, pred], ratio.amin(1)


def linearized_distance(model: nn.Module, x: Tensor) -> Tensor:
    """Per-sample ``ρ̂(x) = min_{j≠i*} (Ψ^{i*} − Ψ^j) / ‖∇Ψ^{i*} − ∇Ψ^j‖``, shape ``(N,)``.

    The first-order (DeepFool) estimate of the L2 distance to the decision boundary; ``inf``
    where every difference of gradients vanishes.

    Examples
    --------
    >>> net = torch.nn.Linear(4, 3)
    >>> linearized_distance(net, torch.randn(5, 4)).shape
    torch.Size([5])
    """
    return _linearized(model, x, "linearized_distance")[2]


def alignment_report(model: nn.Module, x: Tensor) -> AlignmentReport:
    """All per-sample quantities at once, with how tight ``|ρ̂ − α| ≤ |β| / ‖g‖`` is."""
    where = "alignment_report"
    pred, g, rho_hat = _linearized(model, x, where)
    with evaluation(model):
        logits = logits_of(model, x, where)
    gnorm = g.flatten(1).norm(dim=1)
    safe = _zero_guard(gnorm, where)
    dot = per_sample_dot(x, g)
    alpha = dot.abs() / safe
    cos = alpha / x.flatten(1).norm(dim=1)
    beta = logits.gather(1, pred.view(-1, 1)).squeeze(1) - dot
    bound = beta.abs() / safe
    gap = (rho_hat - alpha).abs()
    return AlignmentReport(
        predicted=pred,
        alignment=alpha,
        cosine_alignment=cos,
        bias=beta,
        saliency_norm=gnorm,
        linearized_distance=rho_hat,
        bound=bound,
        bound_gap=gap,
        bound_holds=gap <= bound * (1 + 1e-5) + 1e-6,
    )
