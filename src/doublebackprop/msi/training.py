"""Training with Deep Relevance Regularization (DRR), as Etmann et al. (2019) did it.

``loss_i = w_i · (CE_i + λ₁‖r_i‖₁ + λ₂‖r_i‖₂²)`` with ``r = x ⊙ ∇_x z_y`` (true-class logit;
LRP-ε relevance instead with ``relevance="lrp"``) and balanced class weights ``w_i = N / (K·N_{y_i})``, computed in train mode (batch-statistics
BatchNorm, dropout) through :func:`doublebackprop.engine.objective`; Adam with AMSGrad, lr 5e-4, batch
150, the last partial batch dropped, reshuffled every epoch, final weights kept.

Progress is reported through a callback (the CLI draws a tqdm bar); nothing is printed. A
checkpoint file, written atomically, lets an interrupted run resume where it stopped. Under
``torch.distributed`` (e.g. ``torchrun``) every global batch is split across the processes and the
model is wrapped in ``DistributedDataParallel``; the gradient is then that of the global batch.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from doublebackprop.attribution.lrp_rules import Epsilon
from doublebackprop.common.training import (
    config_fingerprint,
    eval_mode,
    load_checkpoint,
    rank_and_world,
    save_checkpoint,
)
from doublebackprop.engine.adjoint import adjoint
from doublebackprop.engine.objective import ENGINES, objective
from doublebackprop.engine.penalties import RelevancePenalty

__all__ = [
    "TrainConfig",
    "EpochStats",
    "TrainResult",
    "balanced_weights",
    "train_model",
    "predict_logits",
]

logger = logging.getLogger(__name__)
Tensor = torch.Tensor
_TRAIN_ONLY = ("epochs",)  # fields that may differ when resuming


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (defaults: the DRR paper's).

    Parameters
    ----------
    epochs : int, default 400
    batch_size : int, default 150
    lr : float, default 5e-4
        Adam with AMSGrad, ``eps = 1e-8``, no weight decay.
    l1, l2 : float, default 0
        DRR weights λ₁, λ₂ (the paper uses λ₁ = λ₂ = λ); both 0 trains plain cross-entropy.
    engine : {"adjoint", "autograd", "sweeps", "finite_difference"}, default "adjoint"
    balanced : bool, default True
        Balanced class weights ``N / (K·N_c)`` on the whole per-sample loss.
    drop_last : bool, default True
        Drop the last partial batch (kept when the data hold less than one batch).
    seed : int, default 0
        Shuffling and dropout.
    penalty_reduction : {"per_sample", "batch_sum"}, default "per_sample"
        How λ is read (:class:`~doublebackprop.RelevancePenalty`): ``"batch_sum"`` is the DRR
        authors' convention (every sample's loss gets the batch's summed relevance norms, i.e.
        batch size × a per-sample λ).
    relevance : {"gradient_x_input", "lrp"}, default "gradient_x_input"
        The relevance DRR penalises: gradient × input (the paper) or LRP-ε
        (``RelevancePenalty(relevance="lrp", rule=Epsilon(lrp_epsilon))``; ``adjoint`` or
        ``autograd`` engine only).
    lrp_epsilon : float, default 0.01
        ε of the LRP-ε rule with ``relevance="lrp"``.
    """

    epochs: int = 400
    batch_size: int = 150
    lr: float = 5e-4
    l1: float = 0.0
    l2: float = 0.0
    engine: str = "adjoint"
    balanced: bool = True
    drop_last: bool = True
    seed: int = 0
    penalty_reduction: str = "per_sample"
    relevance: str = "gradient_x_input"
    lrp_epsilon: float = 0.01

    def __post_init__(self) -> None:
        if self.relevance not in ("gradient_x_input", "lrp"):
            raise ValueError(
                "TrainConfig: relevance must be 'gradient_x_input' or 'lrp', "
                f"got {self.relevance!r}"
            )
        if self.relevance == "lrp" and self.engine not in ("adjoint", "autograd"):
            raise ValueError(
                f"TrainConfig: relevance='lrp' needs the 'adjoint' or 'autograd' engine, "
                f"got {self.engine!r}"
            )
        e = self.lrp_epsilon
        if not isinstance(e, (int, float)) or not math.isfinite(e) or e < 0:
            raise ValueError(f"TrainConfig: lrp_epsilon must be a finite number >= 0, got {e!r}")
        if self.penalty_reduction not in ("per_sample", "batch_sum"):
            raise ValueError(
                "TrainConfig: penalty_reduction must be 'per_sample' or 'batch_sum', "
                f"got {self.penalty_reduction!r}"
            )
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if name == "epochs" else 1):
                raise ValueError(
                    f"TrainConfig: {name} must be an int >= "
                    f"{0 if name == 'epochs' else 1}, got {v!r}"
                )
        for name in ("l1", "l2"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"TrainConfig: {name} (λ) must be a finite number >= 0, got {v!r}")
        if not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) or self.lr <= 0:
            raise ValueError(f"TrainConfig: lr must be a finite number > 0, got {self.lr!r}")
        if self.engine not in ENGINES:
            raise ValueError(
                f"TrainConfig: engine must be one of {sorted(ENGINES)}, got {self.engine!r}"
            )

    @property
    def drr(self) -> bool:
        return self.l1 > 0 or self.l2 > 0

    def penalty(self) -> RelevancePenalty | None:
        """The DRR penalty these settings train with (``None`` without DRR)."""
        if not self.drr:
            return None
        lrp = self.relevance == "lrp"
        return RelevancePenalty(
            l1=self.l1,
            l2=self.l2,
            reduction=self.penalty_reduction,  # type: ignore[arg-type]
            relevance=self.relevance,  # type: ignore[arg-type]
            rule=Epsilon(self.lrp_epsilon) if lrp else None,
        )


