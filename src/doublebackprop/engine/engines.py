"""Engines: four ways to compute the gradient of the same penalty.

Every engine implements ``penalty_term(model, x, y, penalty, weight) -> (logits, term)``:
``logits`` carry the ordinary forward graph (the task loss is built from them) and ``term`` is
the weighted batch-mean penalty ``mean_i w_i·penalty_i`` whose ``backward()`` deposits the penalty's
parameter gradient.

* :class:`Autograd` — stock ``torch.autograd.grad(create_graph=True)``: the reference.
* :class:`Adjoint` — the same on ``adjoint(model)``: backward passes built from ``K^T``/``K^□``.
* :class:`~doublebackprop.engine.sweeps.Sweeps` — the paper's forward/B1/F2/B2 algorithm written out.
* :class:`FiniteDifference` — Finlay & Oberman's approximation, no second-order graph.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator

import torch
from torch import nn

from doublebackprop.engine.adjoint import converted
from doublebackprop.engine.explain import check_double_backward
from doublebackprop.engine.penalties import Penalty
from doublebackprop.engine.validation import check_finite_gradient, check_label_range, check_logits

__all__ = ["Engine", "Autograd", "Adjoint", "FiniteDifference", "refuse_own_gradients", "vjp_rows"]

Tensor = torch.Tensor


def vjp_rows(
    logits: Tensor, x: Tensor, seeds: Tensor, *, create_graph: bool, batched: bool | None = None
) -> Tensor:
    """Input gradients ``J^T c_r`` for every row ``r`` of ``seeds`` ``(R, N, m)`` → ``(R, N, *x)``.

    Several rows go through one batched backward (``is_grads_batched``) where autograd allows it
    (and ``batched``), else through a loop of backward calls. ``batched=None`` batches on CUDA
    only: on the CPU the vmapped backward measured slower than the loop (``doublebackprop bench``).

    Parameters
    ----------
    logits : Tensor
        ``(N, m)``, a function of ``x``.
    x : Tensor
        The input the gradients are taken with respect to.
    seeds : Tensor
        ``(R, N, m)`` cotangents.
    create_graph : bool
        Keep the graph (double backprop).
    batched : bool or None
        One batched backward for all rows (None: on CUDA only).
    """
    if batched is None:
        batched = x.is_cuda
    if seeds.shape[0] == 1:
        (g,) = torch.autograd.grad(
            logits, x, seeds[0], create_graph=create_graph, retain_graph=True
        )
        return g.unsqueeze(0)
    if batched:
        try:
            (g,) = torch.autograd.grad(
                logits,
                x,
                seeds,
                create_graph=create_graph,
                retain_graph=True,
                is_grads_batched=True,
            )
            return g
        except RuntimeError:  # an op without a batching rule: one backward per row
            pass
    rows = [
        torch.autograd.grad(logits, x, seeds[r], create_graph=create_graph, retain_graph=True)[0]
        for r in range(seeds.shape[0])
    ]
    return torch.stack(rows)


def _weighted_mean(values: Tensor, weight: Tensor | None) -> Tensor:
    return values.mean() if weight is None else (weight * values).mean()


class Engine(ABC):
    """Base class of engines (see the module docstring)."""

    name: str = "engine"

    @abstractmethod
    def penalty_term(
        self, model: nn.Module, x: Tensor, y: Tensor, penalty: Penalty, weight: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Forward logits (with graph) and the weighted mean penalty (with its gradient)."""

    @contextlib.contextmanager
    def running(self, model: nn.Module) -> Iterator[nn.Module]:
        """The model the engine runs, for the duration of a call (``model`` itself, except
        that :class:`Adjoint` converts an unconverted model for the call only)."""
        yield model

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def forward_logits(model: nn.Module, x: Tensor, y: Tensor | None, where: str) -> Tensor:
    """The model's outputs, checked; ``y`` (class indices, or ``None`` for other targets)
    against the number of outputs."""
    logits = check_logits(model(x), x.shape[0], where)
    if y is not None:
        check_label_range(y, logits.shape[1], where)
    return logits


def refuse_own_gradients(engine: Engine, penalty: Penalty) -> None:
    """Engines other than the graph ones cannot differentiate a penalty's own input gradients
    (LRP relevance): refuse it before any work, naming the engines that can."""
    if penalty.own_gradients:
        raise ValueError(
            f"objective: {penalty!r} computes its own input gradients (LRP's rule-modified "
            f"network), which the {engine.name!r} engine cannot differentiate; use "
            "engine='adjoint' or engine='autograd'"
        )


def class_labels(penalty: Penalty, y: Tensor) -> Tensor | None:
    """``y`` if it holds class indices to check against the outputs, else ``None``."""
    return y if getattr(penalty, "class_labels", True) else None


