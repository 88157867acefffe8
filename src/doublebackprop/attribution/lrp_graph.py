"""The machinery of differentiable LRP: the model with its rule layers, and the two passes.

The model is copied shallowly (parameters shared) and each leaf module replaced by its rule
counterpart (see :mod:`doublebackprop.attribution.lrp` for what each module gets). A first pass
*records* every rule layer's ratio ``q = z / (z' + ε·sign z')`` (with its graph, so that the
ratios stay functions of the parameters); a second pass *replays* them, and its input gradient
is the modified gradient whose product with the input is the relevance.

Rules are used only through ``rule.parts(w, b)`` and ``rule.stabilizer``, so this module does
not depend on the rule classes (:mod:`doublebackprop.attribution.lrp_rules` depends on it).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from doublebackprop.engine.layers import LocallyConnected1d
from doublebackprop.engine.operators import locally_connected
from doublebackprop.engine.validation import check_label_range

__all__ = ["modified_gradient"]

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
        rule: Any,
        first_rule: Any,
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


def _lrp_model(model: nn.Module, rule: Any, first_rule: Any) -> nn.Module:
    """The converted model (parameters shared with ``model``); its forward value is the model's."""
    tape = _Tape()
    net = _convert(model, "", rule, first_rule, tape)
    net._lrp_tape = tape  # type: ignore[assignment]
    return net


def modified_gradient(
    model: nn.Module,
    x: Tensor,
    classes: Tensor,
    *,
    rule: Any,
    first_rule: Any = None,
    create_graph: bool = False,
) -> Tensor:
    """``∇_x`` of the rule-modified network at ``classes``; the LRP relevance is ``x ⊙`` this.

    Parameters
    ----------
    model : nn.Module
        The network (its parameters are shared, its modules left as they are).
    x : Tensor
        ``(N, ...)`` inputs, checked by the caller.
    classes : Tensor
        ``(N,)`` class indices (checked against the outputs here).
    rule, first_rule : LRPRule
        The rule of every linear layer, and optionally of the first one called.
    create_graph : bool
        Keep the graph: the result is then differentiable in the parameters, exactly (the
        ratios come from a recorded pass that kept its graph).
    """
    net = _lrp_model(model, rule, first_rule)
    tape: _Tape = net._lrp_tape  # type: ignore[assignment]
    xv = x.detach().requires_grad_(True)
    with torch.set_grad_enabled(create_graph):
        tape.start("record")
        net(x)
    with torch.enable_grad():
        tape.start("replay")
        z = net(xv)
        if tape.pos != len(tape.items):
            raise RuntimeError("lrp: the model called its layers differently in the two passes")
        check_label_range(classes, z.shape[1], "lrp", name="target")
        score = z.gather(1, classes.view(-1, 1)).sum()
        (g,) = torch.autograd.grad(score, xv, create_graph=create_graph)
    return g
