"""The two public entry points: ``objective`` (a training step's loss) and ``input_gradient``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from doublebackprop.engine.engines import (
    Adjoint,
    Autograd,
    Engine,
    FiniteDifference,
    vjp_rows,
)
from doublebackprop.engine.penalties import Penalty
from doublebackprop.engine.sweeps import Sweeps
from doublebackprop.engine.tasks import TaskLoss, check_task_loss, with_task_loss
from doublebackprop.engine.validation import (
    check_finite_gradient,
    check_inputs,
    check_label_range,
    check_labels,
    check_logits,
    check_model,
    check_sample_weight,
    check_targets,
    restored_on_error,
)

__all__ = ["PenaltyResult", "objective", "input_gradient", "resolve_engine", "ENGINES"]

Tensor = torch.Tensor

#: engine names accepted wherever an ``engine`` argument is (the CLI's registry too)
ENGINES: dict[str, type[Engine]] = {
    "adjoint": Adjoint,
    "autograd": Autograd,
    "sweeps": Sweeps,
    "finite_difference": FiniteDifference,
}


def resolve_engine(engine: str | Engine) -> Engine:
    """An :class:`Engine` from its name or itself."""
    if isinstance(engine, Engine):
        return engine
    if isinstance(engine, str) and engine in ENGINES:
        return ENGINES[engine]()
    if isinstance(engine, type) and issubclass(engine, Engine):
        raise TypeError(
            f"engine must be an Engine instance or a name, got the class {engine.__name__}; "
            f"instantiate it: engine={engine.__name__}()"
        )
    raise ValueError(f"engine must be one of {sorted(ENGINES)} or an Engine, got {engine!r}")


@dataclass(frozen=True)
class PenaltyResult:
    """A training objective split into its parts: ``total = task + penalty``.

    ``task = mean_i w_i·CE_i`` and ``penalty = mean_i w_i·penalty_i`` (``w = 1`` without
    ``sample_weight``); ``logits`` are the forward outputs (with graph).
    """

    total: Tensor
    task: Tensor
    penalty: Tensor
    logits: Tensor

    def __repr__(self) -> str:
        n, m = self.logits.shape
        return (
            f"PenaltyResult(total={float(self.total.detach()):.6g}, "
            f"task={float(self.task.detach()):.6g}, penalty={float(self.penalty.detach()):.6g}, "
            f"logits=({n}, {m}))"
        )


def objective(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    penalty: Penalty | None = None,
    engine: str | Engine = "adjoint",
    sample_weight: Tensor | None = None,
    loss: TaskLoss | None = None,
) -> PenaltyResult:
    """A task loss plus a penalty on input derivatives; ``result.total.backward()`` trains.

    Parameters
    ----------
    model : torch.nn.Module
        Returns logits ``(N, m)``. Its ``training`` flag is used as is (train-mode BatchNorm and
        dropout take part in the input gradient, as in the papers' code).
    x : Tensor
        Inputs ``(N, ...)``, floating point, finite. ``x`` itself is not modified and its
        ``requires_grad`` is left alone.
    y : Tensor
        Class indices ``(N,)`` for the default cross-entropy; with ``loss``, whatever it takes
        (soft labels ``(N, m)``, regression targets), with ``N`` rows.
    penalty : Penalty or None
        An *instance* of :class:`InputGradientPenalty`, :class:`RelevancePenalty`,
        :class:`JacobianPenalty`, :class:`GradientFunctionPenalty` or your own subclass.
        ``None``: the task loss alone. A penalty with ``target="loss"`` differentiates the task
        loss (``loss`` if given).
    engine : {"adjoint", "autograd", "sweeps", "finite_difference"} or Engine
    sample_weight : Tensor or None
        ``(N,)`` weights multiplying each sample's whole loss (task and penalty), e.g. balanced
        class weights ``N / (K·N_c)``.
    loss : callable or None
        ``loss(logits, y) -> (N,)``, one value per sample, differentiable in the logits.
        ``None``: cross-entropy with class indices. Examples: label smoothing
        ``lambda z, y: F.cross_entropy(z, y, label_smoothing=0.1, reduction="none")``, soft
        labels ``lambda z, q: -(q * z.log_softmax(1)).sum(1)``, regression
        ``lambda z, t: (z - t).pow(2).sum(1)``.

    Returns
    -------
    PenaltyResult

    Notes
    -----
    Input gradients are those of the batch *sum*: per-sample gradients when samples do not
    interact; with train-mode BatchNorm they include the cross-sample terms.

    Examples
    --------
    >>> import doublebackprop as dbp
    >>> net = dbp.adjoint(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
    ...                                       torch.nn.Linear(8, 3)))
    >>> x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    >>> res = dbp.objective(net, x, y, penalty=dbp.RelevancePenalty(l1=1e-3, l2=1e-3))
    >>> res.total.backward()
    """
    where = "objective"
    check_model(model, where)
    x = check_inputs(x, where)
    if loss is None:
        y = check_labels(y, x.shape[0], where).to(x.device)
    else:
        if not callable(loss):
            raise TypeError(f"{where}: loss must be a callable (logits, y) -> (N,) or None")
        y = check_targets(y, x.shape[0], where).to(x.device)
    weight = check_sample_weight(sample_weight, x.shape[0], x, where)
    check_penalty(penalty, where)
    eng = resolve_engine(engine)
    task_penalty = penalty if penalty is None or loss is None else with_task_loss(penalty, loss)

    with restored_on_error(model):
        if task_penalty is None:
            with eng.running(model) as net:
                logits = check_logits(net(x), x.shape[0], where)
            if loss is None:
                check_label_range(y, logits.shape[1], where)
            pen = logits.new_zeros(())
        else:
            logits, pen = eng.penalty_term(model, x, y, task_penalty, weight)
        if loss is None:
            per = F.cross_entropy(logits, y, reduction="none")
        else:
            per = check_task_loss(loss(logits, y), x.shape[0], where)
    task = per.mean() if weight is None else (weight * per).mean()
    return PenaltyResult(total=task + pen, task=task, penalty=pen, logits=logits)


def check_penalty(penalty: object, where: str) -> None:
    if penalty is None or isinstance(penalty, Penalty):
        return
    if isinstance(penalty, type) and issubclass(penalty, Penalty):
        raise TypeError(
            f"{where}: penalty must be a Penalty instance, got the class {penalty.__name__}; "
            f"instantiate it, e.g. penalty={penalty.__name__}(...) with its keyword arguments"
        )
    raise TypeError(f"{where}: penalty must be a Penalty or None, got {type(penalty).__name__}")


def input_gradient(
    model: nn.Module,
    x: Tensor,
    target: Tensor | int | str | None = None,
    *,
    create_graph: bool = False,
    engine: str | Engine = "adjoint",
) -> Tensor:
    """The gradient of one logit per sample with respect to the input: ``∇_x z_t(x)``.

    The one place input gradients are computed (saliency maps, attributions, attacks).

    Parameters
    ----------
    model : torch.nn.Module
    x : Tensor
        ``(N, ...)``. If ``x`` already requires grad the result stays connected to its graph.
    target : Tensor, int, "predicted" or None
        Class indices ``(N,)``, one class for all, or the predicted class (``None`` or
        ``"predicted"``).
    create_graph : bool
        Keep the graph so the result can enter a training loss (differentiable in the parameters).
    engine : {"adjoint", "autograd"} or Engine
        Graph engines; the sweeps and finite-difference engines compute this with autograd.

    Returns
    -------
    Tensor
        Same shape as ``x``.

    Examples
    --------
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    >>> input_gradient(net, torch.randn(2, 4), target=torch.tensor([0, 2])).shape
    torch.Size([2, 4])
    """
    where = "input_gradient"
    check_model(model, where)
    x = check_inputs(x, where)
    eng = resolve_engine(engine)
    if not isinstance(eng, Autograd):
        eng = Autograd()
    leaf = x if x.requires_grad else x.detach().requires_grad_(True)
    with torch.enable_grad(), restored_on_error(model), eng.running(model) as net:
        logits = check_logits(net(leaf), x.shape[0], where)
        classes = _target_classes(target, logits, where)
        seed = F.one_hot(classes, logits.shape[1]).to(logits.dtype).unsqueeze(0)
        grad = vjp_rows(logits, leaf, seed, create_graph=create_graph)[0]
        check_finite_gradient(grad, where)
    return grad if create_graph else grad.detach()


def _target_classes(target: Tensor | int | str | None, logits: Tensor, where: str) -> Tensor:
    n, m = logits.shape
    if target is None or (isinstance(target, str) and target == "predicted"):
        return logits.detach().argmax(1)
    if isinstance(target, str):
        raise ValueError(
            f"{where}: target must be class indices, an int or 'predicted', got {target!r}"
        )
    if isinstance(target, int):
        target = torch.full((n,), target, dtype=torch.long, device=logits.device)
    classes = check_labels(target, n, where, name="target").to(logits.device)
    check_label_range(classes, m, where, name="target")
    return classes
