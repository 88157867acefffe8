"""Gradient attributions: gradient, gradient × input, integrated gradients and SmoothGrad.

Every attribution is computed with :func:`doublebackprop.input_gradient` (the one saliency
entry point of the library) and accepts ``create_graph=True``, so it can enter a training loss.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from doublebackprop.engine.objective import input_gradient
from doublebackprop.engine.validation import check_inputs, check_model

__all__ = [
    "Target",
    "gradient",
    "gradient_x_input",
    "integrated_gradients",
    "resolve_target",
    "smoothgrad",
]

Tensor = torch.Tensor
Target = Tensor | int | Literal["predicted"] | None
Output = Literal["logit", "probability", "loss"]


class _Head(nn.Module):
    """``softmax`` or per-class cross-entropy on top of the logits."""

    def __init__(self, model: nn.Module, kind: str) -> None:
        super().__init__()
        self.model, self.kind = model, kind

    def forward(self, x: Tensor) -> Tensor:
        z = self.model(x)
        if self.kind == "probability":
            return torch.softmax(z, dim=1)
        return -F.log_softmax(z, dim=1)  # per-class cross-entropy −log p_c


def resolve_target(model: nn.Module, x: Tensor, target: Target, where: str) -> Tensor | int:
    """The class indices ``target`` stands for: ``"predicted"``/None are resolved once, on the
    unperturbed input, with gradients off; ints and tensors pass through.

    Parameters
    ----------
    model : torch.nn.Module
    x : Tensor
        ``(N, ...)``.
    target : Tensor ``(N,)``, int, "predicted" or None
    where : str
        The calling function, named in errors.
    """
    if target is None or (isinstance(target, str) and target == "predicted"):
        with torch.no_grad():
            return model(x.detach()).argmax(1)
    if isinstance(target, str):
        raise ValueError(
            f"{where}: target must be class indices, an int or 'predicted', got {target!r}"
        )
    return target


def gradient(
    model: nn.Module,
    x: Tensor,
    target: Target = None,
    *,
    output: Output = "logit",
    create_graph: bool = False,
    engine: str = "autograd",
) -> Tensor:
    """``∇_x`` of the target class's logit, probability or cross-entropy loss.

    Parameters
    ----------
    model : torch.nn.Module
        Returns logits ``(N, m)``; used in its current mode.
    x : Tensor
        ``(N, ...)``.
    target : Tensor ``(N,)``, int, "predicted" or None
        The true (pass the labels), a given, or the predicted class.
    output : {"logit", "probability", "loss"}
        ``"loss"`` is the per-sample cross-entropy ``−log p_t``.
    create_graph : bool
        Keep the graph (differentiable in the parameters).
    engine : str, default "autograd"
        The engine of :func:`doublebackprop.input_gradient` (all give the same gradient; a
        converted model is fastest with ``"adjoint"``).

    Returns
    -------
    Tensor, shape of ``x``.

    Examples
    --------
    >>> net = torch.nn.Linear(4, 3)
    >>> gradient(net, torch.randn(2, 4), torch.tensor([0, 1]), output="loss").shape
    torch.Size([2, 4])
    """
    where = "gradient"
    check_model(model, where)
    check_inputs(x, where)
    if output not in ("logit", "probability", "loss"):
        raise ValueError(
            f"{where}: output must be 'logit', 'probability' or 'loss', got {output!r}"
        )
    t = resolve_target(model, x, target, where)
    net = model if output == "logit" else _Head(model, output)
    return input_gradient(net, x, target=t, create_graph=create_graph, engine=engine)


def gradient_x_input(
    model: nn.Module,
    x: Tensor,
    target: Target = None,
    *,
    create_graph: bool = False,
    engine: str = "autograd",
) -> Tensor:
    """``x ⊙ ∇_x z_t`` (Shrikumar et al.; equals LRP-0 on ReLU networks). Shape of ``x``.

    The relevance that Deep Relevance Regularization penalises; ``create_graph`` and ``engine``
    as in :func:`gradient`.

    Parameters
    ----------
    model, x, target
        As in :func:`gradient`.
    create_graph : bool
    engine : str, default "autograd"
    """
    return x * gradient(model, x, target, create_graph=create_graph, engine=engine)


def integrated_gradients(
    model: nn.Module,
    x: Tensor,
    target: Target = None,
    *,
    baseline: Tensor | float = 0.0,
    steps: int = 50,
    method: Literal["gausslegendre", "trapezoid"] = "gausslegendre",
    create_graph: bool = False,
) -> Tensor:
    """Integrated gradients (Sundararajan et al. 2017) of the target logit.

    ``(x − b) ⊙ ∫₀¹ ∇z_t(b + s(x − b)) ds`` with a ``steps``-point quadrature (Gauss–Legendre, as
    Captum's default, or the trapezoid rule); completeness ``Σ IG ≈ z_t(x) − z_t(b)`` holds up to
    the quadrature error. All points go through the network in one batch of ``N·steps``.

    Shapes: ``x`` ``(N, ...)``; ``baseline`` a number or broadcastable to ``x``.

    Parameters
    ----------
    model : torch.nn.Module
    x : Tensor
        ``(N, ...)``.
    target : Tensor ``(N,)``, int, "predicted" or None
    baseline : Tensor or float, default 0
    steps : int, default 50
        Quadrature points.
    method : {"gausslegendre", "trapezoid"}
    create_graph : bool
    """
    where = "integrated_gradients"
    check_model(model, where)
    check_inputs(x, where)
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"{where}: steps must be an int >= 2, got {steps!r}")
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        alphas, w = (nodes + 1) / 2, weights / 2
    elif method == "trapezoid":
        alphas = np.linspace(0.0, 1.0, steps)
        w = np.full(steps, 1.0 / (steps - 1))
        w[[0, -1]] /= 2
    else:
        raise ValueError(f"{where}: method must be 'gausslegendre' or 'trapezoid', got {method!r}")
    b = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
    t = resolve_target(model, x, target, where)
    n = x.shape[0]
    a = torch.as_tensor(alphas, dtype=x.dtype, device=x.device).view(-1, 1, *([1] * (x.dim() - 1)))
    path = (b + a * (x - b)).reshape(steps * n, *x.shape[1:])
    tt = t.repeat(steps) if isinstance(t, Tensor) else t
    g = input_gradient(model, path, target=tt, create_graph=create_graph, engine="autograd")
    wt = torch.as_tensor(w, dtype=x.dtype, device=x.device).view(-1, 1, *([1] * (x.dim() - 1)))
    return (x - b) * (g.view(steps, n, *x.shape[1:]) * wt).sum(0)


def smoothgrad(
    model: nn.Module,
    x: Tensor,
    target: Target = None,
    *,
    samples: int = 25,
    sigma: float = 0.15,
    generator: torch.Generator | None = None,
    create_graph: bool = False,
) -> Tensor:
    """SmoothGrad (Smilkov et al. 2017): the mean logit gradient at ``x + N(0, σ²)``.

    ``sigma`` is absolute (input units); the noise comes from ``generator`` (default: seeded 0).

    Parameters
    ----------
    model : torch.nn.Module
    x : Tensor
        ``(N, ...)``.
    target : Tensor ``(N,)``, int, "predicted" or None
    samples : int, default 25
        Noisy copies per input.
    sigma : float, default 0.15
    generator : torch.Generator or None
    create_graph : bool
    """
    where = "smoothgrad"
    check_model(model, where)
    check_inputs(x, where)
    if not isinstance(samples, int) or samples < 1 or not sigma >= 0:
        raise ValueError(f"{where}: samples must be an int >= 1 and sigma >= 0")
    gen = torch.Generator().manual_seed(0) if generator is None else generator
    t = resolve_target(model, x, target, where)
    noise = torch.randn((samples, *x.shape), generator=gen, dtype=x.dtype, device=gen.device).to(
        x.device
    )
    pts = (x.unsqueeze(0) + sigma * noise).reshape(samples * x.shape[0], *x.shape[1:])
    tt = t.repeat(samples) if isinstance(t, Tensor) else t
    g = input_gradient(model, pts, target=tt, create_graph=create_graph, engine="autograd")
    return g.view(samples, *x.shape).mean(0)
