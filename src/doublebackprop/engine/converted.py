"""The converted modules behind :func:`doublebackprop.engine.adjoint`: forward by the stock kernels
(bit-identical outputs), backward written with ordinary differentiable ops built from ``K^T`` and
``K^□`` (see :mod:`doublebackprop.engine.adjoint` for why)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from doublebackprop.engine._torch_compat import (
    batch_norm_backward,
    batch_norm_forward,
    check_batch_norm_input,
    convolution_backward,
    relu_backward,
    will_engine_execute,
)
from doublebackprop.engine.operators import (
    adaptive_avg_map,
    avg_pool_map,
    conv_operator,
    conv_padding,
    pad_last_dims,
)

__all__ = ["AdjointModule"]

Tensor = torch.Tensor


class AdjointModule:
    """Marker base of converted modules."""


def _batched(x: Tensor, nd: int) -> bool:
    """Whether ``x`` has a batch dimension for an ``nd``-D layer (stock layers accept
    unbatched ``(C, *spatial)`` inputs too; the converted ones add and drop the batch dim)."""
    return x.dim() != nd + 1


def _unbatch(out: Tensor | tuple[Tensor, Tensor]) -> Tensor | tuple[Tensor, Tensor]:
    if isinstance(out, tuple):
        return out[0].squeeze(0), out[1].squeeze(0)
    return out.squeeze(0)


# ----------------------------------------------------------------------------- convolutions
class _ConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, op, config):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.op, ctx.config = op, config
        ctx.has_bias = bias is not None
        return op.apply_biased(weight, x, bias)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        nodes = [n for n, _ in ctx.next_functions]
        mask = [
            will_engine_execute(nodes[0]),
            will_engine_execute(nodes[1]),
            ctx.has_bias and will_engine_execute(nodes[2]),
        ]
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
    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        nd = len(self.kernel_size)
        if not _batched(x, nd):
            return self.forward(x.unsqueeze(0)).squeeze(0)
        pre, sym = conv_padding(self.padding, self.kernel_size, self.dilation)
        op = conv_operator(nd, self.stride, sym, self.dilation, self.groups)
        x = pad_last_dims(x, pre)
        # A view makes the weight a non-leaf input, so the engine can tell whether it needs it.
        w = self.weight.view_as(self.weight)
        config = (list(self.stride), list(sym), list(self.dilation), self.groups)
        return _ConvFn.apply(x, w, self.bias, op, config)


class AdjointConv1d(_AdjointConvMixin, nn.Conv1d):
    pass


class AdjointConv2d(_AdjointConvMixin, nn.Conv2d):
    pass


# ---------------------------------------------------------------------- locally linear maps
class _ReLUFn(torch.autograd.Function):
    """ReLU whose backward multiplies by a *constant* 0/1 mask: no edge back to ``x``, so
    ``φ'' = 0`` is explicit and a logit saliency sends nothing into the primal graph."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        out = torch.relu(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (out,) = ctx.saved_tensors
        if not torch.is_grad_enabled():
            return relu_backward(grad, out)  # fused, as stock
        return grad * (out > 0)  # a bool mask: a quarter of the memory of a float one


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


class _LeakyReLUInplaceFn(torch.autograd.Function):
    """``nn.LeakyReLU(negative_slope >= 0, inplace=True)``: the sign of the output is that of
    the input, so the constant slope mask can be read from the overwritten tensor."""

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
        return torch.where(out > 0, grad, grad * ctx.slope), None


class AdjointReLU(AdjointModule, nn.ReLU):
    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return _ReLUInplaceFn.apply(x) if self.inplace else _ReLUFn.apply(x)


class AdjointLeakyReLU(AdjointModule, nn.LeakyReLU):
    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        slope = self.negative_slope
        if self.inplace:
            if slope < 0:  # the output's sign no longer tells the branch: stock autograd
                return F.leaky_relu(x, slope, inplace=True)
            return _LeakyReLUInplaceFn.apply(x, slope)
        return x * ((x > 0).to(x.dtype) * (1.0 - slope) + slope)


class _AdjointMaxPoolMixin(AdjointModule):
    _pool = staticmethod(F.max_pool1d)
    _nd = 1

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:  # type: ignore[override]
        if not _batched(x, self._nd):
            return _unbatch(self.forward(x.unsqueeze(0)))
        with torch.no_grad():
            out, idx = self._pool(
                x,
                self.kernel_size,
                self.stride,
                self.padding,
                self.dilation,
                ceil_mode=self.ceil_mode,
                return_indices=True,
            )
        # Gather with constant indices: linear in x, backward independent of x.
        flat = x.flatten(2).gather(2, idx.flatten(2))
        if self.return_indices:
            return flat.view_as(out), idx
        return flat.view_as(out)


class AdjointMaxPool1d(_AdjointMaxPoolMixin, nn.MaxPool1d):
    _pool = staticmethod(F.max_pool1d)


