"""``adjoint(model)``: the same model with backward passes built from ``K^T`` and ``K^□``.

Each supported module changes its class, in place, to a subclass of its own type (so
``isinstance``, ``state_dict`` keys, parameters, buffers, flags and hooks are unchanged: there is
one model) whose forward gives bit-identical outputs but whose backward is written with ordinary
differentiable ops:

* convolutions: ``K^T`` is a transposed convolution and ``K^□`` the weight-gradient convolution,
  so differentiating the input-gradient pass once (what the library's penalties do) never
  reaches a (slow, on cuDNN) double-backward kernel, and the weight gradient is skipped when the
  autograd engine will not use it. Differentiating a *parameter* gradient again (third order)
  does reach it: ``K^□`` runs ``convolution_backward``;
* ReLU / leaky ReLU / max-pooling: the backward multiplies by a *constant* mask (or gathers with
  constant indices), so ``φ'' = 0`` is explicit and a penalty on a logit saliency needs no second
  backward sweep through the primal graph (the thesis' "B2 vanishes");
* average pooling: the adjoint is applied without referencing the primal input;
* BatchNorm: forward by ``F.batch_norm``; backward written out so that train-mode batch statistics
  get their exact second-order terms and eval-mode BN is a constant affine map.

In a forward of which no input gradient can be taken (no input tensor requires grad, or grad mode
is off) the converted modules run as their stock classes: a plain training step on a converted
model is the original model's (see :func:`~doublebackprop.engine.converted.adjoint_path`).

Autograd still owns the graph, so residual connections and arbitrary forward code work. Modules
without a rule keep stock autograd; one warning names each of them and says why. Functional calls
in a forward (``F.relu``, ``F.conv2d``, ``torch.relu``) cannot be converted: they run on stock
autograd (exact, possibly slower); :func:`doublebackprop.explain` lists them.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import TypeVar

from torch import nn

from doublebackprop.engine.converted import (
    AdjointConv1d,
    AdjointConv2d,
    AdjointLeakyReLU,
    AdjointModule,
    AdjointReLU,
    enter_forward,
    leave_forward,
)
from doublebackprop.engine.converted_bn import AdjointBatchNorm1d, AdjointBatchNorm2d
from doublebackprop.engine.converted_linear import AdjointLinear
from doublebackprop.engine.converted_pool import (
    AdjointAdaptiveAvgPool1d,
    AdjointAdaptiveAvgPool2d,
    AdjointAvgPool1d,
    AdjointAvgPool2d,
    AdjointMaxPool1d,
    AdjointMaxPool2d,
)
from doublebackprop.engine.layers import LocallyConnected1d

__all__ = ["adjoint", "converted", "converting", "is_adjoint", "AdjointModule"]

#: ``adjoint`` returns the very model it was given (converted in place), with its type
ModuleT = TypeVar("ModuleT", bound=nn.Module)


# ------------------------------------------------------------------------------- conversion
_RULES: dict[type, type] = {
    nn.Conv1d: AdjointConv1d,
    nn.Conv2d: AdjointConv2d,
    nn.Linear: AdjointLinear,
    nn.ReLU: AdjointReLU,
    nn.LeakyReLU: AdjointLeakyReLU,
    nn.MaxPool1d: AdjointMaxPool1d,
    nn.MaxPool2d: AdjointMaxPool2d,
    nn.AvgPool1d: AdjointAvgPool1d,
    nn.AvgPool2d: AdjointAvgPool2d,
    nn.AdaptiveAvgPool1d: AdjointAdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d: AdjointAdaptiveAvgPool2d,
    nn.BatchNorm1d: AdjointBatchNorm1d,
    nn.BatchNorm2d: AdjointBatchNorm2d,
}

# Leaf modules whose stock backward is already first-order in the sense above (matmuls,
# constant masks, views) or genuinely smooth (φ'' ≠ 0 must be differentiated anyway).
_STOCK_OK: tuple[type, ...] = (
    nn.Linear,
    LocallyConnected1d,
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Softplus,
    nn.Tanh,
    nn.Sigmoid,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Softmax,
    nn.LogSoftmax,
)


#: containers that compute nothing themselves
_PURE_CONTAINERS: tuple[type, ...] = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _fallback_reason(module: nn.Module) -> str | None:
    """Why a module with a rule stays on stock autograd (``None``: it converts)."""
    t = type(module)
    if t in (nn.Conv1d, nn.Conv2d) and module.padding_mode != "zeros":
        return f"{t.__name__}(padding_mode={module.padding_mode!r})"
    if t is nn.LeakyReLU and module.inplace and float(module.negative_slope) < 0:
        return "LeakyReLU(negative_slope<0, inplace=True)"
    return None


def _convert_in_place(
    model: nn.Module,
) -> tuple[list[tuple[nn.Module, type]], dict[str, list[str]]]:
    """Swap the class of every convertible module; returns the swaps (to undo them) and the
    modules left on stock autograd as ``{reason: [qualified names]}``."""
    swaps: list[tuple[nn.Module, type]] = []
    stock: dict[str, list[str]] = {}
    for name, module in model.named_modules():
        if isinstance(module, AdjointModule):
            continue
        rule = _RULES.get(type(module))
        reason = _fallback_reason(module) if rule is not None else None
        if rule is not None and reason is None:
            swaps.append((module, type(module)))
            module.__class__ = rule
            continue
        if reason is None:
            if isinstance(module, _STOCK_OK + _PURE_CONTAINERS):
                continue
            has_children = next(module.children(), None) is not None
            # A container computes with its own parameters (MultiheadAttention) or not at all.
            if has_children and not any(True for _ in module.parameters(recurse=False)):
                continue
            reason = f"{type(module).__name__} (no adjoint rule)"
        stock.setdefault(reason, []).append(name or "<model>")
    return swaps, stock


def stock_modules_message(stock: dict[str, list[str]]) -> str:
    """The fallback warning: every module left on stock autograd, grouped by why."""
    parts = [f"{reason} at {', '.join(names)}" for reason, names in sorted(stock.items())]
    return (
        "doublebackprop.engine.adjoint: these modules keep stock autograd (correct, possibly "
        "slower): " + "; ".join(parts) + ". Functional calls in forward (F.relu, torch.relu, "
        "F.conv2d, ...) are never converted; doublebackprop.explain(model, x) lists what ran on "
        "stock autograd"
    )


def _check_convertible(model: object) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"adjoint: model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, nn.parallel.DistributedDataParallel):
        raise TypeError(
            "adjoint: convert the model before wrapping it in DistributedDataParallel, "
            "e.g. DistributedDataParallel(doublebackprop.engine.adjoint(model))"
        )


def adjoint(model: ModuleT) -> ModuleT:
    """Convert ``model`` *in place* to adjoint-built backward passes, and return it.

    Parameters
    ----------
    model : torch.nn.Module
        Any model. Supported modules (Conv1d/2d with zero padding, Linear, ReLU, LeakyReLU, max/avg/
        adaptive-avg pooling, BatchNorm1d/2d) change their class to a subclass of their own
        type (``isinstance`` and ``state_dict`` keys are unchanged); everything else is kept,
        with one warning naming every module left on stock autograd and why.

    Returns
    -------
    torch.nn.Module
        ``model`` itself: there is one model, so ``train()``/``eval()``, ``to()``,
        ``requires_grad_`` and hooks act on it as always. Forward outputs are bit-identical to
        the unconverted model's. A forward whose inputs require no grad runs the stock modules
        (a plain training step costs what it did); one whose input requires grad builds the
        adjoint backward. ``model`` gets one forward pre-hook and one forward hook that decide
        this. Keep a ``copy.deepcopy`` first if you need the stock model too.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(24, 2))
    >>> fast = adjoint(net)
    >>> fast is net
    True
    """
    if isinstance(model, nn.Module) and is_adjoint(model):
        return model
    _check_convertible(model)
    _, stock = _convert_in_place(model)
    _add_path_hooks(model)
    if stock:
        warnings.warn(stock_modules_message(stock), stacklevel=2)
    return model


def _add_path_hooks(model: nn.Module) -> None:
    """The hooks that let a forward with no input gradient run the stock modules (see
    :func:`~doublebackprop.engine.converted.adjoint_path`); once per model."""
    if enter_forward in model._forward_pre_hooks.values():
        return
    model.register_forward_pre_hook(enter_forward, with_kwargs=True)
    model.register_forward_hook(leave_forward, with_kwargs=True, always_call=True)


@contextlib.contextmanager
def converting(model: nn.Module) -> Iterator[tuple[nn.Module, dict[str, list[str]]]]:
    """:func:`converted`, also yielding the modules left on stock autograd (no warning)."""
    if isinstance(model, nn.Module) and is_adjoint(model):  # a DDP wrapper of one, too
        yield model, {}
        return
    _check_convertible(model)
    swaps, stock = _convert_in_place(model)
    try:
        yield model, stock
    finally:
        for module, cls in swaps:
            module.__class__ = cls


@contextlib.contextmanager
def converted(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` converted for the duration of the block, then restored to its own classes.

    An already converted model is used as is. The autograd graph recorded inside the block
    stays valid after it (backward does not need the modules' classes).
    """
    with converting(model) as (net, stock):
        if stock:
            warnings.warn(stock_modules_message(stock), stacklevel=3)
        yield net


def is_adjoint(model: nn.Module) -> bool:
    """True if ``model`` (or the module a DDP wrapper holds) contains converted modules."""
    return any(isinstance(m, AdjointModule) for m in model.modules())
