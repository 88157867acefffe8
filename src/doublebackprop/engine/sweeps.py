"""The paper's double-backprop algorithm written out, with an operator counter.

For a sequential network ``z_j = K_j(θ_j, x_{j-1}) + b_j``, ``x_j = φ_j(z_j)`` and a penalty
``P = R(s)`` of the input gradient ``s = ∇_x g`` (``g`` seeded at the logits by ``c = ∇_z h``),
``∇_θ P`` takes three sweeps after the forward pass (docs/mathematics.md):

* **B1** — ordinary backward: ``e_j = φ'_j ⊙ δ_j``, ``δ_{j-1} = K_j^T(θ_j, e_j)``; ``s = δ_0``;
* **F2** — forward-like sweep from ``v_0 = ∇R(s)``: ``ē_j = K_j(θ_j, v_{j-1})``,
  ``v_j = φ'_j ⊙ ē_j``, ``∇_{θ_j} P += K_j^□(e_j, v_{j-1})``, curvature seeds
  ``ζ_j = φ''_j ⊙ δ_j ⊙ ē_j`` and ``ζ_L = ∇²h(z_L) ē_L`` at the head;
* **B2** — ordinary backward through the primal graph seeded by the ``ζ``'s:
  ``∇_{θ_j} P += K_j^□(a_j, x_{j-1})``, ``∇_{b_j} P = a_j``.

With locally linear activations (``φ'' = 0``) and a seed that is linear in the logits every ``ζ``
vanishes and **B2 is skipped** — per Jacobian row two sweeps instead of three. Rows (Jacobian
rows, projections) are stacked along the batch and run as one sweep.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from doublebackprop.engine.engines import Engine, class_labels, refuse_own_gradients
from doublebackprop.engine.operators import (
    Activation,
    BilinearOperator,
    LinearMap,
    activation,
    bilinear_operator,
    conv_padding,
    linear_map,
    pad_last_dims,
    stock_type,
)
from doublebackprop.engine.validation import check_finite_gradient, check_label_range, check_logits

__all__ = ["Sweeps", "SweepCount", "sequential_layers"]

Tensor = torch.Tensor


@dataclass(frozen=True)
class SweepCount:
    """Operator applications of one penalty-gradient computation.

    ``ops`` maps ``(sweep, operator)`` — sweeps ``"F"`` (forward), ``"B1"``, ``"F2"``, ``"B2"``;
    operators ``"K"``, ``"KT"``, ``"Kbox"`` — to the number of applications, each counted once
    per row. ``sweeps`` lists the sweeps run after the forward pass; ``rows`` is ``R``.
    """

    ops: dict[tuple[str, str], int]
    sweeps: tuple[str, ...]
    rows: int

    @property
    def total(self) -> int:
        return sum(self.ops.values())

    def per_row(self) -> float:
        """Operator applications after the forward pass, per row."""
        after = sum(n for (sweep, _), n in self.ops.items() if sweep != "F")
        return after / self.rows


@dataclass
class _Node:
    module: nn.Module
    kind: str  # "bilinear" | "linear" | "maxpool" | "act"
    op: BilinearOperator | LinearMap | Activation | None = None
    pre_pad: list[tuple[int, int]] = field(default_factory=list)
    # filled by the forward pass
    x_in: Tensor | None = None
    z: Tensor | None = None
    in_shape: torch.Size | None = None
    idx: Tensor | None = None


def sequential_layers(model: nn.Module) -> list[nn.Module]:
    """The leaf layers of a (nested) ``nn.Sequential``; raises for anything else."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(
            f"Sweeps: the sweeps engine needs an nn.Sequential model, got {type(model).__name__}; "
            "use engine='adjoint' for arbitrary models"
        )
    layers: list[nn.Module] = []
    for m in model:
        layers.extend(sequential_layers(m) if isinstance(m, nn.Sequential) else [m])
    return layers


def _node(module: nn.Module, position: int) -> _Node:
    op = bilinear_operator(module)
    if op is not None:
        pre: list[tuple[int, int]] = []
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            pre, _ = conv_padding(module.padding, module.kernel_size, module.dilation)
        return _Node(module, "bilinear", op, pre)
    act = activation(module)
    if act is not None:
        return _Node(module, "act", act)
    if stock_type(module) in (nn.MaxPool1d, nn.MaxPool2d) and not module.return_indices:
        return _Node(module, "maxpool")
    lin = linear_map(module)
    if lin is not None:
        return _Node(module, "linear", lin)
    detail = ""
    if isinstance(module, nn.modules.dropout._DropoutNd) and module.training:
        detail = " in train mode (call .eval())"
    raise TypeError(
        f"Sweeps: unsupported layer {stock_type(module).__name__}{detail} at position {position}; "
        "supported: Linear, Conv1d/2d, LocallyConnected1d, Flatten, max/avg pooling, "
        "eval-mode Dropout, ReLU, LeakyReLU, Softplus, Tanh, Sigmoid, ELU, GELU. "
        "Use engine='adjoint' for other models"
    )


