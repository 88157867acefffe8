"""The converted ``nn.Linear`` (see :mod:`doublebackprop.engine.converted`): one matrix product
for the weight's gradient where stock autograd runs two and adds them.

In a penalised step the weight ``W`` of ``y = x Wᵀ + b`` is used twice: by the forward, and by
the input-gradient pass, ``g_x = δ W`` (``δ``: the gradient arriving at ``y``). The final
backward gives it two gradients, ``δᵀ u`` (``u``: what arrives at ``g_x``) from the second use
and ``rᵀ x`` (``r``: what arrives at ``y``) from the first. Stock autograd forms both, each a
``(out, in)`` matrix product, and adds them: for a wide layer the add is a pass over three
weight-sized matrices, about a tenth of an MLP's penalised step on the CPU (profiled). Here the
node of ``g_x`` leaves its factors ``(δ, u)`` with the node of the forward, which runs later in
the same backward (``y`` is upstream of ``δ``), and that node forms the sum as one product over
the stacked rows, ``[δ; r]ᵀ [u; x]``. Where the stacked rows would hold more numbers than the
weight (large batches), the first product is kept instead and the second accumulated into it in
place (``addmm_``), which is the add's work without its pass.

The hand-over is taken only when it is sure to be collected: outside ``torch.func`` and
higher-order backwards, in the same backward pass (its id), and when the engine says that the
forward's node will run (otherwise, or when that node has already run, each node returns its
own product, as stock does).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from doublebackprop.engine._torch_compat import (
    functorch_active,
    graph_task_id,
    legacy_batched,
    will_engine_execute,
)
from doublebackprop.engine.converted import (
    AdjointModule,
    adjoint_path,
    autocast_dtype,
    dual,
    engine_needs,
    fn_apply,
)

__all__ = ["AdjointLinear"]

Tensor = torch.Tensor


def _rows(t: Tensor) -> Tensor:
    """``(*, f)`` as ``(rows, f)`` (an unbatched ``(f,)`` as one row)."""
    return t if t.dim() == 2 else t.reshape(-1, t.shape[-1])


class _Handover:
    """The weight-gradient factors left with a forward node for one backward pass."""

    __slots__ = ("task", "ran", "pairs", "dense")

    def __init__(self) -> None:
        self.task: int | None = None  # the pass the factors belong to
        self.ran: int | None = None  # the last pass in which the forward's node ran
        self.pairs: list[tuple[Tensor, Tensor]] = []
        self.dense: Tensor | None = None

    def reset(self, task: int) -> None:
        if self.task != task:
            self.task, self.pairs, self.dense = task, [], None


@dual
class _LinearFn(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias):  # type: ignore[override]
        return F.linear(x, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[override]
        x, weight, bias = inputs
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        ctx.handover = _Handover()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = [*engine_needs(ctx, 3), False][:3]  # no edge for bias=None
        g = _rows(grad)
        gb = g.sum(0) if need_b and ctx.has_bias else None
        if torch.is_grad_enabled():  # an input-gradient pass: its g_x is differentiated later
            # Rows batched by ``is_grads_batched`` (legacy vmap) keep stock's product: their
            # graph is not a plain pass of this node's.
            plain = legacy_batched(grad) or functorch_active()
            gx = None
            if need_x:
                gx = grad @ weight if plain else fn_apply(_InputAdjointFn, grad, weight, ctx)
            gw = g.t() @ _rows(x) if need_w else None
            return gx, gw, gb
        task = graph_task_id()
        ctx.handover.ran = task
        gx = grad @ weight if need_x else None
        gw = _weight_gradient(ctx.handover, task, g, _rows(x)) if need_w else None
        return gx, gw, gb


def _weight_gradient(h: _Handover, task: int | None, g: Tensor, x: Tensor) -> Tensor:
    """``gᵀ x`` plus whatever the input-gradient nodes left for this pass, in one product."""
    if task is None or h.task != task:
        return g.t() @ x
    pairs, dense = h.pairs, h.dense
    h.task, h.pairs, h.dense = None, [], None
    if dense is not None:
        return dense.addmm_(g.t(), x)
    if not pairs:
        return g.t() @ x
    return torch.cat([d for d, _ in pairs] + [g]).t() @ torch.cat([u for _, u in pairs] + [x])


@dual
class _InputAdjointFn(torch.autograd.Function):
    """``g_x = δ W``, whose own backward may leave its weight gradient to the forward's node."""

    generate_vmap_rule = True

    @staticmethod
    def forward(grad, weight, owner):  # type: ignore[override]
        return grad @ weight

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[override]
        grad, weight, owner = inputs
        ctx.save_for_backward(grad, weight)
        ctx.owner = owner

    @staticmethod
    def backward(ctx, ggx):  # type: ignore[override]
        grad, weight = ctx.saved_tensors
        need_grad, need_w = engine_needs(ctx, 2)
        dgrad = ggx @ weight.t() if need_grad else None
        dw = None
        if need_w:
            d, u = _rows(grad), _rows(ggx)
            if not _hand_over(ctx.owner, d, u):
                dw = d.t() @ u
        return dgrad, dw, None


def _hand_over(owner: Any, d: Tensor, u: Tensor) -> bool:
    """Leave ``dᵀ u`` with the forward's node ``owner`` if it will surely collect it."""
    if torch.is_grad_enabled() or functorch_active():
        return False
    task = graph_task_id()
    h = getattr(owner, "handover", None)
    if task is None or h is None or h.ran == task or not will_engine_execute(owner, unknown=False):
        return False
    h.reset(task)
    rows = d.shape[0] + sum(p.shape[0] for p, _ in h.pairs)  # e.g. one pair per Jacobian row
    if h.dense is None and rows * (d.shape[1] + u.shape[1]) <= d.shape[1] * u.shape[1]:
        h.pairs.append((d, u))  # the stacked rows hold fewer numbers than the weight
    elif h.dense is None:
        h.dense = d.t() @ u
        for d0, u0 in h.pairs:
            h.dense.addmm_(d0.t(), u0)
        h.pairs = []
    else:
        h.dense.addmm_(d.t(), u)
    return True


class AdjointLinear(AdjointModule, nn.Linear):
    """``nn.Linear`` whose weight gradient in a penalised step is one product (see the module
    docstring); the forward is stock's ``F.linear``, bit for bit. Made by
    :func:`~doublebackprop.engine.adjoint` from an ``nn.Linear`` in place.

    Parameters
    ----------
    in_features, out_features, bias, device, dtype
        As for ``nn.Linear``.
    """

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        if not adjoint_path():
            return super().forward(x)
        w: Tensor = self.weight
        bias: Tensor | None = self.bias
        dtype = autocast_dtype(x)
        if dtype is not None:  # what autocast does to a stock linear: everything in its dtype
            x, w = x.to(dtype), w.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        return fn_apply(_LinearFn, x, w, bias)
