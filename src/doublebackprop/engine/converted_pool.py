"""Converted pooling modules (see :mod:`doublebackprop.engine.converted`): forward by the stock
kernels (bit-identical), backward a linear map of the gradient alone, with no edge back to the
pooled input (max pooling: constant argmax indices; average pooling: its adjoint)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from doublebackprop.engine._torch_compat import max_pool2d_backward
from doublebackprop.engine.converted import AdjointModule, _batched, adjoint_path, dual, fn_apply
from doublebackprop.engine.operators import adaptive_avg_map, avg_pool_map

__all__ = [
    "AdjointMaxPool1d",
    "AdjointMaxPool2d",
    "AdjointAvgPool1d",
    "AdjointAvgPool2d",
    "AdjointAdaptiveAvgPool1d",
    "AdjointAdaptiveAvgPool2d",
]

Tensor = torch.Tensor


def _unbatch(out: Tensor | tuple[Tensor, Tensor]) -> Tensor | tuple[Tensor, Tensor]:
    if isinstance(out, tuple):
        return out[0].squeeze(0), out[1].squeeze(0)
    return out.squeeze(0)


def _max_pool_backward(grad: Tensor, x: Tensor, idx: Tensor, config: tuple) -> Tensor:
    """Stock's fused max-pool backward (a scatter-add of ``grad`` at the argmax indices)."""
    nd, kernel, stride, padding, dilation, ceil_mode = config
    if nd == 1:  # what stock's 1-D pooling runs: the 2-D kernel on an inserted unit dim
        return max_pool2d_backward(
            grad.unsqueeze(-2),
            x.unsqueeze(-2),
            [1, *kernel],
            [1, *stride],
            [0, *padding],
            [1, *dilation],
            ceil_mode,
            idx.unsqueeze(-2),
        ).squeeze(-2)
    return max_pool2d_backward(grad, x, kernel, stride, padding, dilation, ceil_mode, idx)


@dual
class _MaxPoolFn(torch.autograd.Function):
    """Max pooling by the stock kernel, backward by stock's fused kernel on the *detached*
    input: a linear map of ``grad`` with constant argmax indices (its derivative is stock's
    gather at the same indices) and no edge back to the pooled input."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, pool, config):  # type: ignore[override]
        _, kernel, stride, padding, dilation, ceil_mode = config
        return pool(x, kernel, stride, padding, dilation, ceil_mode=ceil_mode, return_indices=True)

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[override]
        x, _, config = inputs
        idx = output[1]
        ctx.mark_non_differentiable(idx)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, idx)  # what stock saves
        ctx.config = config

    @staticmethod
    def backward(ctx, grad, _):  # type: ignore[override]
        x, idx = ctx.saved_tensors
        if grad is None:
            return None, None, None
        if torch.is_grad_enabled():
            x = x.detach()
        return _max_pool_backward(grad, x, idx, ctx.config), None, None


def _tuple(value: int | tuple[int, ...], nd: int) -> list[int]:
    return list(value) if isinstance(value, (tuple, list)) else [int(value)] * nd


class _AdjointMaxPoolMixin(AdjointModule):
    _pool = staticmethod(F.max_pool1d)
    _nd = 1

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:  # type: ignore[override]
        if not adjoint_path():
            return super().forward(x)  # type: ignore[misc]
        if not _batched(x, self._nd):
            return _unbatch(self.forward(x.unsqueeze(0)))
        nd = self._nd
        stride = self.kernel_size if self.stride is None else self.stride
        config = (
            nd,
            _tuple(self.kernel_size, nd),
            _tuple(stride, nd),
            _tuple(self.padding, nd),
            _tuple(self.dilation, nd),
            bool(self.ceil_mode),
        )
        out, idx = fn_apply(_MaxPoolFn, x, self._pool, config)
        return (out, idx) if self.return_indices else out


class AdjointMaxPool1d(_AdjointMaxPoolMixin, nn.MaxPool1d):
    """``nn.MaxPool1d`` converted by :func:`doublebackprop.adjoint` (same forward; a backward that
    is a linear map of the gradient alone).

    Parameters
    ----------
    *args, **kwargs
        As ``nn.MaxPool1d``.
    """

    _pool = staticmethod(F.max_pool1d)


class AdjointMaxPool2d(_AdjointMaxPoolMixin, nn.MaxPool2d):
    """``nn.MaxPool2d`` converted by :func:`doublebackprop.adjoint` (same forward; a backward that
    is a linear map of the gradient alone).

    Parameters
    ----------
    *args, **kwargs
        As ``nn.MaxPool2d``.
    """

    _pool = staticmethod(F.max_pool2d)
    _nd = 2


@dual
class _LinearMapFn(torch.autograd.Function):
    """A parameter-free linear map whose backward is its adjoint applied to the gradient only."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, fn, adjoint):  # type: ignore[override]
        return fn(x)

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[override]
        x, _, adjoint = inputs
        ctx.shape, ctx.adjoint = x.shape, adjoint

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return ctx.adjoint(grad, ctx.shape), None, None


