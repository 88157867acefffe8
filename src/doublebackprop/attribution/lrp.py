"""Layer-wise relevance propagation (Bach et al. 2015; Montavon et al.) in its gradient form.

Each linear layer (dense, 1-D/2-D convolution, average pooling; BatchNorm folded into the layer
before it) is replaced by a module whose forward value is unchanged but whose input gradient is
that of the modified layer ``z' = W'a + b'`` scaled by the constant ``z / (z' + ε·sign z')``; the
relevance is then ``x ⊙ ∇_x z_t``. Max-pooling passes the gradient to the winner, ReLU passes it
where active (the standard LRP treatment). The normalisers are constants, as in the gradient
formulation of LRP (and in zennit).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from doublebackprop.attribution.gradients import Target, resolve_target
from doublebackprop.engine.objective import input_gradient
from doublebackprop.engine.validation import check_inputs, check_model

__all__ = ["AlphaBeta", "Epsilon", "Gamma", "LRPRule", "ZPlus", "lrp"]

Tensor = torch.Tensor


class LRPRule:
    """Base of LRP rules for linear layers: modified weights/biases and a combination."""

    def parts(
        self, w: Tensor, b: Tensor | None
    ) -> list[tuple[float, Tensor, Tensor | None, float]]:
        """``[(coefficient, W', b', ε)]``: the rule's gradient is ``Σ c·W'^T(R / (z' + ε))``."""
        raise NotImplementedError


@dataclass(frozen=True)
class Epsilon(LRPRule):
    """LRP-ε: ``R_j = a_j Σ_k w_jk R_k / (z_k + ε·sign z_k)``; ``epsilon=0`` is LRP-0."""

    epsilon: float = 1e-6

    def parts(self, w, b):
        return [(1.0, w, b, self.epsilon)]


@dataclass(frozen=True)
class ZPlus(LRPRule):
    """LRP-z⁺: only positive weights (``W⁺``, no bias); for non-negative inputs."""

    def parts(self, w, b):
        return [(1.0, w.clamp(min=0), None, 1e-9)]


@dataclass(frozen=True)
class AlphaBeta(LRPRule):
    """LRP-αβ with ``α − β = 1``: ``α·(W⁺ part) − β·(W⁻ part)`` (non-negative inputs)."""

    alpha: float = 2.0
    beta: float = 1.0

    def __post_init__(self) -> None:
        if abs(self.alpha - self.beta - 1) > 1e-9 or self.beta < 0:
            raise ValueError(
                f"AlphaBeta: need alpha - beta = 1 and beta >= 0, got {self.alpha}, {self.beta}"
            )

    def parts(self, w, b):
        bp = None if b is None else b.clamp(min=0)
        bn = None if b is None else b.clamp(max=0)
        return [(self.alpha, w.clamp(min=0), bp, 1e-9), (-self.beta, w.clamp(max=0), bn, 1e-9)]


@dataclass(frozen=True)
class Gamma(LRPRule):
    """LRP-γ: ``W + γW⁺`` (and ``b + γb⁺``), favouring positive contributions."""

    gamma: float = 0.25

    def parts(self, w, b):
        return [
            (
                1.0,
                w + self.gamma * w.clamp(min=0),
                None if b is None else b + self.gamma * b.clamp(min=0),
                1e-9,
            )
        ]


def _ratio(z: Tensor, zp: Tensor, eps: float) -> Tensor:
    """``z / (z' + ε·sign z')``, 0 where the denominator vanishes (a neuron with no relevance)."""
    den = zp + eps * torch.where(zp >= 0, 1.0, -1.0).to(zp.dtype)
    return torch.where(
        den == 0, torch.zeros_like(z), z / torch.where(den == 0, torch.ones_like(den), den)
    )


class _RuleLayer(nn.Module):
    """Forward value of the original layer; input gradient of the LRP rule (see module notes)."""

    def __init__(self, fn, weight: Tensor | None, bias: Tensor | None, rule: LRPRule) -> None:
        super().__init__()
        self.fn, self.weight, self.bias, self.rule = fn, weight, bias, rule

    def forward(self, a: Tensor) -> Tensor:
        z = self.fn(a, self.weight, self.bias)
        parts: list[tuple[float, Any, Any, float]]
        if self.weight is None:  # average pooling: a positive linear map, ε rule
            parts = [(1.0, None, None, getattr(self.rule, "epsilon", 1e-9))]
        else:
            parts = self.rule.parts(self.weight, self.bias)
        out = z.new_zeros(())
        for c, w, b, eps in parts:
            zp = self.fn(a, w, b)
            out = out + c * zp * _ratio(z, zp, eps).detach()
        return out + (z - out).detach()


def _fold_bn(layer: Any, bn: Any) -> tuple[Tensor, Tensor]:
    scale = (
        bn.weight / torch.sqrt(bn.running_var + bn.eps)
        if bn.affine
        else 1 / torch.sqrt(bn.running_var + bn.eps)
    )
    shift = (bn.bias if bn.affine else 0) - bn.running_mean * scale
    w = layer.weight * scale.view(-1, *([1] * (layer.weight.dim() - 1)))
    b = (layer.bias * scale if layer.bias is not None else 0) + shift
    return w, b


def _flatten(module: nn.Module) -> list[nn.Module]:
    if isinstance(module, nn.Sequential):
        return [m for child in module for m in _flatten(child)]
    return [module]


_PASS = (
    nn.ReLU,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.Flatten,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
)


def _lrp_model(model: nn.Module, rule: LRPRule, first_rule: LRPRule | None) -> nn.Module:
    layers = _flatten(model)
    out: list[nn.Module] = []
    i, first = 0, True
    while i < len(layers):
        m = layers[i]
        r = first_rule if (first and first_rule is not None) else rule
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            w, b = m.weight, m.bias
            if i + 1 < len(layers) and isinstance(layers[i + 1], (nn.BatchNorm1d, nn.BatchNorm2d)):
                w, b = _fold_bn(m, layers[i + 1])
                i += 1
            fn: Any = F.linear
            if not isinstance(m, nn.Linear):
                conv = F.conv1d if isinstance(m, nn.Conv1d) else F.conv2d
                if m.padding_mode != "zeros":
                    raise TypeError(
                        f"lrp: {type(m).__name__} with padding_mode={m.padding_mode!r} "
                        "is not supported"
                    )

                def conv_fn(a, w_, b_, conv=conv, m=m):
                    return conv(a, w_, b_, m.stride, m.padding, m.dilation, m.groups)

                fn = conv_fn

            out.append(_RuleLayer(fn, w, b, r))
            first = False
        elif isinstance(
            m, (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
        ):
            pool = copy.copy(m)
            out.append(_RuleLayer(lambda a, w_, b_, pool=pool: pool(a), None, None, r))
        elif isinstance(m, _PASS):
            out.append(m)
        else:
            raise TypeError(
                f"lrp: unsupported layer {type(m).__name__}; supported are nn.Sequential "
                "networks of "
                "Linear, Conv1d/2d (+ BatchNorm folded), ReLU, max/avg pooling, Flatten, Dropout"
            )
        i += 1
    net = nn.Sequential(*out)
    net.train(model.training)
    return net


def lrp(
    model: nn.Module,
    x: Tensor,
    target: Target = None,
    *,
    rule: LRPRule | None = None,
    first_rule: LRPRule | None = None,
    create_graph: bool = False,
) -> Tensor:
    """Layer-wise relevance propagation of the target logit (Bach et al. 2015; Montavon et al.).

    Parameters
    ----------
    model : nn.Sequential
        Of Linear, Conv1d/Conv2d (a following BatchNorm is folded in, eval statistics), ReLU,
        max/avg pooling, Flatten, Dropout. Other layers raise ``TypeError`` naming them.
    x : Tensor
        ``(N, ...)``.
    target : Tensor, int, "predicted" or None
    rule : LRPRule, default ``Epsilon(1e-6)``
        :class:`Epsilon`, :class:`ZPlus`, :class:`AlphaBeta` or :class:`Gamma`.
    first_rule : LRPRule or None
        A different rule for the first linear layer (e.g. ``Epsilon(0)`` on signed inputs).
    create_graph : bool

    Returns
    -------
    Tensor
        Relevance ``(N, ...)``; ``Σ R ≈ z_t(x)`` for bias-free nets with the ε rule (ε → 0).

    Examples
    --------
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> lrp(net, torch.rand(2, 4), rule=Epsilon(0.01)).shape
    torch.Size([2, 4])
    """
    where = "lrp"
    check_model(model, where)
    check_inputs(x, where)
    rule = Epsilon() if rule is None else rule
    for name, r in (("rule", rule), ("first_rule", first_rule)):
        if r is not None and not isinstance(r, LRPRule):
            raise TypeError(
                f"{where}: {name} must be an LRPRule (Epsilon, ZPlus, AlphaBeta, Gamma), got {r!r}"
            )
    net = _lrp_model(model, rule, first_rule)
    t = resolve_target(model, x, target, where)
    return x * input_gradient(net, x, target=t, create_graph=create_graph, engine="autograd")