class Autograd(Engine):
    """Stock double backprop: ``autograd.grad(..., create_graph=True)`` then one backward.

    Parameters
    ----------
    batched_rows : bool or None, default None
        Several rows (Jacobian penalties) in one vmapped backward rather than a loop; ``None``:
        batched on CUDA, a loop on the CPU (where it measured faster).
    """

    name = "autograd"

    def __init__(self, *, batched_rows: bool | None = None) -> None:
        self.batched_rows = batched_rows

    def penalty_term(self, model, x, y, penalty, weight):
        with self.running(model) as net:
            if penalty.own_gradients:  # relevance first: of the model as it was called
                grads = penalty.input_gradients(net, x.detach(), y)
                logits = forward_logits(net, x.detach(), class_labels(penalty, y), "objective")
            else:
                leaf = x.detach().requires_grad_(True)
                logits = forward_logits(net, leaf, class_labels(penalty, y), "objective")
                check_double_backward(logits, "objective")
                seeds = penalty.seeds(logits, y)
                grads = vjp_rows(logits, leaf, seeds, create_graph=True, batched=self.batched_rows)
        check_finite_gradient(grads, "objective")
        return logits, _weighted_mean(penalty.per_sample(grads, x.detach()), weight)


class Adjoint(Autograd):
    """Double backprop through :func:`doublebackprop.engine.adjoint` (the default engine).

    A model that is already converted is used as is; anything else is converted for the call
    and restored afterwards (cheap, but convert once with ``dbp.adjoint(model)`` in a training
    loop: that also warns only once about modules left on stock autograd).
    """

    name = "adjoint"

    @contextlib.contextmanager
    def running(self, model: nn.Module) -> Iterator[nn.Module]:
        with converted(model) as net:
            yield net


def _rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


@contextlib.contextmanager
def _replayed(
    model: nn.Module, rng_state: tuple[Tensor, Tensor | None], device: torch.device
) -> Iterator[None]:
    """Run a forward with the RNG state of an earlier one (same dropout masks) and without
    changing buffers (BatchNorm running statistics)."""
    saved = {name: b.clone() for name, b in model.named_buffers()}
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(rng_state[0])
            if rng_state[1] is not None:
                torch.cuda.set_rng_state(rng_state[1], device)
            yield
    finally:
        # Through ``.data``: stock BatchNorm saved the running statistics for its backward, and
        # an in-place copy on the tensor itself would bump its version and void that graph.
        for name, b in model.named_buffers():
            b.data.copy_(saved[name])


class FiniteDifference(Engine):
    """Finlay & Oberman's finite-difference double backprop — *approximate*.

    For a penalty ``P = R(s)`` of input gradients ``s = J^T c``, the exact parameter gradient is
    ``∇_θ ⟨c, J v⟩`` with ``v = ∇_s R`` held fixed. The Jacobian-vector product is replaced by a
    difference quotient along ``d = v/‖v‖``:

        ⟨c, J v⟩ ≈ ‖v‖/h · ⟨c, z(x + h d) - z(x)⟩      (forward difference)

    so no second-order graph is built: one extra forward (two with ``central=True``) per row. The
    penalty *value* is exact; its gradient has error ``O(h)`` (``O(h²)`` central) times the
    curvature of the network along ``d``, and is exact for networks that are piecewise linear
    within ``h`` of ``x``. Dropout masks are replayed and BatchNorm buffers left untouched in the
    extra forwards.

    Parameters
    ----------
    step : float, default 1e-3
        ``h``, in input units (the direction has unit norm over the batch per sample on average).
    central : bool, default False
    """

    name = "finite_difference"

    def __init__(self, *, step: float = 1e-3, central: bool = False) -> None:
        if not isinstance(step, (int, float)) or not step > 0:
            raise ValueError(f"FiniteDifference: step must be a number > 0, got {step!r}")
        self.step, self.central = float(step), bool(central)

    def penalty_term(self, model, x, y, penalty, weight):
        refuse_own_gradients(self, penalty)
        rng_state = _rng_state(x.device)
        leaf = x.detach().requires_grad_(True)
        logits = forward_logits(model, leaf, class_labels(penalty, y), "objective")
        seeds = penalty.seeds(logits, y)
        grads = vjp_rows(logits, leaf, seeds.detach(), create_graph=False)
        check_finite_gradient(grads, "objective")
        probe = grads.detach().requires_grad_(True)
        value = _weighted_mean(penalty.per_sample(probe, x.detach()), weight)
        if not value.requires_grad:  # penalty independent of the gradient (e.g. weight 0)
            return logits, value.detach()
        (v,) = torch.autograd.grad(value, probe)
        scale = x.shape[0] ** 0.5  # unit norm per sample on average
        surrogate = logits.new_zeros(())
        for r in range(v.shape[0]):
            norm = v[r].norm()
            if norm == 0:
                continue
            d = v[r] * (scale / norm)
            with _replayed(model, rng_state, x.device):
                z_plus = model(x.detach() + self.step * d)
            if self.central:
                with _replayed(model, rng_state, x.device):
                    z_minus = model(x.detach() - self.step * d)
                diff = (z_plus - z_minus) / 2
            else:
                diff = z_plus - logits
            surrogate = surrogate + (norm / (scale * self.step)) * (seeds[r] * diff).sum()
        return logits, value.detach() + surrogate - surrogate.detach()

    def __repr__(self) -> str:
        return f"FiniteDifference(step={self.step}, central={self.central})"
