"""``adjoint(model)``: the same model with backward passes built from ``K^T`` and ``K^□``.

Each supported leaf module is swapped for a subclass of its own type (so ``isinstance``,
``state_dict`` keys and parameters are unchanged and *shared* with the original) whose forward
gives bit-identical outputs but whose backward is written with ordinary differentiable ops:

* convolutions: ``K^T`` is a transposed convolution and ``K^□`` the weight-gradient convolution,
  so differentiating the backward never reaches a (slow, on cuDNN) double-backward kernel, and the
  weight gradient is skipped when the autograd engine will not use it (an input-gradient pass);
* ReLU / leaky ReLU / max-pooling: the backward multiplies by a *constant* mask (or gathers with
  constant indices), so ``φ'' = 0`` is explicit and a penalty on a logit saliency needs no second
  backward sweep through the primal graph (the thesis' "B2 vanishes");
* average pooling: the adjoint is applied without referencing the primal input;
* BatchNorm: forward by ``F.batch_norm``; backward written out so that train-mode batch statistics
  get their exact second-order terms and eval-mode BN is a constant affine map.

Autograd still owns the graph, so residual connections and arbitrary forward code work. Modules
without a rule keep stock autograd; one warning names them.
"""

from __future__ import annotations

import copy
import warnings

from torch import nn

from doublebackprop.engine.converted import (
    AdjointAdaptiveAvgPool1d,
    AdjointAdaptiveAvgPool2d,
    AdjointAvgPool1d,
    AdjointAvgPool2d,
    AdjointBatchNorm1d,
    AdjointBatchNorm2d,
    AdjointConv1d,
    AdjointConv2d,
    AdjointLeakyReLU,
    AdjointMaxPool1d,
    AdjointMaxPool2d,
    AdjointModule,
    AdjointReLU,
)
from doublebackprop.engine.layers import LocallyConnected1d

__all__ = ["adjoint", "is_adjoint", "AdjointModule"]


# ------------------------------------------------------------------------------- conversion
_RULES: dict[type, type] = {
    nn.Conv1d: AdjointConv1d,
    nn.Conv2d: AdjointConv2d,
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


def _convert(module: nn.Module, unsupported: set[str]) -> nn.Module:
    rule = _RULES.get(type(module))
    if rule is not None and not (
        type(module) in (nn.Conv1d, nn.Conv2d) and module.padding_mode != "zeros"
    ):
        new = copy.copy(module)  # shares _parameters/_buffers dicts: same tensors, same state
        new.__class__ = rule
        return new
    children = dict(module._modules)
    if not children:
        if not isinstance(module, _STOCK_OK + (AdjointModule,)):
            unsupported.add(type(module).__name__)
        return module
    new = copy.copy(module)
    new._modules = {
        name: (None if child is None else _convert(child, unsupported))
        for name, child in children.items()
    }
    return new


def adjoint(model: nn.Module) -> nn.Module:
    """The model with adjoint-built backward passes, sharing parameters and buffers.

    Parameters
    ----------
    model : torch.nn.Module
        Any model; supported leaf modules (Conv1d/2d, ReLU, LeakyReLU, max/avg/adaptive-avg
        pooling, BatchNorm1d/2d) are replaced, containers are shallow-copied, everything else is
        kept (with one warning naming modules the library has no rule for).

    Returns
    -------
    torch.nn.Module
        Forward outputs are bit-identical to ``model``'s; parameters and buffers are the same
        tensor objects, so training either trains both. The ``training`` flags are copied at
        conversion time (call ``.train()``/``.eval()`` on the returned model afterwards).

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(24, 2))
    >>> fast = adjoint(net)
    >>> fast[0].weight is net[0].weight
    True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"adjoint: model must be a torch.nn.Module, got {type(model).__name__}")
    if is_adjoint(model):
        return model
    if isinstance(model, nn.parallel.DistributedDataParallel):
        raise TypeError(
            "adjoint: convert the model before wrapping it in DistributedDataParallel, "
            "e.g. DistributedDataParallel(doublebackprop.engine.adjoint(model))"
        )
    unsupported: set[str] = set()
    converted = _convert(model, unsupported)
    if unsupported:
        warnings.warn(
            "doublebackprop.engine.adjoint: no adjoint rule for "
            + ", ".join(sorted(unsupported))
            + "; these modules keep stock autograd (correct, possibly slower)",
            stacklevel=2,
        )
    return converted


def is_adjoint(model: nn.Module) -> bool:
    """True if ``model`` (or the module a DDP wrapper holds) contains converted modules."""
    return any(isinstance(m, AdjointModule) for m in model.modules())
