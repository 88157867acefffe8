"""Converted BatchNorm (see :mod:`doublebackprop.engine.converted`): forward by ``F.batch_norm``'s
kernel (bit-identical), a backward whose derivatives are exact, with the second-order terms of
train-mode batch statistics written out."""

from __future__ import annotations

import torch
from torch import nn

from doublebackprop.engine._torch_compat import (
    batch_norm_backward,
    batch_norm_forward,
    check_batch_norm_input,
    legacy_batched,
)
from doublebackprop.engine.converted import (
    AdjointModule,
    adjoint_path,
    dual,
    engine_needs,
    fn_apply,
)

__all__ = ["AdjointBatchNorm1d", "AdjointBatchNorm2d"]

Tensor = torch.Tensor


# -------------------------------------------------------------------------------- BatchNorm
@dual
class _BatchNormTrainBackward(torch.autograd.Function):
    """Train-mode BatchNorm backward ``(g, x, γ) ↦ (∂x, ∂γ, ∂β)`` with its own analytic backward.

    With ``x̂ = (x-μ)/σ``, ``a = γ/σ`` and means over batch and positions per channel:
    ``∂x = a·(g - ḡ - x̂·mean(g·x̂))``, ``∂γ = Σ g·x̂``, ``∂β = Σ g``. Differentiating it (the
    exact second-order terms of batch statistics) with cotangents ``u, c_γ, c_β``:

    * w.r.t. ``g``: ``a·(u - ū - x̂·mean(u·x̂)) + c_γ·x̂ + c_β``;
    * w.r.t. ``γ``: ``S/σ`` with ``S = Σ u·(g - ḡ - x̂·mean(g·x̂))``;
    * w.r.t. ``x``: ``(w - w̄ - x̂·mean(w·x̂))/σ - a·S·x̂/(Nσ)`` with
      ``w = -a·mean(g·x̂)·u + (c_γ - a·mean(u·x̂))·g``.

    The forward is stock's fused backward kernel on the statistics the forward pass saved (no
    second pass over the batch); ``∂γ`` and ``∂β`` come out of the same kernel and give the
    means ``mean(g·x̂)``, ``ḡ`` the backward needs. The backward gathers every per-channel
    factor first (``w̄`` and ``mean(w·x̂)`` are linear in known means), so each result is one or
    two fused multiply-adds over the batch.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(grad, x, weight, save_mean, save_invstd, reserve, impl, eps):  # type: ignore[override]
        gx, gw, gb = batch_norm_backward(
            impl, x, grad, weight, save_mean, save_invstd, eps, [True, True, True], reserve
        )
        return gx, gw, gb

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[override]
        grad, x, weight, save_mean, save_invstd, _, _, _ = inputs
        _, gw, gb = output
        ctx.save_for_backward(grad, x, weight, save_mean, save_invstd, gw, gb)

    @staticmethod
    def backward(ctx, u, c_gamma, c_beta):  # type: ignore[override]
        grad, x, weight, save_mean, save_invstd, gx_sum, g_sum = ctx.saved_tensors
        shape = [1, -1] + [1] * (x.dim() - 2)
        dims = [0, *range(2, x.dim())]
        n = x.numel() // x.shape[1]
        inv_std = save_invstd.view(shape)
        xhat = (x - save_mean.view(shape)) * inv_std
        a = inv_std if weight is None else weight.view(shape) * inv_std
        g_mean, gx_mean = g_sum.view(shape) / n, gx_sum.view(shape) / n
        cg = 0.0 if c_gamma is None else c_gamma.view(shape)
        cb = 0.0 if c_beta is None else c_beta.view(shape)
        if u is None:
            u = torch.zeros_like(grad)
        u_mean = u.mean(dims, keepdim=True)
        ux_mean = (u * xhat).mean(dims, keepdim=True)
        ug_mean = (u * grad).mean(dims, keepdim=True)
        s = n * (ug_mean - u_mean * g_mean - gx_mean * ux_mean)
        c_x = cg - a * ux_mean  # the x̂ factor of ∂/∂g, and w's factor of g

        d_grad = d_x = d_weight = None
        if ctx.needs_input_grad[0]:
            d_grad = torch.addcmul(torch.addcmul(cb - a * u_mean, a, u), c_x, xhat)
        if ctx.needs_input_grad[1]:
            c_u = -a * gx_mean  # w = c_u·u + c_x·g
            w_mean = c_u * u_mean + c_x * g_mean
            wx_mean = c_u * ux_mean + c_x * gx_mean
            d_x = torch.addcmul(
                torch.addcmul(-inv_std * w_mean, inv_std * c_u, u), inv_std * c_x, grad
            )
            d_x = torch.addcmul(d_x, -inv_std * (wx_mean + a * s / n), xhat)
        if weight is not None and ctx.needs_input_grad[2]:
            d_weight = (s * inv_std).flatten()
        return d_grad, d_x, d_weight, None, None, None, None, None


@dual
class _BatchNormFn(torch.autograd.Function):
    """``F.batch_norm`` forward (bit-identical); a backward whose derivatives are exact.

    Train mode (batch statistics) goes through :class:`_BatchNormTrainBackward`; eval mode is a
    constant affine map, ``∂x = g·γ/√(var+ε)``, with no edge back to ``x``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias, running_mean, running_var, batch_stats, momentum, eps):  # type: ignore[override]
        # What F.batch_norm runs; the saved statistics are extra outputs for a fused backward
        # (setup_context saves them: the form the torch.func transforms need).
        return batch_norm_forward(
            x, weight, bias, running_mean, running_var, batch_stats, momentum, eps
        )

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[override]
        x, weight, _, running_mean, running_var, batch_stats, _, eps = inputs
        _, save_mean, save_invstd, reserve, impl = output
        ctx.mark_non_differentiable(save_mean, save_invstd, reserve)
        # no zeros for the statistics' (unused) gradients: three tensors per call saved
        ctx.set_materialize_grads(False)
        ctx.batch_stats, ctx.eps, ctx.impl = batch_stats, eps, impl
        if batch_stats:
            ctx.save_for_backward(x, weight, save_mean, save_invstd, reserve)
        else:
            ctx.save_for_backward(x, weight, running_mean.clone(), running_var.clone())

    @staticmethod
    def backward(ctx, grad, *_):  # type: ignore[override]
        if grad is None:  # the output took no part in what is differentiated
            return None, None, None, None, None, None, None, None
        needed = engine_needs(ctx, 3)
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
            if legacy_batched(grad):
                # An autograd.Function applied under the legacy vmap of a batched backward
                # would keep batched tensors for its own backward (silently wrong): refuse,
                # and the caller runs one backward per row (``vjp_rows``).
                raise RuntimeError(
                    "BatchNorm's create-graph backward has no batching rule for batched "
                    "gradients (is_grads_batched=True): run one backward per row"
                )
            gx, gw, gb = fn_apply(
                _BatchNormTrainBackward,
                grad,
                x,
                weight,
                save_mean,
                save_invstd,
                reserve,
                ctx.impl,
                ctx.eps,
            )
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
        if not adjoint_path():
            return super().forward(x)  # type: ignore[misc]
        check_batch_norm_input(self, x)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        batch_stats = self.training or self.running_mean is None
        # The parameters go in as they are (no view: see the converted convolutions).
        return fn_apply(
            _BatchNormFn,
            x,
            self.weight,
            self.bias,
            self.running_mean if not self.training or self.track_running_stats else None,
            self.running_var if not self.training or self.track_running_stats else None,
            batch_stats,
            momentum,
            self.eps,
        )[0]


class AdjointBatchNorm1d(_AdjointBatchNormMixin, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` converted by :func:`doublebackprop.adjoint` (same forward, an exact
    backward built from ordinary ops).

    Parameters
    ----------
    num_features, eps, momentum, affine, track_running_stats, device, dtype
        As ``nn.BatchNorm1d``.
    """


class AdjointBatchNorm2d(_AdjointBatchNormMixin, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` converted by :func:`doublebackprop.adjoint` (see
    :class:`AdjointBatchNorm1d`).

    Parameters
    ----------
    num_features, eps, momentum, affine, track_running_stats, device, dtype
        As ``nn.BatchNorm2d``.
    """