def _rep(t: Tensor, rows: int) -> Tensor:
    return t if rows == 1 else t.repeat(rows, *([1] * (t.dim() - 1)))


def _crop(t: Tensor, pre: list[tuple[int, int]]) -> Tensor:
    for i, (left, right) in enumerate(pre):
        if left or right:
            dim = t.dim() - len(pre) + i
            t = t.narrow(dim, left, t.shape[dim] - left - right)
    return t


def _bias_grad(module: nn.Module, a: Tensor) -> Tensor:
    if isinstance(module, nn.Linear):
        return a.reshape(-1, a.shape[-1]).sum(0)
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return a.sum(dim=[0, *range(2, a.dim())])
    return a.sum(0)  # LocallyConnected1d: a bias per channel and position


class Sweeps(Engine):
    """The explicit forward/B1/F2/B2 algorithm for ``nn.Sequential`` networks.

    After each call ``last_count`` holds the :class:`SweepCount`. The task loss still goes
    through autograd; the penalty's parameter gradient is computed by the sweeps and handed to
    autograd as a surrogate whose gradient equals it.
    """

    name = "sweeps"

    def __init__(self) -> None:
        self.last_count: SweepCount | None = None

    def penalty_term(self, model, x, y, penalty, weight):
        refuse_own_gradients(self, penalty)
        nodes = [_node(m, i) for i, m in enumerate(sequential_layers(model))]
        ops: Counter[tuple[str, str]] = Counter()
        logits = self._forward(nodes, x, ops, class_labels(penalty, y))
        seeds = penalty.seeds(logits, y).detach()
        rows, n = seeds.shape[0], x.shape[0]

        delta_out, e_out, s = self._backward1(nodes, seeds.reshape(rows * n, -1), rows, ops)
        grads = s.reshape(rows, n, *x.shape[1:])
        check_finite_gradient(grads, "objective")
        probe = grads.detach().requires_grad_(True)
        w = None if weight is None else weight.detach()
        per = penalty.per_sample(probe, x.detach())
        value = per.mean() if w is None else (w * per).mean()
        if not value.requires_grad:
            self.last_count = SweepCount(dict(ops), (), rows)
            return logits, value.detach()
        (v0,) = torch.autograd.grad(value, probe)

        param_grads: dict[nn.Parameter, Tensor] = {}
        zetas, e_bar_top = self._forward2(
            nodes, v0.reshape(rows * n, *x.shape[1:]), rows, delta_out, e_out, param_grads, ops
        )
        sweeps = ["B1", "F2"]
        if not penalty.linear_in_logits:
            ebar = e_bar_top.reshape(rows, n, -1)[0]
            _, head = torch.func.jvp(  # type: ignore[misc]  # the stub's return type is loose
                lambda z: penalty.seeds(z, y)[0], (logits.detach(),), (ebar,)
            )
            zetas[len(nodes)] = head
        if zetas:
            self._backward2(nodes, zetas, rows, param_grads, ops)
            sweeps.append("B2")
        self.last_count = SweepCount(dict(ops), tuple(sweeps), rows)

        surrogate = logits.new_zeros(())
        for p, g in param_grads.items():
            surrogate = surrogate + (p * g.detach()).sum()
        return logits, value.detach() + surrogate - surrogate.detach()

    # -- the four passes -------------------------------------------------------------------
    def _forward(self, nodes: list[_Node], x: Tensor, ops: Counter, y: Tensor | None) -> Tensor:
        h = x.detach()
        for node in nodes:
            node.in_shape = h.shape
            if node.kind == "bilinear":
                # The module's own forward (bit-identical to the stock model) computes
                # K(θ, x) + b; the padded input is kept for K^□.
                node.x_in = pad_last_dims(h, node.pre_pad).detach()
                h = node.module(h)
                ops["F", "K"] += 1
            elif node.kind == "act":
                node.z = h.detach()
                h = node.op.phi(h)
            elif node.kind == "maxpool":
                m: Any = node.module  # a MaxPool1d/2d: its settings, not `Tensor | Module`
                pool = F.max_pool1d if isinstance(m, nn.MaxPool1d) else F.max_pool2d
                with torch.no_grad():
                    out, idx = pool(
                        h,
                        m.kernel_size,
                        m.stride,
                        m.padding,
                        m.dilation,
                        ceil_mode=m.ceil_mode,
                        return_indices=True,
                    )
                node.idx = idx
                h = h.flatten(2).gather(2, idx.flatten(2)).view_as(out)
            else:
                assert isinstance(node.op, LinearMap)
                h = node.op.apply(h)
        logits = check_logits(h, x.shape[0], "objective")
        if y is not None:
            check_label_range(y, logits.shape[1], "objective")
        return logits

    def _backward1(self, nodes, seed, rows, ops):
        delta = seed
        delta_out: dict[int, Tensor] = {}
        e_out: dict[int, Tensor] = {}
        for j in range(len(nodes) - 1, -1, -1):
            node = nodes[j]
            shape = (delta.shape[0], *node.in_shape[1:])
            if node.kind == "bilinear":
                e_out[j] = delta
                xin_shape = (delta.shape[0], *node.x_in.shape[1:])
                delta = _crop(
                    node.op.input_adjoint(node.module.weight.detach(), delta, xin_shape),
                    node.pre_pad,
                )
                ops["B1", "KT"] += rows
            elif node.kind == "act":
                delta_out[j] = delta
                delta = node.op.dphi(_rep(node.z, rows)) * delta
            elif node.kind == "maxpool":
                delta = _unpool(delta, _rep(node.idx, rows), shape)
            else:
                delta = node.op.adjoint(delta, shape)
        return delta_out, e_out, delta

    def _forward2(self, nodes, v, rows, delta_out, e_out, param_grads, ops):
        zetas: dict[int, Tensor] = {}
        for j, node in enumerate(nodes):
            if node.kind == "bilinear":
                w = node.module.weight
                vp = pad_last_dims(v, node.pre_pad)
                _accumulate(param_grads, w, node.op.param_adjoint(e_out[j], vp, w.shape))
                v = node.op.apply(w.detach(), vp)
                ops["F2", "K"] += rows
                ops["F2", "Kbox"] += rows
            elif node.kind == "act":
                z = _rep(node.z, rows)
                if node.op.ddphi is not None:
                    zetas[j] = node.op.ddphi(z) * delta_out[j] * v
                v = node.op.dphi(z) * v
            elif node.kind == "maxpool":
                v = (
                    v.flatten(2)
                    .gather(2, _rep(node.idx, rows).flatten(2))
                    .view(v.shape[0], *node.idx.shape[1:])
                )
            else:
                v = node.op.apply(v)
        return zetas, v

    def _backward2(self, nodes, zetas, rows, param_grads, ops):
        top = max(zetas)
        first = min(j for j, node in enumerate(nodes) if node.kind == "bilinear")
        a = zetas.get(len(nodes))
        for j in range(min(top, len(nodes) - 1), -1, -1):
            node = nodes[j]
            if node.kind == "act":
                if a is not None:
                    a = node.op.dphi(_rep(node.z, rows)) * a
                if j in zetas:
                    a = zetas[j] if a is None else a + zetas[j]
                continue
            if a is None:
                continue
            shape = (a.shape[0], *node.in_shape[1:])
            if node.kind == "bilinear":
                m = node.module
                xin = _rep(node.x_in, rows)
                _accumulate(param_grads, m.weight, node.op.param_adjoint(a, xin, m.weight.shape))
                ops["B2", "Kbox"] += rows
                if m.bias is not None:
                    _accumulate(param_grads, m.bias, _bias_grad(m, a))
                if j == first:  # no parameters below: the input adjoint is not needed
                    break
                a = _crop(node.op.input_adjoint(m.weight.detach(), a, xin.shape), node.pre_pad)
                ops["B2", "KT"] += rows
            elif node.kind == "maxpool":
                a = _unpool(a, _rep(node.idx, rows), shape)
            else:
                a = node.op.adjoint(a, shape)


def _unpool(grad: Tensor, idx: Tensor, in_shape: tuple[int, ...]) -> Tensor:
    """``K^T`` of max-pooling with fixed argmax indices: scatter the gradient back."""
    flat = grad.new_zeros(in_shape).flatten(2)
    flat.scatter_add_(2, idx.flatten(2), grad.flatten(2))
    return flat.view(in_shape)


def _accumulate(store: dict, p: nn.Parameter, g: Tensor) -> None:
    store[p] = g if p not in store else store[p] + g
