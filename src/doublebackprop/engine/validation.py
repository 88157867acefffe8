"""Boundary checks shared by the public entry points: errors name the argument."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

Tensor = torch.Tensor


def check_model(model: object, where: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{where}: model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def check_inputs(x: object, where: str) -> Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where}: x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{where}: x must have a floating dtype, got {x.dtype}")
    if x.dim() < 2:
        raise ValueError(
            f"{where}: x must have a batch dimension, shape (N, ...), got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{where}: x is an empty batch")
    if not torch.isfinite(x).all():
        raise ValueError(f"{where}: x contains NaN or Inf")
    return x


def _batch_hint(got: tuple[int, ...], n: int) -> str:
    if len(got) <= 1 and (not got or got[0] == 1) and n != 1:
        return (
            f"; if x is one sample without its batch dimension, add it: x.unsqueeze(0) "
            f"(x's first dimension, {n}, is taken as the batch)"
        )
    return ""


def check_labels(y: object, n: int, where: str, name: str = "y") -> Tensor:
    if not isinstance(y, torch.Tensor):
        raise TypeError(
            f"{where}: {name} must be a torch.Tensor of class indices, got {type(y).__name__}"
        )
    one_hot = y.dim() == 2 and y.shape[0] == n and y.shape[1] > 1
    if one_hot:
        raise ValueError(
            f"{where}: {name} has shape {tuple(y.shape)}, one-hot or soft labels; pass class "
            f"indices, e.g. {name}.argmax(1), or a loss for soft labels "
            "(loss=lambda z, q: -(q * z.log_softmax(1)).sum(1))"
        )
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"{where}: {name} must hold integer class indices, got dtype {y.dtype}")
    if y.shape != (n,):
        raise ValueError(
            f"{where}: {name} must have shape ({n},) to match x, got {tuple(y.shape)}"
            + _batch_hint(tuple(y.shape), n)
        )
    if y.numel() and int(y.min()) < 0:  # checkable before the forward; the upper bound is not
        raise ValueError(
            f"{where}: {name} must lie in [0, classes - 1], got a negative value {int(y.min())}"
        )
    return y.long()


def check_targets(y: object, n: int, where: str) -> Tensor:
    """Targets of a user-supplied task loss: a tensor with one row per sample."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{where}: y must be a torch.Tensor, got {type(y).__name__}")
    if y.dim() == 0 or y.shape[0] != n:
        raise ValueError(
            f"{where}: y must have {n} rows to match x, got shape {tuple(y.shape)}"
            + _batch_hint(tuple(y.shape), n)
        )
    return y


def check_logits(logits: object, n: int, where: str) -> Tensor:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != n:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        hint = ""
        if isinstance(logits, torch.Tensor) and logits.dim() == 1:
            hint = "; if x is one sample without its batch dimension, add it: x.unsqueeze(0)"
        raise ValueError(
            f"{where}: the model must return logits of shape (N, classes) = ({n}, m), "
            f"got {got}{hint}"
        )
    if logits.shape[1] < 1:
        raise ValueError(f"{where}: the model returned zero classes")
    return logits


def check_label_range(y: Tensor, classes: int, where: str, name: str = "y") -> None:
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise ValueError(
            f"{where}: {name} must lie in [0, {classes - 1}] (the model has {classes} outputs), "
            f"got values in [{int(y.min())}, {int(y.max())}]"
        )


def check_sample_weight(w: object, n: int, like: Tensor, where: str) -> Tensor | None:
    if w is None:
        return None
    if not isinstance(w, torch.Tensor):
        raise TypeError(
            f"{where}: sample_weight must be a torch.Tensor or None, got {type(w).__name__}"
        )
    if w.shape != (n,):
        raise ValueError(f"{where}: sample_weight must have shape ({n},), got {tuple(w.shape)}")
    if not torch.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"{where}: sample_weight must be finite and >= 0")
    return w.to(dtype=like.dtype, device=like.device)


@contextlib.contextmanager
def restored_on_error(model: nn.Module) -> Iterator[None]:
    """Put every buffer of ``model`` back (BatchNorm running statistics, ``num_batches_tracked``)
    if the block raises: a rejected call leaves the model exactly as it was."""
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    except BaseException:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)
        raise


def check_finite_gradient(g: Tensor, where: str) -> None:
    if not torch.isfinite(g).all():
        raise ValueError(
            f"{where}: the input gradient contains NaN or Inf (check the model and the inputs' scale)"
        )
