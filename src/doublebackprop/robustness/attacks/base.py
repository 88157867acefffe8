"""The attack base: box bounds, explicit seeding and verified results.

Every attack subclasses :class:`Attack`, whose final ``__call__`` validates the arguments,
checks that ``x`` lies inside the declared bounds (nothing is clamped silently), runs the model in
eval mode with frozen parameters (restored afterwards), calls the one hook ``run`` on the samples
that are still classified correctly, and *verifies* the returned points: a distance is reported
only where the prediction really changed (``inf`` elsewhere).
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from doublebackprop.robustness._core import (
    RobustnessWarning,
    batch_view,
    check_batch,
    check_bounds,
    check_classes,
    check_within,
    evaluation,
    logits_of,
)
from doublebackprop.robustness.norms import (
    L2,
    Norm,
)

__all__ = ["Attack", "AttackResult"]

Tensor = torch.Tensor
Bounds = tuple[float, float]


@dataclass(frozen=True)
class AttackResult:
    """Outcome of one attack on a batch.

    ``adversarial`` ``(N, ...)`` are the returned points (``x`` where the sample was already
    misclassified or the attack failed), ``success`` ``(N,)`` says where the prediction differs from
    the label (verified by a forward pass), ``distance`` ``(N,)`` is ``‖adversarial − x‖`` there and
    ``inf`` elsewhere (``0`` for samples misclassified from the start).
    """

    adversarial: Tensor
    success: Tensor
    distance: Tensor
    attack: str


def _generator(generator: torch.Generator | None, seed: int) -> torch.Generator:
    if generator is None:
        return torch.Generator().manual_seed(seed)
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}"
        )
    return generator


def _randn(shape: torch.Size, generator: torch.Generator, like: Tensor) -> Tensor:
    return torch.randn(shape, generator=generator, device=generator.device, dtype=like.dtype).to(
        like.device
    )


class Attack(ABC):
    """Base class: a final ``__call__`` and one hook, :meth:`run`.

    Subclasses set ``norm`` and implement ``run(model, x, y, bounds, generator) -> x_adv`` for a
    batch of correctly classified samples; ``x_adv`` must lie inside ``bounds``.
    """

    norm: Norm = L2()
    #: whether the attack uses gradients (the gradient-masking check compares the two kinds)
    uses_gradients: bool = True
    #: the default seed when no generator is passed (results are reproducible either way)
    seed: int = 0

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "__call__" in cls.__dict__:
            raise TypeError(f"{cls.__name__}: implement run(), not __call__ (it is final)")

    @property
    def name(self) -> str:
        return f"{type(self).__name__}({type(self.norm).__name__})"

    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor | None = None,
        *,
        bounds: Bounds = (0.0, 1.0),
        generator: torch.Generator | None = None,
    ) -> AttackResult:
        """Attack ``model`` at ``x`` (``(N, ...)``) with labels ``y`` (``(N,)``; ``None``: the
        predicted class). Returns an :class:`AttackResult`."""
        where = self.name
        model, x, y = check_batch(model, x, y, where)
        lo_hi = check_bounds(bounds, where)
        check_within(x, lo_hi, where)
        gen = _generator(generator, self.seed)
        with evaluation(model):
            logits = logits_of(model, x, where)
            _check_logits_scale(logits, where)
            if y is None:
                y = logits.argmax(1)
            check_classes(y, logits, where)
            todo = (logits.argmax(1) == y).nonzero().squeeze(1)
            adv = x.clone()
            if todo.numel():
                out = self.run(model, x[todo], y[todo], lo_hi, gen).detach()
                if out.shape != x[todo].shape:
                    raise RuntimeError(f"{where}: run() returned shape {tuple(out.shape)}")
                adv[todo] = out.to(x.dtype)
            check_within(adv, lo_hi, where, name="the attack's output (a bug in the attack)")
            success = logits_of(model, adv, where).argmax(1) != y
        adv = torch.where(batch_view(success, x), adv, x)
        distance = torch.where(
            success, self.norm(adv - x), torch.full_like(success, math.inf, dtype=x.dtype)
        )
        return AttackResult(adversarial=adv, success=success, distance=distance, attack=where)

    @abstractmethod
    def run(
        self, model: nn.Module, x: Tensor, y: Tensor, bounds: Bounds, generator: torch.Generator
    ) -> Tensor:
        """Adversarial candidates for correctly classified ``x`` with labels ``y``."""

    def __repr__(self) -> str:
        return self.name


def _check_logits_scale(logits: Tensor, where: str) -> None:
    if logits.shape[1] > 1 and logits.min() >= 0 and logits.max() <= 1:
        if torch.allclose(logits.sum(1), torch.ones_like(logits[:, 0]), atol=1e-4):
            warnings.warn(
                f"{where}: the model's outputs look like probabilities "
                "(rows in [0, 1] summing to 1); "
                "attacks and distances expect logits",
                RobustnessWarning,
                stacklevel=4,
            )


def _margin(z: Tensor, y: Tensor) -> Tensor:
    """``z_y − max_{j≠y} z_j`` per sample (positive while correctly classified)."""
    other = z.clone()
    other.scatter_(1, y.view(-1, 1), -math.inf)
    return z.gather(1, y.view(-1, 1)).squeeze(1) - other.amax(1)


def _positive_int(**values: object) -> None:
    for name, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")


def _positive_float(owner: str, **values: object) -> None:
    for name, v in values.items():
        if (
            not isinstance(v, (int, float))
            or isinstance(v, bool)
            or not (math.isfinite(v) and v > 0)
        ):
            raise ValueError(f"{owner}: {name} must be a finite number > 0, got {v!r}")