class AdjointMaxPool2d(_AdjointMaxPoolMixin, nn.MaxPool2d):
    _pool = staticmethod(F.max_pool2d)
    _nd = 2


class _LinearMapFn(torch.autograd.Function):
    """A parameter-free linear map whose backward is its adjoint applied to the gradient only."""

    @staticmethod
    def forward(ctx, x, fn, adjoint):  # type: ignore[override]
        ctx.shape, ctx.adjoint = x.shape, adjoint
        return fn(x)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return ctx.adjoint(grad, ctx.shape), None, None


class _AdjointAvgPoolMixin(AdjointModule):
    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        nd = 1 if isinstance(self, nn.AvgPool1d) else 2
        if not _batched(x, nd):
            return self.forward(x.unsqueeze(0)).squeeze(0)
        # K^T is applied to the gradient alone (no edge back to the primal input).
        lin = avg_pool_map(self, nd)
        return _LinearMapFn.apply(x, lin.apply, lin.adjoint)


class AdjointAvgPool1d(_AdjointAvgPoolMixin, nn.AvgPool1d):
    pass


class AdjointAvgPool2d(_AdjointAvgPoolMixin, nn.AvgPool2d):
    pass


class _AdjointAdaptiveAvgMixin(AdjointModule):
    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        nd = 1 if isinstance(self, nn.AdaptiveAvgPool1d) else 2
        if not _batched(x, nd):
            return self.forward(x.unsqueeze(0)).squeeze(0)
        size = self.output_size
        if size == 1 or size == (1,) * nd:  # global average: mean's backward is an expand
            return x.mean(dim=tuple(range(2, 2 + nd)), keepdim=True)
        lin = adaptive_avg_map(size, nd)
        return _LinearMapFn.apply(x, lin.apply, lin.adjoint)


class AdjointAdaptiveAvgPool1d(_AdjointAdaptiveAvgMixin, nn.AdaptiveAvgPool1d):
    pass


class AdjointAdaptiveAvgPool2d(_AdjointAdaptiveAvgMixin, nn.AdaptiveAvgPool2d):
    pass


# -------------------------------------------------------------------------------- BatchNorm
def _channel_stats(x: Tensor, eps: float) -> tuple[list[int], Tensor, Tensor]:
    """Reduction dims and per-channel ``μ``, ``1/σ`` (keepdim) of a batch."""
    dims = [0, *range(2, x.dim())]
    mean = x.mean(dims, keepdim=True)
    centred = x - mean
    var = (centred * centred).mean(dims, keepdim=True)  # much faster than x.var on CPU
    return dims, mean, torch.rsqrt(var + eps)


class _BatchNormTrainBackward(torch.autograd.Function):
    """Train-mode BatchNorm backward ``(g, x, γ) ↦ (∂x, ∂γ, ∂β)`` with its own analytic backward.

    With ``x̂ = (x-μ)/σ``, ``a = γ/σ`` and means over batch and positions per channel:
    ``∂x = a·(g - ḡ - x̂·mean(g·x̂))``, ``∂γ = Σ g·x̂``, ``∂β = Σ g``. Differentiating it (the
    exact second-order terms of batch statistics) with cotangents ``u, c_γ, c_β``:

    * w.r.t. ``g``: ``a·(u - ū - x̂·mean(u·x̂)) + c_γ·x̂ + c_β``;
    * w.r.t. ``γ``: ``S/σ`` with ``S = Σ u·(g - ḡ - x̂·mean(g·x̂))``;
    * w.r.t. ``x``: ``(w - w̄ - x̂·mean(w·x̂))/σ - a·S·x̂/(Nσ)`` with
      ``w = -a·mean(g·x̂)·u + (c_γ - a·mean(u·x̂))·g``.

    Written out, it needs a third of the elementwise work autograd spends on the composite.
    """

    @staticmethod
    def forward(ctx, grad, x, weight, eps):  # type: ignore[override]
        dims, mean, inv_std = _channel_stats(x, eps)
        xhat = (x - mean) * inv_std
        scale = inv_std if weight is None else weight.view_as(inv_std) * inv_std
        g_mean = grad.mean(dims, keepdim=True)
        gx_mean = (grad * xhat).mean(dims, keepdim=True)
        gx = scale * (grad - g_mean - xhat * gx_mean)
        n = grad.numel() // grad.shape[1]
        ctx.save_for_backward(grad, x, weight, mean, inv_std)
        ctx.dims = dims
        return gx, (gx_mean * n).flatten(), (g_mean * n).flatten()

    @staticmethod
    def backward(ctx, u, c_gamma, c_beta):  # type: ignore[override]
        grad, x, weight, mean, inv_std = ctx.saved_tensors
        dims = ctx.dims
        n = grad.numel() // grad.shape[1]
        xhat = (x - mean) * inv_std
        a = inv_std if weight is None else weight.view_as(inv_std) * inv_std
        if u is None:
            u = torch.zeros_like(grad)
        cg = torch.zeros_like(inv_std) if c_gamma is None else c_gamma.view_as(inv_std)
        cb = torch.zeros_like(inv_std) if c_beta is None else c_beta.view_as(inv_std)
        u_mean = u.mean(dims, keepdim=True)
        ux_mean = (u * xhat).mean(dims, keepdim=True)
        g_mean = grad.mean(dims, keepdim=True)
        gx_mean = (grad * xhat).mean(dims, keepdim=True)
        ug_mean = (u * grad).mean(dims, keepdim=True)
        s = n * (ug_mean - u_mean * g_mean - gx_mean * ux_mean)

        d_grad = d_x = d_weight = None
        if ctx.needs_input_grad[0]:
            d_grad = a * (u - u_mean - xhat * ux_mean) + cg * xhat + cb
        if ctx.needs_input_grad[1]:
            w = (-a * gx_mean) * u + (cg - a * ux_mean) * grad
            w_mean = w.mean(dims, keepdim=True)
            wx_mean = (w * xhat).mean(dims, keepdim=True)
            d_x = inv_std * (w - w_mean - xhat * wx_mean) - (a * s * inv_std / n) * xhat
        if weight is not None and ctx.needs_input_grad[2]:
            d_weight = (s * inv_std).flatten()
        return d_grad, d_x, d_weight, None


