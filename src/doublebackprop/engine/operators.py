"""The thesis' coordinate-free layers: every bilinear layer ``K(θ, x)`` with its two adjoints.

For a bounded bilinear ``K: Θ × X → Z`` there are bilinear ``K^T`` (input adjoint) and ``K^□``
(parameter adjoint) with

    ⟨K(θ, x), y⟩ = ⟨x, K^T(θ, y)⟩ = ⟨θ, K^□(y, x)⟩.

Backprop through the layer is ``δ_in = K^T(θ, δ_out)`` and ``∇_θ = K^□(δ_out, x)``, and
differentiating a backward pass needs no new primitive: ``∇_θ⟨K^T(θ,y),v⟩ = K^□(y,v)`` and
``∇_y⟨K^T(θ,y),v⟩ = K(θ,v)``. ``K`` and ``K^T`` are ordinary *forward* torch ops
(convolution, transposed convolution, matmul, einsum), so differentiating an input-gradient pass
once never reaches a dedicated double-backward kernel; the convolution's ``K^□`` is computed by
``convolution_backward``, so differentiating it again (third order) does.

Linear maps without parameters (flatten, pooling, dropout with its mask) have ``K`` and ``K^T``
only. Activations carry ``φ``, ``φ'`` and ``φ''``; ``φ'' ≡ 0`` (ReLU, leaky ReLU) is what makes
a network *locally linear*.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BilinearOperator",
    "LinearMap",
    "Activation",
    "bilinear_operator",
    "linear_map",
    "activation",
    "locally_connected",
    "locally_connected_operator",
    "pad_last_dims",
    "same_padding",
    "stock_type",
]

Tensor = torch.Tensor


def same_padding(kernel_size: int, dilation: int) -> tuple[int, int]:
    """Left/right zero padding that keeps the length of a stride-1 convolution."""
    total = dilation * (kernel_size - 1)
    return total // 2, total - total // 2


def pad_last_dims(x: Tensor, pads: list[tuple[int, int]]) -> Tensor:
    """Zero-pad the trailing ``len(pads)`` dims with (left, right) pairs given first dim first."""
    flat: list[int] = []
    for left, right in reversed(pads):
        flat += [left, right]
    return F.pad(x, flat) if any(flat) else x


# ----------------------------------------------------------------------------- bilinear layers
@dataclass(frozen=True)
class BilinearOperator:
    """``K``, ``K^T`` and ``K^□`` of one layer, closed over its hyper-parameters.

    ``apply(θ, x)``, ``input_adjoint(θ, y, input_shape)`` and
    ``param_adjoint(y, x, weight_shape)``; the bias (if any) is *not* part of ``K``
    (``z = K(θ, x) + b``).
    """

    apply: Callable[[Tensor, Tensor], Tensor]
    input_adjoint: Callable[[Tensor, Tensor, Sequence[int]], Tensor]
    param_adjoint: Callable[[Tensor, Tensor, Sequence[int]], Tensor]
    #: ``K(θ, x) + b`` by the fused kernel the stock layer uses (bit-identical outputs)
    apply_biased: Callable[[Tensor, Tensor, Tensor | None], Tensor] | None = None


def _linear_op() -> BilinearOperator:
    def apply(w: Tensor, x: Tensor) -> Tensor:
        return x @ w.t()

    def input_adjoint(w: Tensor, y: Tensor, input_shape: Sequence[int]) -> Tensor:
        return y @ w

    def param_adjoint(y: Tensor, x: Tensor, weight_shape: Sequence[int]) -> Tensor:
        return y.reshape(-1, y.shape[-1]).t() @ x.reshape(-1, x.shape[-1])

    return BilinearOperator(apply, input_adjoint, param_adjoint)


_CONV = {1: F.conv1d, 2: F.conv2d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d}
_CONV_W = {1: torch.nn.grad.conv1d_weight, 2: torch.nn.grad.conv2d_weight}


def conv_padding(
    padding: str | Sequence[int], kernel: Sequence[int], dilation: Sequence[int]
) -> tuple[list[tuple[int, int]], tuple[int, ...]]:
    """Split a conv's ``padding`` into an explicit (possibly asymmetric) pre-pad and a
    symmetric pad the conv itself applies. Returns ``(pre_pads, symmetric)``."""
    nd = len(kernel)
    if padding == "valid":
        return [(0, 0)] * nd, (0,) * nd
    if padding == "same":
        pads = [same_padding(k, d) for k, d in zip(kernel, dilation)]
        if all(left == right for left, right in pads):
            return [(0, 0)] * nd, tuple(left for left, _ in pads)
        return pads, (0,) * nd
    return [(0, 0)] * nd, tuple(int(p) for p in padding)  # type: ignore[union-attr]


def conv_operator(
    nd: int, stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int], groups: int
) -> BilinearOperator:
    """Convolution with *symmetric* integer padding (pre-pad asymmetric cases with F.pad)."""
    stride, padding, dilation = tuple(stride), tuple(padding), tuple(dilation)
    conv, conv_t, conv_w = _CONV[nd], _CONV_T[nd], _CONV_W[nd]

    def apply(w: Tensor, x: Tensor) -> Tensor:
        return conv(x, w, None, stride, padding, dilation, groups)

    def input_adjoint(w: Tensor, y: Tensor, input_shape: Sequence[int]) -> Tensor:
        spatial = input_shape[-nd:]
        k = w.shape[-nd:]
        out_pad = tuple(
            spatial[i]
            - ((y.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (k[i] - 1) + 1)
            for i in range(nd)
        )
        return conv_t(y, w, None, stride, padding, out_pad, groups, dilation)

    def param_adjoint(y: Tensor, x: Tensor, weight_shape: Sequence[int]) -> Tensor:
        return conv_w(x, list(weight_shape), y, stride, padding, dilation, groups)

    def apply_biased(w: Tensor, x: Tensor, b: Tensor | None) -> Tensor:
        return conv(x, w, b, stride, padding, dilation, groups)

    return BilinearOperator(apply, input_adjoint, param_adjoint, apply_biased)


def locally_connected(w: Tensor, x: Tensor, padding: int, stride: int) -> Tensor:
    """``K(θ, x)`` of a locally connected layer (:class:`~doublebackprop.LocallyConnected1d`); ``w`` is ``(L_out, C_out, C_in, k)``.

    Parameters
    ----------
    w : Tensor
        ``(L_out, C_out, C_in, k)`` unshared weights.
    x : Tensor
        ``(N, C_in, L)``.
    padding, stride : int
    """
    k = w.shape[-1]
    patches = F.pad(x, (padding, padding)).unfold(2, k, stride)  # (N, C_in, L_out, k)
    if w.shape[1] == 1 and w.shape[2] == 1:  # IsotopeNet's case: avoid einsum overhead
        return (patches[:, 0] * w[:, 0, 0]).sum(-1).unsqueeze(1)
    return torch.einsum("nclk,lock->nol", patches, w)


def locally_connected_operator(padding: int, stride: int) -> BilinearOperator:
    """``K``, ``K^T``, ``K^□`` of a locally connected layer with zero ``padding`` and ``stride``."""

    def apply(w: Tensor, x: Tensor) -> Tensor:
        return locally_connected(w, x, padding, stride)

    def input_adjoint(w: Tensor, y: Tensor, input_shape: Sequence[int]) -> Tensor:
        length = input_shape[-1]
        c_in, k = w.shape[2], w.shape[3]
        g_patches = torch.einsum("nol,lock->nckl", y, w)  # (N, C_in, k, L_out)
        folded = F.fold(
            g_patches.reshape(y.shape[0], c_in * k, -1),
            output_size=(1, length + 2 * padding),
            kernel_size=(1, k),
            stride=(1, stride),
        )  # (N, C_in, 1, L_pad)
        return folded[:, :, 0, padding : padding + length]

    def param_adjoint(y: Tensor, x: Tensor, weight_shape: Sequence[int]) -> Tensor:
        patches = F.pad(x, (padding, padding)).unfold(2, weight_shape[-1], stride)
        return torch.einsum("nol,nclk->lock", y, patches)

    return BilinearOperator(apply, input_adjoint, param_adjoint)


def stock_type(module: nn.Module) -> type:
    """The ``torch.nn`` class of a module, also for one converted by
    :func:`doublebackprop.engine.adjoint` (whose class is a subclass of its stock class)."""
    t = type(module)
    if t.__module__.startswith("doublebackprop.engine.converted"):
        for base in t.__mro__[1:]:
            if base.__module__.startswith("torch.nn"):
                return base
    return t


def bilinear_operator(module: nn.Module) -> BilinearOperator | None:
    """The bilinear operator of a parametrised layer, or ``None`` if unsupported.

    Supported: ``nn.Linear``, ``nn.Conv1d``/``nn.Conv2d`` (zero padding incl. ``"same"``, any
    stride, dilation, groups) and any layer class that defines a ``bilinear_operator()`` method
    (:class:`~doublebackprop.LocallyConnected1d`). Asymmetric ``"same"`` padding
    is not part of ``K``: pre-pad with :func:`conv_padding`'s first result.
    """
    t = stock_type(module)
    if t is nn.Linear:
        return _linear_op()
    if t in (nn.Conv1d, nn.Conv2d) and module.padding_mode == "zeros":
        nd = 1 if t is nn.Conv1d else 2
        _, sym = conv_padding(module.padding, module.kernel_size, module.dilation)
        return conv_operator(nd, module.stride, sym, module.dilation, module.groups)
    # A layer class may declare its own operator (the project's LocallyConnected1d does); the
    # method must be defined on the class itself, so a subclass with another forward is not
    # silently treated as the same operator.
    own = type(module).__dict__.get("bilinear_operator")
    if own is not None:
        return own(module)
    return None


# ------------------------------------------------------------------- linear non-parametric maps
@dataclass(frozen=True)
class LinearMap:
    """A parameter-free linear map ``K(x)`` with its adjoint ``K^T(y, input_shape)``."""

    apply: Callable[[Tensor], Tensor]
    adjoint: Callable[[Tensor, Sequence[int]], Tensor]


def _flatten_map(start: int, end: int) -> LinearMap:
    return LinearMap(lambda x: x.flatten(start, end), lambda y, shape: y.reshape(shape))


def _linear_vjp(fn: Callable[[Tensor], Tensor], y: Tensor, shape: Sequence[int]) -> Tensor:
    """``K^T y`` of a linear ``fn`` by one backward of ``fn`` at zero, differentiable in ``y``.

    The graph is kept whenever grad mode is on (inside a ``create_graph`` backward it is).
    ``y.requires_grad`` is not a usable signal: inside a batched (vmapped) backward the
    gradient's wrapper reads ``False`` although it carries a graph.
    """
    keep = torch.is_grad_enabled()
    with torch.enable_grad():
        # A zero scalar expanded to the input's shape: the pool's backward saves its input,
        # and this one costs no memory (a full zeros tensor would be saved in the graph).
        base = torch.zeros((), dtype=y.dtype, device=y.device, requires_grad=True)
        probe = base.expand(shape)
        (g,) = torch.autograd.grad(fn(probe), probe, y, create_graph=keep)
    return g


def avg_pool_map(module: nn.Module, nd: int) -> LinearMap:
    """``K``/``K^T`` of an ``AvgPool1d``/``AvgPool2d`` (``nd``) with the module's settings."""
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d}[nd]
    kw = {
        "kernel_size": module.kernel_size,
        "stride": module.stride,
        "padding": module.padding,
        "ceil_mode": module.ceil_mode,
        "count_include_pad": module.count_include_pad,
    }
    if nd == 2:
        kw["divisor_override"] = module.divisor_override

    def adjoint(y: Tensor, shape: Sequence[int]) -> Tensor:
        # ⟨pool(x), y⟩ is linear in x: its gradient is K^T y (one ordinary backward of a
        # first-order op, differentiable in y).
        return _linear_vjp(lambda probe: pool(probe, **kw), y, shape)

    return LinearMap(lambda x: pool(x, **kw), adjoint)


