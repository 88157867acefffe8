"""The converted modules behind :func:`doublebackprop.engine.adjoint`: forward by the stock kernels
(bit-identical outputs), backward written with ordinary differentiable ops built from ``K^T`` and
``K^□`` (see :mod:`doublebackprop.engine.adjoint` for why)."""

from __future__ import annotations

import contextvars
import threading
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from doublebackprop.engine._torch_compat import (
    convolution_backward,
    functorch_active,
    leaky_relu_backward,
    relu_backward,
    will_engine_execute,
)
from doublebackprop.engine.operators import (
    BilinearOperator,
    conv_operator,
    conv_padding,
    pad_last_dims,
)

__all__ = ["AdjointModule", "adjoint_path", "enter_forward", "leave_forward", "dual", "fn_apply"]

Tensor = torch.Tensor


class AdjointModule:
    """Marker base of converted modules."""


# ------------------------------------------------------------------- adjoint or stock path
#: ``False`` while a converted model runs a forward of which no input gradient can be taken
_INPUT_GRAD: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
    "doublebackprop_input_grad", default=None
)
_TOKENS = threading.local()


def adjoint_path() -> bool:
    """Whether the converted modules build their backward from the adjoints in this forward.

    ``False`` only inside a forward of a model converted by :func:`doublebackprop.adjoint`
    whose inputs require no gradient (or with grad mode off): no input gradient can be taken
    of such a forward, so no input-gradient pass differentiates its backward, and each
    converted module runs as its stock class (the same outputs, stock's graph, stock's time:
    a plain training step is the original model's). Anywhere else (an input that requires
    grad, a submodule called on its own, the ``torch.func`` transforms) the adjoint path.
    """
    return _INPUT_GRAD.get() is not False


def _requires_grad(obj: object) -> bool | None:
    """Whether any tensor in ``obj`` (nested tuples, lists, dicts) requires grad; ``None``
    without tensors."""
    if isinstance(obj, torch.Tensor):
        return obj.requires_grad
    items = obj.values() if isinstance(obj, dict) else obj
    if not isinstance(obj, (tuple, list, dict)):
        return None
    found: bool | None = None
    for item in items:
        flag = _requires_grad(item)
        if flag:
            return True
        if flag is not None:
            found = False
    return found


def enter_forward(module: nn.Module, args: tuple, kwargs: dict) -> None:
    """Forward pre-hook of a converted model: decides :func:`adjoint_path` for its forward.

    Parameters
    ----------
    module : nn.Module
        The converted model.
    args, kwargs
        The forward's arguments.
    """
    if functorch_active():
        value = None  # transformed tensors do not tell: the adjoint path
    elif not torch.is_grad_enabled():
        value = False
    else:
        value = _requires_grad((args, kwargs))
    stack = _TOKENS.__dict__.setdefault("stack", [])
    stack.append(_INPUT_GRAD.set(value))