@dataclass(frozen=True)
class EpochStats:
    """Weighted batch-mean losses of one epoch (averaged over its batches)."""

    epoch: int
    loss: float
    task: float
    penalty: float
    seconds: float
    spectra: int


@dataclass(frozen=True)
class TrainResult:
    """The trained model (the caller's module, in eval mode) and the per-epoch history."""

    model: nn.Module
    history: tuple[EpochStats, ...]
    resumed_from_epoch: int = 0
    config: TrainConfig = field(default_factory=TrainConfig)

    @property
    def spectra_per_second(self) -> float:
        secs = sum(h.seconds for h in self.history)
        return sum(h.spectra for h in self.history) / secs if secs > 0 else float("nan")


def balanced_weights(y: Tensor | np.ndarray, num_classes: int | None = None) -> Tensor:
    """Per-sample balanced class weights ``N / (K·N_{y_i})``, shape ``(N,)``.

    ``K`` counts the classes present in ``y``.

    Examples
    --------
    >>> balanced_weights(torch.tensor([0, 0, 0, 1])).tolist()
    [0.6666666865348877, 0.6666666865348877, 0.6666666865348877, 2.0]
    """
    y = torch.as_tensor(np.asarray(y) if isinstance(y, np.ndarray) else y).long()
    counts = torch.bincount(y, minlength=num_classes or 0).float()
    present = int((counts > 0).sum())
    per_class = torch.where(counts > 0, y.numel() / (present * counts.clamp_min(1)), 0.0)
    return per_class[y]


def _spectrum(item: object) -> Tensor:
    if isinstance(item, (tuple, list)):
        item = item[0]
    return torch.as_tensor(item, dtype=torch.float32)


class _Source:
    """Batches of spectra from a tensor (sliced) or a Dataset (read item by item)."""

    def __init__(self, x: Tensor | np.ndarray | Dataset) -> None:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        if isinstance(x, Tensor):
            if x.dim() < 2 or not x.is_floating_point():
                raise ValueError(
                    f"x must be a floating tensor of shape (N, L), got {x.dtype} {tuple(x.shape)}"
                )
            self.tensor: Tensor | None = x
            self.dataset = None
            self.n = x.shape[0]
        elif isinstance(x, Dataset):
            self.tensor, self.dataset = None, x
            self.n = len(x)  # type: ignore[arg-type]
        else:
            raise TypeError(f"x must be a Tensor, ndarray or torch Dataset, got {type(x).__name__}")

    def batch(self, idx: Tensor) -> Tensor:
        if self.tensor is not None:
            return self.tensor[idx]
        assert self.dataset is not None
        return torch.stack([_spectrum(self.dataset[int(i)]) for i in idx])