def adaptive_avg_map(output_size: int | Sequence[int], nd: int) -> LinearMap:
    """``K``/``K^T`` of adaptive average pooling to ``output_size``."""
    pool = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d}[nd]

    def adjoint(y: Tensor, shape: Sequence[int]) -> Tensor:
        return _linear_vjp(lambda probe: pool(probe, output_size), y, shape)

    return LinearMap(lambda x: pool(x, output_size), adjoint)


def linear_map(module: nn.Module) -> LinearMap | None:
    """The linear map of a parameter-free layer (``Flatten``, average pools, ``Identity``,
    ``Dropout`` in eval mode); max-pooling is linear *given its argmax indices* and is handled by
    the engines that know the forward pass."""
    t = stock_type(module)
    if t is nn.Flatten:
        return _flatten_map(module.start_dim, module.end_dim)
    if t is nn.Identity or (t in (nn.Dropout, nn.Dropout1d, nn.Dropout2d) and not module.training):
        return LinearMap(lambda x: x, lambda y, shape: y)
    if t in (nn.AvgPool1d, nn.AvgPool2d):
        return avg_pool_map(module, 1 if t is nn.AvgPool1d else 2)
    if t in (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d):
        return adaptive_avg_map(module.output_size, 1 if t is nn.AdaptiveAvgPool1d else 2)
    return None