class _AdjointAvgPoolMixin(AdjointModule):
    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        if not adjoint_path():
            return super().forward(x)  # type: ignore[misc]
        nd = 1 if isinstance(self, nn.AvgPool1d) else 2
        if not _batched(x, nd):
            return self.forward(x.unsqueeze(0)).squeeze(0)
        # K^T is applied to the gradient alone (no edge back to the primal input).
        lin = avg_pool_map(self, nd)
        return fn_apply(_LinearMapFn, x, lin.apply, lin.adjoint)


class AdjointAvgPool1d(_AdjointAvgPoolMixin, nn.AvgPool1d):
    """``nn.AvgPool1d`` converted by :func:`doublebackprop.adjoint` (same forward; a backward that
    is a linear map of the gradient alone).

    Parameters
    ----------
    *args, **kwargs
        As ``nn.AvgPool1d``.
    """


class AdjointAvgPool2d(_AdjointAvgPoolMixin, nn.AvgPool2d):
    """``nn.AvgPool2d`` converted by :func:`doublebackprop.adjoint` (same forward; a backward that
    is a linear map of the gradient alone).

    Parameters
    ----------
    *args, **kwargs
        As ``nn.AvgPool2d``.
    """


class _AdjointAdaptiveAvgMixin(AdjointModule):
    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        if not adjoint_path():
            return super().forward(x)  # type: ignore[misc]
        nd = 1 if isinstance(self, nn.AdaptiveAvgPool1d) else 2
        if not _batched(x, nd):
            return self.forward(x.unsqueeze(0)).squeeze(0)
        size = self.output_size
        if size == 1 or size == (1,) * nd:  # global average: mean's backward is an expand
            return x.mean(dim=tuple(range(2, 2 + nd)), keepdim=True)
        lin = adaptive_avg_map(size, nd)
        return fn_apply(_LinearMapFn, x, lin.apply, lin.adjoint)


class AdjointAdaptiveAvgPool1d(_AdjointAdaptiveAvgMixin, nn.AdaptiveAvgPool1d):
    """``nn.AdaptiveAvgPool1d`` converted by :func:`doublebackprop.adjoint` (same forward; a backward that
    is a linear map of the gradient alone).

    Parameters
    ----------
    *args, **kwargs
        As ``nn.AdaptiveAvgPool1d``.
    """


class AdjointAdaptiveAvgPool2d(_AdjointAdaptiveAvgMixin, nn.AdaptiveAvgPool2d):
    """``nn.AdaptiveAvgPool2d`` converted by :func:`doublebackprop.adjoint` (same forward; a backward that
    is a linear map of the gradient alone).

    Parameters
    ----------
    *args, **kwargs
        As ``nn.AdaptiveAvgPool2d``.
    """
