"""What ran where: ``explain(model, x)`` lists the operations of the input-gradient pass that the
converted modules build and those left on stock autograd (functional calls in a forward,
modules without a rule).

Stock autograd is always *correct*; it is slower where differentiating its backward reaches a
dedicated double-backward kernel (``ConvolutionBackward0`` on cuDNN, train-mode batch norm) and
it fails where PyTorch has none (the fused CPU kernel of scaled-dot-product attention).
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn

from doublebackprop.engine.adjoint import converting
from doublebackprop.engine.validation import check_inputs, check_model

__all__ = ["Explanation", "explain", "backward_ops", "check_double_backward"]

Tensor = torch.Tensor

_CONVERTED = "doublebackprop.engine.converted"

#: stock nodes whose derivative PyTorch does not implement (a double backward fails), with a fix
_NO_DOUBLE_BACKWARD = {
    "ScaledDotProductFlashAttentionForCpuBackward0": (
        "scaled-dot-product attention on the CPU uses a fused kernel without a double backward "
        "in PyTorch; run the forward with the math backend: "
        "`with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH): ...`"
    ),
}


def backward_ops(output: Tensor) -> tuple[Counter[str], Counter[str]]:
    """Backward nodes of ``output``'s graph: ``(converted, stock)`` counts by name.

    Converted nodes are named after the converted module's function (``_ConvFn`` …); parameter
    leaves (``AccumulateGrad``) are not operations and are left out.
    """
    adjoint: Counter[str] = Counter()
    stock: Counter[str] = Counter()
    stack = [output.grad_fn]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        cls = getattr(node, "_forward_cls", None)
        if cls is not None and cls.__module__.startswith(_CONVERTED):
            adjoint[cls.__name__.lstrip("_")] += 1
        elif (
            type(node).__name__ != "AccumulateGrad"
            and node.name() != "torch::autograd::AccumulateGrad"
        ):
            stock[node.name()] += 1
        stack.extend(n for n, _ in node.next_functions)
    return adjoint, stock


def check_double_backward(output: Tensor, where: str) -> None:
    """Raise a clear error, before any long work, if ``output``'s graph holds an operation whose
    backward PyTorch cannot differentiate (see ``_NO_DOUBLE_BACKWARD``)."""
    stack = [output.grad_fn]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        hint = _NO_DOUBLE_BACKWARD.get(node.name())
        if hint is not None:
            raise RuntimeError(f"{where}: {hint}")
        stack.extend(n for n, _ in node.next_functions)


@dataclass(frozen=True)
class Explanation:
    """Where the input-gradient pass of a model runs (see :func:`explain`).

    ``adjoint_ops`` / ``stock_ops`` count backward operations by name; ``stock_modules`` maps a
    reason (``"LayerNorm (no adjoint rule)"``) to the modules left on stock autograd.
    """

    adjoint_ops: dict[str, int]
    stock_ops: dict[str, int]
    stock_modules: dict[str, tuple[str, ...]]

    def __str__(self) -> str:
        lines = ["input-gradient pass, operations built from K^T / K^□ (converted modules):"]
        lines += [f"  {n:48s} {c:4d}" for n, c in sorted(self.adjoint_ops.items())] or ["  none"]
        lines.append("operations on stock autograd:")
        for name, count in sorted(self.stock_ops.items()):
            hint = "  <- no double backward in PyTorch" if name in _NO_DOUBLE_BACKWARD else ""
            lines.append(f"  {name:48s} {count:4d}{hint}")
        if not self.stock_ops:
            lines.append("  none")
        if self.stock_modules:
            lines.append("modules left on stock autograd:")
            lines += [f"  {r}: {', '.join(m)}" for r, m in sorted(self.stock_modules.items())]
        return "\n".join(lines)


def explain(model: nn.Module, x: Tensor) -> Explanation:
    """Which operations of ``model``'s input-gradient pass the adjoint engine builds and which
    stay on stock autograd (functional calls such as ``F.relu``, ``F.conv2d``, ``torch.relu``
    in a forward, and modules without a rule).

    Runs one forward on a batch, with the model converted for the call (an unconverted model is
    left unconverted) and its buffers restored afterwards.

    Parameters
    ----------
    model : torch.nn.Module
    x : Tensor
        A batch ``(N, ...)`` the model accepts.

    Returns
    -------
    Explanation
        ``print(explanation)`` shows a table.

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    >>> sorted(explain(net, torch.randn(2, 4)).stock_ops)
    ['AddmmBackward0', 'TBackward0', 'TanhBackward0']
    """
    check_model(model, "explain")
    x = check_inputs(x, "explain")
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with converting(model) as (net, stock), torch.enable_grad():
                out = net(x.detach().requires_grad_(True))
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"explain: the model must return a tensor, got {type(out).__name__}")
        adjoint, ops = backward_ops(out)
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)
    return Explanation(dict(adjoint), dict(ops), {r: tuple(names) for r, names in stock.items()})
