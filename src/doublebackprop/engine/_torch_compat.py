"""The private PyTorch API the engine relies on, in one place.

Each function wraps one private entry point so that a PyTorch upgrade that moves or changes it
breaks here, next to a test (``tests/engine/test_torch_compat.py``), and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

Tensor = torch.Tensor


def will_engine_execute(node: object, *, unknown: bool = True) -> bool:
    """Whether the running backward pass will use the gradient flowing into ``node``.

    Uses ``torch._C._will_engine_execute_node``. That call raises when it is asked outside a
    backward that knows its graph, and for a leaf's node that ``torch.autograd.grad`` captures
    (a leaf among its ``inputs``: needed), and it may be missing in other PyTorch releases. The
    fallback is ``unknown`` (default ``True``: the gradient is then computed even if nobody uses
    it, which costs time but is never wrong). A leaf that ``autograd.grad`` does not capture
    reads ``False``, so parameters can be passed to an autograd.Function as they are (no view
    needed).
    """
    if node is None:
        return False
    try:
        return bool(torch._C._will_engine_execute_node(node))
    except (RuntimeError, AttributeError):
        return unknown


def graph_task_id() -> int | None:
    """An id of the running backward pass (``None`` outside one, or where it cannot be told).

    Uses ``torch._C._current_graph_task_id`` (-1 outside a backward)."""
    try:
        task = int(torch._C._current_graph_task_id())
    except (RuntimeError, AttributeError):
        return None
    return task if task >= 0 else None


def functorch_active() -> bool:
    """Whether a ``torch.func`` transform (grad, vmap, jacrev, ...) is running.

    Uses ``torch._C._functorch.maybe_current_level``; where it is missing the answer is
    ``True`` (the transform-ready path works everywhere, it is only slower)."""
    try:
        return torch._C._functorch.maybe_current_level() is not None
    except AttributeError:
        return True


def legacy_batched(t: Tensor) -> bool:
    """Whether ``t`` is a batched tensor of the legacy vmap that
    ``torch.autograd.grad(..., is_grads_batched=True)`` runs a backward under.

    Uses ``torch._C._functorch.is_legacy_batchedtensor``; where it is missing, the tensor's
    dispatch keys are read instead."""
    try:
        return bool(torch._C._functorch.is_legacy_batchedtensor(t))
    except AttributeError:
        return "Batched" in str(torch._C._dispatch_keys(t))


def convolution_backward(
    grad: Tensor,
    x: Tensor,
    weight: Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    mask: Sequence[bool],
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Stock fused backward of an (untransposed) convolution: ``(∂x, ∂w, ∂b)`` where ``mask``."""
    return torch.ops.aten.convolution_backward(
        grad, x, weight, None, stride, padding, dilation, False, [0] * len(stride), groups, mask
    )


def max_pool2d_backward(
    grad: Tensor,
    x: Tensor,
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    ceil_mode: bool,
    indices: Tensor,
) -> Tensor:
    """Stock fused backward of ``max_pool2d_with_indices`` (``grad`` scattered to the argmax)."""
    return torch.ops.aten.max_pool2d_with_indices_backward(
        grad, x, kernel, stride, padding, dilation, ceil_mode, indices
    )


def relu_backward(grad: Tensor, out: Tensor) -> Tensor:
    """Stock fused ReLU backward (``grad`` where ``out > 0``)."""
    return torch.ops.aten.threshold_backward(grad, out, 0)


def leaky_relu_backward(grad: Tensor, saved: Tensor, slope: float, saved_is_output: bool) -> Tensor:
    """Stock fused LeakyReLU backward (``grad`` times 1 or ``slope`` by the sign of ``saved``)."""
    return torch.ops.aten.leaky_relu_backward(grad, saved, slope, saved_is_output)


def batch_norm_forward(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    batch_stats: bool,
    momentum: float,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """What ``F.batch_norm`` runs: ``(out, save_mean, save_invstd, reserve, impl_index)``."""
    return torch._batch_norm_impl_index(
        x,
        weight,
        bias,
        running_mean,
        running_var,
        batch_stats,
        momentum,
        eps,
        torch.backends.cudnn.enabled,
    )


def batch_norm_backward(
    impl: int,
    x: Tensor,
    grad: Tensor,
    weight: Tensor | None,
    save_mean: Tensor,
    save_invstd: Tensor,
    eps: float,
    mask: Sequence[bool],
    reserve: Tensor,
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Stock fused backward of train-mode batch norm, for the outputs of
    :func:`batch_norm_forward`."""
    return torch.ops.aten._batch_norm_impl_index_backward(
        impl, x, grad, weight, None, None, save_mean, save_invstd, True, eps, list(mask), reserve
    )


def check_batch_norm_input(module: nn.Module, x: Tensor) -> None:
    """The input-rank check of ``nn.BatchNorm1d/2d`` (the same error message as stock)."""
    module._check_input_dim(x)  # type: ignore[operator]