class _BatchNormFn(torch.autograd.Function):
    """``F.batch_norm`` forward (bit-identical); a backward whose derivatives are exact.

    Train mode (batch statistics) goes through :class:`_BatchNormTrainBackward`; eval mode is a
    constant affine map, ``∂x = g·γ/√(var+ε)``, with no edge back to ``x``.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, batch_stats, momentum, eps):  # type: ignore[override]
        # What F.batch_norm runs, keeping the saved statistics for a fused backward.
        out, save_mean, save_invstd, reserve, impl = batch_norm_forward(
            x, weight, bias, running_mean, running_var, batch_stats, momentum, eps
        )
        ctx.batch_stats, ctx.eps, ctx.impl = batch_stats, eps, impl
        if batch_stats:
            ctx.save_for_backward(x, weight, save_mean, save_invstd, reserve)
        else:
            ctx.save_for_backward(x, weight, running_mean.clone(), running_var.clone())
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        nodes = [n for n, _ in ctx.next_functions]
        needed = [will_engine_execute(node) for node in nodes[:3]]
        if ctx.batch_stats:
            x, weight, save_mean, save_invstd, reserve = ctx.saved_tensors
            if not torch.is_grad_enabled():  # not differentiated further: the fused kernel
                mask = [
                    needed[0],
                    weight is not None and needed[1],
                    ctx.needs_input_grad[2] and needed[2],
                ]
                gx, gw, gb = batch_norm_backward(
                    ctx.impl, x, grad, weight, save_mean, save_invstd, ctx.eps, mask, reserve
                )
                return gx, gw, gb, None, None, None, None, None
            gx, gw, gb = _BatchNormTrainBackward.apply(grad, x, weight, ctx.eps)
            return (
                gx if needed[0] else None,
                gw if weight is not None and needed[1] else None,
                gb if ctx.needs_input_grad[2] and needed[2] else None,
                None,
                None,
                None,
                None,
                None,
            )
        x, weight, rm, rv = ctx.saved_tensors
        shape = [1, -1] + [1] * (grad.dim() - 2)
        inv_std = torch.rsqrt(rv.view(shape) + ctx.eps)
        gx = gw = gb = None
        if needed[0]:
            gx = grad * (inv_std if weight is None else weight.view(shape) * inv_std)
        dims = [0, *range(2, grad.dim())]
        if weight is not None and needed[1]:
            gw = (grad * (x - rm.view(shape)) * inv_std).sum(dims)
        if ctx.needs_input_grad[2] and needed[2]:
            gb = grad.sum(dims)
        return gx, gw, gb, None, None, None, None, None


class _AdjointBatchNormMixin(AdjointModule):
    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        check_batch_norm_input(self, x)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        batch_stats = self.training or self.running_mean is None
        weight = self.weight.view_as(self.weight) if self.weight is not None else None
        bias = self.bias.view_as(self.bias) if self.bias is not None else None
        return _BatchNormFn.apply(
            x,
            weight,
            bias,
            self.running_mean if not self.training or self.track_running_stats else None,
            self.running_var if not self.training or self.track_running_stats else None,
            batch_stats,
            momentum,
            self.eps,
        )


class AdjointBatchNorm1d(_AdjointBatchNormMixin, nn.BatchNorm1d):
    pass


class AdjointBatchNorm2d(_AdjointBatchNormMixin, nn.BatchNorm2d):
    pass
