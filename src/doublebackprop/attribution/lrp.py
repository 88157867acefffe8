"""Layer-wise relevance propagation (Bach et al. 2015; Montavon et al.) in its gradient form.

**How the rules are applied.** The model is copied shallowly (its parameters are shared, not
copied) and every leaf module is replaced by its LRP counterpart, wherever it sits: inside
``nn.Sequential``, inside residual blocks, inside modules with a ``forward`` of their own. The
containers' own ``forward`` methods run unchanged, so skips, reshapes and paddings are kept.

* Dense, 1-D/2-D convolutions and :class:`~doublebackprop.LocallyConnected1d` get the rule
  (:class:`Epsilon`, :class:`ZPlus`, :class:`AlphaBeta`, :class:`Gamma`); a BatchNorm that follows
  such a layer directly inside a plain ``nn.Sequential`` is folded into it first.
* Average pooling and a BatchNorm that cannot be folded are elementwise or positive linear maps:
  they get the ε-rule with their own weights (the rule's ``stabilizer``).
* BatchNorm always uses its running statistics (the eval-mode map).
* ReLU passes relevance where active, max-pooling to the winner; Flatten, Identity and Dropout pass
  it (Dropout with the same mask as the forward pass in train mode).
* Operations written in a ``forward`` (additions of residual skips, ``F.relu``, ``F.pad``) are
  differentiated as they are: a sum sends the same upstream factor into each branch.
* Any other leaf module, or a container holding parameters of its own, raises ``TypeError`` naming
  the module. Nothing is silently dropped or flattened.

**What "differentiable LRP" means.** Each rule layer's forward value is the original layer's; the
relevance is ``R = x ⊙ ∇_x F`` where, inside ``F``, each rule layer computes ``Σ c·z'⊙q`` with the
ratio ``q = z / (z' + ε·sign z')`` held fixed *for that one input derivative*. The ratios are taken
from a first forward pass that keeps its graph, so with ``create_graph=True`` the returned ``R`` is
an ordinary differentiable function of the parameters (and of ``x``): its gradient is the exact
derivative of the relevance as computed, i.e. of the explicit layer-by-layer LRP recursion,
including how every normaliser depends on the weights of its own and of earlier layers. ReLU masks
and max-pool winners are piecewise constant, as for any ReLU network.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from doublebackprop.attribution.gradients import Target, resolve_target
from doublebackprop.attribution.lrp_rules import AlphaBeta, Epsilon, Gamma, LRPRule, ZPlus
from doublebackprop.engine.layers import LocallyConnected1d
from doublebackprop.engine.operators import locally_connected
from doublebackprop.engine.validation import (
    check_inputs,
    check_label_range,
    check_labels,
    check_model,
)

__all__ = ["AlphaBeta", "Epsilon", "Gamma", "LRPRule", "ZPlus", "lrp"]

Tensor = torch.Tensor
LayerFn = Callable[[Tensor, Any, Any], Tensor]
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)
_POOL = (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
_PASS = (nn.ReLU, nn.MaxPool1d, nn.MaxPool2d, nn.Flatten, nn.Identity)
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d)
_SUPPORTED = (
    "Linear, Conv1d/2d, LocallyConnected1d, BatchNorm1d/2d, ReLU, max/avg pooling, Flatten, "
    "Identity, Dropout, and containers of these"
)


class _Tape:
    """The ratios of the first pass (``record``), handed to the second (``replay``) in call order."""

    def __init__(self) -> None:
        self.mode: str | None = None
        self.items: list[list[Tensor]] = []
        self.pos = 0
        self.weighted_calls = 0

    def start(self, mode: str) -> None:
        if mode == "record":
            self.items = []
        self.mode, self.pos, self.weighted_calls = mode, 0, 0

    def next(self) -> list[Tensor]:
        if self.pos >= len(self.items):
            raise RuntimeError("lrp: the model called its layers differently in the two passes")
        self.pos += 1
        return self.items[self.pos - 1]


def _ratio(z: Tensor, zp: Tensor, eps: float) -> Tensor:
    """``z / (z' + ε·sign z')``, 0 where the denominator vanishes (a neuron with no relevance)."""
    den = zp + eps * torch.where(zp >= 0, 1.0, -1.0).to(zp.dtype)
    return torch.where(
        den == 0, torch.zeros_like(z), z / torch.where(den == 0, torch.ones_like(den), den)
    )


def _bn_affine(bn: Any) -> tuple[Tensor, Tensor]:
    """Scale and shift of a BatchNorm in eval mode (running statistics)."""
    if bn.running_var is None:
        raise TypeError(f"lrp: {type(bn).__name__} without running statistics is not supported")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.affine:
        scale = bn.weight * scale
    shift = (bn.bias if bn.affine else 0) - bn.running_mean * scale
    return scale, shift


class _RuleLayer(nn.Module):
    """Forward value of the original layer; input gradient of the LRP rule (see module notes)."""

    def __init__(
        self,
        fn: LayerFn,
        params: Callable[[], tuple[Any, Any]],
        rule: LRPRule,
        first_rule: LRPRule | None,
        tape: _Tape,
        *,
        weighted: bool,
        modules: list[nn.Module],
    ) -> None:
        super().__init__()
        self.fn, self.params, self.rule, self.first_rule = fn, params, rule, first_rule
        self.tape, self.weighted = tape, weighted
        self.originals = nn.ModuleList(modules)  # the parameters stay the original ones

    def _parts(self, w: Any, b: Any) -> list[tuple[float, Any, Any, float]]:
        if not self.weighted:  # pooling, stand-alone BatchNorm: ε-rule with their own weights
            return [(1.0, w, b, self.rule.stabilizer)]
        first = self.tape.weighted_calls == 0 and self.first_rule is not None
        self.tape.weighted_calls += 1
        return (self.first_rule if first else self.rule).parts(w, b)  # type: ignore[union-attr]

    def forward(self, a: Tensor) -> Tensor:
        w, b = self.params()
        z = self.fn(a, w, b)
        if self.tape.mode is None:
            return z
        parts = self._parts(w, b)
        if self.tape.mode == "record":
            self.tape.items.append([_ratio(z, self.fn(a, wp, bp), e) for _, wp, bp, e in parts])
            return z
        ratios = self.tape.next()
        out = z.new_zeros(())
        for (c, wp, bp, _), q in zip(parts, ratios):
            out = out + c * self.fn(a, wp, bp) * q
        return out + (z - out).detach()


class _Dropout(nn.Module):
    """Dropout whose train-mode mask is drawn in the first pass and reused in the second."""

    def __init__(self, p: float, tape: _Tape, drop: Callable[..., Tensor] = F.dropout) -> None:
        super().__init__()
        self.p, self.tape, self.drop = p, tape, drop

    def forward(self, a: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return a
        if self.tape.mode == "replay":
            return a * self.tape.next()[0]
        mask = self.drop(torch.ones_like(a), self.p, True)
        if self.tape.mode == "record":
            self.tape.items.append([mask])
        return a * mask


def _linear_fn(m: nn.Module) -> LayerFn:
    if isinstance(m, nn.Linear):
        return F.linear
    if isinstance(m, LocallyConnected1d):

        def lc(a, w, b, m=m):
            out = locally_connected(w, a, m.padding, m.stride)
            return out if b is None else out + b

        return lc
    assert isinstance(m, (nn.Conv1d, nn.Conv2d))
    if m.padding_mode != "zeros":
        raise TypeError(
            f"lrp: {type(m).__name__} with padding_mode={m.padding_mode!r} is not supported"
        )
    conv = F.conv1d if isinstance(m, nn.Conv1d) else F.conv2d

    def conv_fn(a, w, b, conv=conv, m=m):
        return conv(a, w, b, m.stride, m.padding, m.dilation, m.groups)

    return conv_fn


def _weighted(m: nn.Module, bn: Any, rule, first_rule, tape: _Tape) -> _RuleLayer:
    def params(m=m, bn=bn):
        if bn is None:
            return m.weight, m.bias
        scale, shift = _bn_affine(bn)
        w = m.weight * scale.view(-1, *([1] * (m.weight.dim() - 1)))
        return w, (m.bias * scale if m.bias is not None else 0) + shift

    mods = [m] if bn is None else [m, bn]
    return _RuleLayer(_linear_fn(m), params, rule, first_rule, tape, weighted=True, modules=mods)


def _lone_bn(bn: Any, rule, tape: _Tape) -> _RuleLayer:
    def fn(a, w, b):
        shape = (1, -1) + (1,) * (a.dim() - 2)
        return a * w.view(shape) + (0 if b is None else b.view(shape))

    return _RuleLayer(fn, lambda: _bn_affine(bn), rule, None, tape, weighted=False, modules=[bn])


_LINEAR = (nn.Linear, nn.Conv1d, nn.Conv2d, LocallyConnected1d)


def _convert(m: nn.Module, path: str, rule, first_rule, tape: _Tape) -> nn.Module:
    name = path or "the model"
    if isinstance(m, _LINEAR):
        return _weighted(m, None, rule, first_rule, tape)
    if isinstance(m, _BN):
        return _lone_bn(m, rule, tape)
    if isinstance(m, _POOL):
        pool = copy.copy(m)
        return _RuleLayer(
            lambda a, w, b: pool(a),
            lambda: (None, None),
            rule,
            None,
            tape,
            weighted=False,
            modules=[],
        )
    if isinstance(m, _DROPOUT):
        drop = {nn.Dropout1d: F.dropout1d, nn.Dropout2d: F.dropout2d}.get(type(m), F.dropout)
        return _Dropout(m.p, tape, drop).train(m.training)
    if isinstance(m, _PASS):
        return m
    children = dict(m.named_children())
    if not children:
        raise TypeError(
            f"lrp: unsupported module {name!r} ({type(m).__name__}); supported: {_SUPPORTED}"
        )
    if any(p is not None for p in m._parameters.values()):
        raise TypeError(
            f"lrp: module {name!r} ({type(m).__name__}) holds parameters of its own, "
            "which no LRP rule covers"
        )
    new = copy.copy(m)
    new._modules = {}
    new._parameters = dict(m._parameters)
    new._buffers = dict(m._buffers)
    keys = list(children)
    plain = type(m).forward is nn.Sequential.forward  # only then is the order the call order
    i = 0
    while i < len(keys):
        k, child = keys[i], children[keys[i]]
        sub = f"{path}.{k}" if path else k
        nxt = children[keys[i + 1]] if i + 1 < len(keys) else None
        if plain and isinstance(child, _LINEAR[:3]) and isinstance(nxt, _BN):
            new._modules[k] = _weighted(child, nxt, rule, first_rule, tape)
            new._modules[keys[i + 1]] = nn.Identity()
            i += 2
            continue
        new._modules[k] = _convert(child, sub, rule, first_rule, tape)
        i += 1
    return new


def _lrp_model(model: nn.Module, rule: LRPRule, first_rule: LRPRule | None) -> nn.Module:
    """The converted model (parameters shared with ``model``); its forward value is the model's."""
    tape = _Tape()
    net = _convert(model, "", rule, first_rule, tape)
    net._lrp_tape = tape  # type: ignore[assignment]
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
    model : nn.Module
        Any network of Linear, Conv1d/Conv2d, LocallyConnected1d, BatchNorm (running statistics),
        ReLU, max/avg pooling, Flatten, Identity and Dropout modules, arranged by any containers
        (``nn.Sequential``, residual blocks, custom ``forward`` methods). Other leaf modules raise
        ``TypeError`` naming them. See the module notes for how each one is treated.
    x : Tensor
        ``(N, ...)``.
    target : Tensor, int, "predicted" or None
        Classes ``(N,)``, one class for all, or the predicted class.
    rule : LRPRule, default ``Epsilon(1e-6)``
        :class:`Epsilon`, :class:`ZPlus`, :class:`AlphaBeta` or :class:`Gamma`.
    first_rule : LRPRule or None
        A different rule for the first linear layer called (e.g. ``Epsilon(0)`` on signed
        inputs).
    create_graph : bool
        Keep the graph: the relevance is then differentiable, and its gradient is the exact
        derivative of the relevance as computed (see the module notes).

    Returns
    -------
    Tensor
        Relevance ``(N, ...)``; ``Σ R = z_t(x)`` for bias-free ReLU nets with LRP-0.

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
    tape: _Tape = net._lrp_tape  # type: ignore[assignment]
    t = resolve_target(model, x, target, where)
    if isinstance(t, int):
        t = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
    t = check_labels(t, x.shape[0], where, name="target").to(x.device)
    xv = x.detach().requires_grad_(True)
    with torch.set_grad_enabled(create_graph):
        tape.start("record")
        net(x)
    with torch.enable_grad():
        tape.start("replay")
        z = net(xv)
        if tape.pos != len(tape.items):
            raise RuntimeError("lrp: the model called its layers differently in the two passes")
        check_label_range(t, z.shape[1], where, name="target")
        score = z.gather(1, t.view(-1, 1)).sum()
        (g,) = torch.autograd.grad(score, xv, create_graph=create_graph)
    return x * g