# -------------------------------------------------------------------------------- activations
@dataclass(frozen=True)
class Activation:
    """Elementwise ``φ`` with ``φ'`` and ``φ''``; ``locally_linear`` means ``φ'' ≡ 0``."""

    name: str
    phi: Callable[[Tensor], Tensor]
    dphi: Callable[[Tensor], Tensor]
    ddphi: Callable[[Tensor], Tensor] | None  # None ⇔ identically zero

    @property
    def locally_linear(self) -> bool:
        return self.ddphi is None


def _relu() -> Activation:
    return Activation("ReLU", torch.relu, lambda z: (z > 0).to(z.dtype), None)


def _leaky(slope: float) -> Activation:
    return Activation(
        "LeakyReLU",
        lambda z: F.leaky_relu(z, slope),
        # slope as a tensor of z's dtype: a Python float here would pass through float32
        lambda z: torch.where(z > 0, z.new_ones(()), z.new_full((), slope)),
        None,
    )


def _softplus(beta: float, threshold: float) -> Activation:
    def dphi(z: Tensor) -> Tensor:
        return torch.where(z * beta > threshold, 1.0, torch.sigmoid(beta * z)).to(z.dtype)

    def ddphi(z: Tensor) -> Tensor:
        s = torch.sigmoid(beta * z)
        return torch.where(z * beta > threshold, 0.0, beta * s * (1 - s)).to(z.dtype)

    return Activation("Softplus", lambda z: F.softplus(z, beta, threshold), dphi, ddphi)