def _batches(n: int, cfg: TrainConfig, epoch: int, rank: int, world: int) -> list[Tensor]:
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=gen)
    size = cfg.batch_size
    stop = (n // size) * size if cfg.drop_last and n >= size else n
    return [perm[i : min(i + size, stop)][rank::world] for i in range(0, stop, size)]


def train_model(
    model: nn.Module,
    x: Tensor | np.ndarray | Dataset,
    y: Tensor | np.ndarray,
    *,
    config: TrainConfig,
    num_classes: int | None = None,
    callback: Callable[[EpochStats, int], None] | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
) -> TrainResult:
    """Train ``model`` with cross-entropy (+ DRR when ``config.l1``/``l2`` > 0).

    Parameters
    ----------
    model : torch.nn.Module
        Returns logits; trained in place (through ``dbp.adjoint(model)``, which shares its
        parameters, when ``config.engine == "adjoint"``).
    x : Tensor, ndarray or Dataset
        Spectra ``(N, L)``, or a Dataset whose items are spectra or ``(spectrum, ...)`` tuples
        (read batch by batch: memory stays bounded by the batch).
    y : Tensor or ndarray
        Class indices ``(N,)``.
    config : TrainConfig
    num_classes : int or None
        For the class weights (default: ``max(y) + 1``).
    callback : callable or None
        ``callback(stats, total_epochs)`` after every epoch (the CLI's progress bar).
    checkpoint : path or None
        Written atomically every ``checkpoint_every`` epochs (rank 0) and at the end; if it
        exists, training resumes from it (its settings must match ``config`` except ``epochs``).

    Returns
    -------
    TrainResult

    Examples
    --------
    >>> from doublebackprop.msi.models import IsotopeNet
    >>> net = IsotopeNet(input_length=90, num_classes=2)
    >>> x, y = torch.rand(20, 90), torch.tensor([0, 1] * 10)
    >>> res = train_model(net, x, y, config=TrainConfig(epochs=1, batch_size=10, l1=1e-3, l2=1e-3))
    >>> len(res.history)
    1
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"train_model: model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"train_model: config must be a TrainConfig, got {type(config).__name__}")
    source = _Source(x)
    labels = torch.as_tensor(np.asarray(y) if isinstance(y, np.ndarray) else y).long().cpu()
    if labels.shape != (source.n,):
        raise ValueError(f"train_model: y must have shape ({source.n},), got {tuple(labels.shape)}")
    if source.n == 0:
        raise ValueError("train_model: no training spectra")
    k = num_classes or int(labels.max()) + 1
    weights = balanced_weights(labels, k) if config.balanced else torch.ones(source.n)
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    rank, world = rank_and_world()

    net = adjoint(model) if config.engine == "adjoint" else model
    runner: nn.Module = net
    if world > 1:
        runner = nn.parallel.DistributedDataParallel(net)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, eps=1e-8, amsgrad=True)
    penalty = config.penalty()

    history: list[EpochStats] = []
    start = 0
    ckpt = Path(checkpoint) if checkpoint is not None else None
    rng_state: Tensor | None = None
    if ckpt is not None and ckpt.exists():
        state = load_checkpoint(ckpt, map_location=device)
        if state.get("config") != config_fingerprint(config, ignore=_TRAIN_ONLY):
            raise ValueError(
                f"train_model: checkpoint {ckpt} was written with different settings "
                f"{state.get('config')}; remove it or use the same config"
            )
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        history = [EpochStats(**h) for h in state["history"]]
        start = int(state["epoch"])
        rng_state = state["rng"]
        logger.info("resuming %s from epoch %d", ckpt, start)

    def save(epoch: int) -> None:
        if ckpt is None or rank != 0:
            return
        save_checkpoint(
            {
                "config": config_fingerprint(config, ignore=_TRAIN_ONLY),
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "history": [asdict(h) for h in history],
                "rng": torch.get_rng_state(),
            },
            ckpt,
        )

    model.train()
    with torch.random.fork_rng(devices=[]):
        if rng_state is not None:
            torch.set_rng_state(rng_state)
        else:
            torch.manual_seed(config.seed * 7919 + rank)
        for epoch in range(start, config.epochs):
            t0 = time.perf_counter()
            sums = np.zeros(3)
            batches = _batches(source.n, config, epoch, rank, world)
            seen = 0
            for idx in batches:
                xb = source.batch(idx).to(device=device, dtype=dtype)
                yb, wb = labels[idx].to(device), weights[idx].to(device)
                opt.zero_grad(set_to_none=True)
                res = objective(
                    runner, xb, yb, penalty=penalty, engine=config.engine, sample_weight=wb
                )
                res.total.backward()
                opt.step()
                sums += [res.total.item(), res.task.item(), res.penalty.item()]
                seen += len(idx)
            nb = max(len(batches), 1)
            stats = EpochStats(
                epoch=epoch + 1,
                loss=sums[0] / nb,
                task=sums[1] / nb,
                penalty=sums[2] / nb,
                seconds=time.perf_counter() - t0,
                spectra=seen * world,
            )
            if not math.isfinite(stats.loss):
                raise FloatingPointError(
                    f"train_model: loss became {stats.loss} in epoch "
                    f"{epoch + 1} (λ too large or lr too high?)"
                )
            history.append(stats)
            if callback is not None:
                callback(stats, config.epochs)
            if (epoch + 1) % max(checkpoint_every, 1) == 0 or epoch + 1 == config.epochs:
                save(epoch + 1)
    model.eval()
    return TrainResult(model=model, history=tuple(history), resumed_from_epoch=start, config=config)


@torch.no_grad()
def predict_logits(model: nn.Module, x: Tensor | np.ndarray, *, batch_size: int = 512) -> Tensor:
    """Logits ``(N, K)`` of ``model`` in eval mode (its flags are restored afterwards)."""
    param = next(model.parameters())
    x = torch.as_tensor(x, dtype=param.dtype)
    device = param.device
    with eval_mode(model):
        out = [model(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0, getattr(model, "num_classes", 0))