def leave_forward(module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
    """Forward hook (also run when the forward raises): restores the enclosing decision.

    Parameters
    ----------
    module : nn.Module
        The converted model.
    args, kwargs, output
        The forward's arguments and result (unused).
    """
    stack = _TOKENS.__dict__.get("stack")
    if stack:
        _INPUT_GRAD.reset(stack.pop())


def _batched(x: Tensor, nd: int) -> bool:
    """Whether ``x`` has a batch dimension for an ``nd``-D layer (stock layers accept
    unbatched ``(C, *spatial)`` inputs too; the converted ones add and drop the batch dim)."""
    return x.dim() != nd + 1


# ----------------------------------------------------------------------------- convolutions
def autocast_dtype(x: Tensor) -> torch.dtype | None:
    """The autocast dtype in force for ``x``'s device, or ``None`` outside autocast.

    Autocast casts a stock convolution's input, weight and bias to that dtype; the converted
    convolution does the same *before* its autograd.Function, so forward and backward see one
    dtype (the backward runs outside the autocast region)."""
    device = x.device.type
    if not torch.is_autocast_enabled(device):
        return None
    return torch.get_autocast_dtype(device)


_FunctionT = TypeVar("_FunctionT", bound=type)


def dual(cls: _FunctionT) -> _FunctionT:
    """Give a ``setup_context``-style autograd.Function a classic twin (``cls.classic``).

    The ``torch.func`` transforms need the ``setup_context`` form, but outside them it costs
    40-160 µs more per call on the CPU (measured) than the classic form with ``ctx`` in
    ``forward``; :func:`fn_apply` picks the classic twin whenever no transform is running. Both
    run the same ``forward``, ``setup_context`` and ``backward``."""

    def forward(ctx, *args):  # type: ignore[no-untyped-def]
        out = cls.forward(*args)
        cls.setup_context(ctx, args, out)
        return out

    twin = type(
        cls.__name__,
        (torch.autograd.Function,),
        {
            "forward": staticmethod(forward),
            "backward": staticmethod(cls.backward),
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
        },
    )
    cls.classic = twin  # type: ignore[attr-defined]
    return cls


def fn_apply(cls: type, *args: object) -> Any:
    """``cls.apply(*args)``, by the classic twin outside the ``torch.func`` transforms."""
    impl = cls if functorch_active() else cls.classic  # type: ignore[attr-defined]
    return impl.apply(*args)


def engine_needs(ctx: object, count: int) -> list[bool]:
    """Whether the running backward uses the gradient of each of the first ``count`` inputs.

    Under the ``torch.func`` transforms the context has no graph edges to ask: then every
    gradient is computed (never wrong, possibly more work)."""
    edges = getattr(ctx, "next_functions", None)
    if edges is None:
        return [True] * count
    return [will_engine_execute(node) for node, _ in edges[:count]]


@dual
class _ConvFn(torch.autograd.Function):
    # Forward, setup_context and backward are written with plain torch ops, so the torch.func
    # transforms (vmap, grad, jacrev, functional_call) can run them.
    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias, op, config):  # type: ignore[override]
        return op.apply_biased(weight, x, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[override]
        x, weight, bias, op, config = inputs
        ctx.save_for_backward(x, weight)
        ctx.op, ctx.config = op, config
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        needs = engine_needs(ctx, 3)
        mask = [needs[0], needs[1], ctx.has_bias and needs[2]]
        if not torch.is_grad_enabled():
            # Nobody differentiates this backward: the stock fused kernel is fastest.
            stride, padding, dilation, groups = ctx.config
            gx, gw, gb = convolution_backward(
                grad, x, weight, stride, padding, dilation, groups, mask
            )
            return gx, gw, gb, None, None
        op = ctx.op
        gx = op.input_adjoint(weight, grad, x.shape) if mask[0] else None
        gw = op.param_adjoint(grad, x, weight.shape) if mask[1] else None
        gb = grad.sum(dim=[0, *range(2, grad.dim())]) if mask[2] else None
        return gx, gw, gb, None, None


class _AdjointConvMixin(AdjointModule):
    def _operator(self) -> tuple[list[tuple[int, int]], BilinearOperator, tuple]:
        """The pre-padding, operator and kernel configuration, rebuilt only when the module's
        hyper-parameters change (building them costs more than a small convolution)."""
        key = (self.padding, self.kernel_size, self.stride, self.dilation, self.groups)
        cached = self.__dict__.get("_adjoint_operator")
        if cached is None or cached[0] != key:
            nd = len(self.kernel_size)
            pre, sym = conv_padding(self.padding, self.kernel_size, self.dilation)
            op = conv_operator(nd, self.stride, sym, self.dilation, self.groups)
            config = (list(self.stride), list(sym), list(self.dilation), self.groups)
            cached = (key, pre, op, config)
            self.__dict__["_adjoint_operator"] = cached
        return cached[1], cached[2], cached[3]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()  # the cached operator holds closures: not pickled
        state.pop("_adjoint_operator", None)
        return state

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        if not adjoint_path():
            return super().forward(x)  # type: ignore[misc]
        nd = len(self.kernel_size)
        if not _batched(x, nd):
            return self.forward(x.unsqueeze(0)).squeeze(0)
        pre, op, config = self._operator()
        x = pad_last_dims(x, pre)
        # The parameters go in as they are: the engine tells whether it needs a leaf's gradient
        # (see ``will_engine_execute``), and a view would add a node and an op per step.
        w, bias = self.weight, self.bias
        dtype = autocast_dtype(x)
        if dtype is not None:  # what autocast does to a stock conv: everything in its dtype
            x, w = x.to(dtype), w.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        return fn_apply(_ConvFn, x, w, bias, op, config)


class AdjointConv1d(_AdjointConvMixin, nn.Conv1d):
    pass


class AdjointConv2d(_AdjointConvMixin, nn.Conv2d):
    pass


# ---------------------------------------------------------------------- locally linear maps
@dual
class _ReLUFn(torch.autograd.Function):
    """ReLU whose backward multiplies by a *constant* 0/1 mask: no edge back to ``x``, so
    ``φ'' = 0`` is explicit and a logit saliency sends nothing into the primal graph."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):  # type: ignore[override]
        return torch.relu(x)

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[override]
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (out,) = ctx.saved_tensors
        # The fused stock kernel on a *detached* output: differentiable in ``grad`` (by itself),
        # with no edge back to the pre-activations, and it saves nothing new (``out`` is
        # already saved by the forward). Outside a create-graph backward nothing records an
        # edge, so the detach is skipped (the plain step runs stock's ops, no more).
        return relu_backward(grad, out.detach() if torch.is_grad_enabled() else out)


class _ReLUInplaceFn(torch.autograd.Function):
    """``nn.ReLU(inplace=True)``: overwrites its input, as stock does; backward as
    :class:`_ReLUFn` (a constant mask from the output)."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        x.relu_()
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        return x

    backward = _ReLUFn.backward


@dual
class _LeakyReLUFn(torch.autograd.Function):
    """LeakyReLU by the stock kernel; its backward is the stock fused backward on a *detached*
    saved tensor: a constant slope mask, no edge back to the pre-activations (``φ'' = 0``).
    With a slope ``>= 0`` the output is saved (its sign is the input's), else the input."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, slope):  # type: ignore[override]
        return F.leaky_relu(x, slope)

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[override]
        x, slope = inputs
        ctx.slope, ctx.saved_is_output = slope, slope >= 0
        ctx.save_for_backward(output if slope >= 0 else x)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (saved,) = ctx.saved_tensors
        if torch.is_grad_enabled():
            saved = saved.detach()
        return leaky_relu_backward(grad, saved, ctx.slope, ctx.saved_is_output), None


class _LeakyReLUInplaceFn(torch.autograd.Function):
    """``nn.LeakyReLU(negative_slope >= 0, inplace=True)``: overwrites its input, as stock; the
    sign of the output is that of the input, so the mask is read from the overwritten tensor."""

    @staticmethod
    def forward(ctx, x, slope):  # type: ignore[override]
        F.leaky_relu_(x, slope)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        ctx.slope = slope
        return x

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (out,) = ctx.saved_tensors
        if torch.is_grad_enabled():
            out = out.detach()
        return leaky_relu_backward(grad, out, ctx.slope, True), None


class AdjointReLU(AdjointModule, nn.ReLU):
    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        if not adjoint_path():
            return super().forward(x)
        return _ReLUInplaceFn.apply(x) if self.inplace else fn_apply(_ReLUFn, x)


class AdjointLeakyReLU(AdjointModule, nn.LeakyReLU):
    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        if not adjoint_path():
            return super().forward(x)
        slope = self.negative_slope
        if self.inplace:
            if slope < 0:  # the output's sign no longer tells the branch: stock autograd
                return F.leaky_relu(x, slope, inplace=True)
            return _LeakyReLUInplaceFn.apply(x, slope)
        return fn_apply(_LeakyReLUFn, x, slope)