def _tanh() -> Activation:
    def ddphi(z: Tensor) -> Tensor:
        t = torch.tanh(z)
        return -2 * t * (1 - t * t)

    return Activation("Tanh", torch.tanh, lambda z: 1 - torch.tanh(z) ** 2, ddphi)


def _sigmoid() -> Activation:
    def dphi(z: Tensor) -> Tensor:
        s = torch.sigmoid(z)
        return s * (1 - s)

    def ddphi(z: Tensor) -> Tensor:
        s = torch.sigmoid(z)
        return s * (1 - s) * (1 - 2 * s)

    return Activation("Sigmoid", torch.sigmoid, dphi, ddphi)


def _elu(alpha: float) -> Activation:
    def dphi(z: Tensor) -> Tensor:
        return torch.where(z > 0, torch.ones_like(z), alpha * torch.exp(z))

    def ddphi(z: Tensor) -> Tensor:
        return torch.where(z > 0, torch.zeros_like(z), alpha * torch.exp(z))

    return Activation("ELU", lambda z: F.elu(z, alpha), dphi, ddphi)


def _gelu() -> Activation:
    inv_sqrt2pi = 1.0 / math.sqrt(2 * math.pi)

    def pdf(z: Tensor) -> Tensor:
        return torch.exp(-0.5 * z * z) * inv_sqrt2pi

    def cdf(z: Tensor) -> Tensor:
        return 0.5 * (1 + torch.erf(z / math.sqrt(2.0)))

    return Activation("GELU", F.gelu, lambda z: cdf(z) + z * pdf(z), lambda z: pdf(z) * (2 - z * z))


def activation(module: nn.Module) -> Activation | None:
    """``φ, φ', φ''`` of an activation module, or ``None`` if unsupported."""
    t = stock_type(module)
    if t is nn.ReLU:
        return _relu()
    if t is nn.LeakyReLU:
        return _leaky(module.negative_slope)
    if t is nn.Softplus:
        return _softplus(module.beta, module.threshold)
    if t is nn.Tanh:
        return _tanh()
    if t is nn.Sigmoid:
        return _sigmoid()
    if t is nn.ELU:
        return _elu(module.alpha)
    if t is nn.GELU and module.approximate == "none":
        return _gelu()
    return None
