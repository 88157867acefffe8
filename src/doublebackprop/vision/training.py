"""Training loops: plain, input-gradient-norm penalty (double backprop) and PGD adversarial.

Orchestration code: it calls into the library (``dbp.objective``, ``dbp.adjoint``, the PGD
attack) and owns progress bars, seeds, atomic checkpoints and ``torchrun`` (DDP, gloo on CPU).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from doublebackprop.common.training import (
    config_fingerprint,
    distributed_context,
    load_checkpoint,
    save_checkpoint,
)
from doublebackprop.engine.adjoint import adjoint
from doublebackprop.engine.objective import objective
from doublebackprop.engine.penalties import InputGradientPenalty
from doublebackprop.robustness.attacks import madry_pgd
from doublebackprop.vision.datasets import ImageData

__all__ = ["TrainConfig", "TrainSummary", "train_model"]

log = logging.getLogger(__name__)
Tensor = torch.Tensor


@dataclass(frozen=True)
class TrainConfig:
    """How one model is trained.

    ``method``: ``"plain"``, ``"gradient-norm"`` (``λ·‖∇_x ℓ_i‖²`` per sample through
    ``dbp.objective`` with ``reduction``) or ``"adversarial"`` (Madry PGD training: every sample of
    every batch replaced by the last of ``adv_steps`` PGD iterates from a random start in the
    ``epsilon`` ball of ``adv_norm``, step ``2.5·ε/adv_steps``; see
    :func:`doublebackprop.robustness.madry_pgd`). Adam with ``lr`` and ``weight_decay``; with
    ``lr_step`` the rate is multiplied by ``lr_gamma`` every ``lr_step`` epochs.
    """

    method: str = "plain"
    lam: float = 0.0
    reduction: str = "per_sample"
    epsilon: float = 0.0
    adv_norm: float = 2.0
    adv_steps: int = 5
    epochs: int = 3
    batch_size: int = 100
    lr: float = 1e-3
    seed: int = 0
    weight_decay: float = 0.0
    lr_step: int | None = None
    lr_gamma: float = 0.1
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in ("plain", "gradient-norm", "adversarial"):
            raise ValueError(
                f"TrainConfig: method must be plain, gradient-norm or adversarial, "
                f"got {self.method!r}"
            )
        if self.method == "gradient-norm" and not self.lam > 0:
            raise ValueError(f"TrainConfig: gradient-norm training needs lam > 0, got {self.lam}")
        if self.method == "adversarial" and not self.epsilon > 0:
            raise ValueError(
                f"TrainConfig: adversarial training needs epsilon > 0, got {self.epsilon}"
            )
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError("TrainConfig: epochs and batch_size must be >= 1 and lr > 0")
        if not self.weight_decay >= 0:
            raise ValueError(f"TrainConfig: weight_decay must be >= 0, got {self.weight_decay}")
        if self.lr_step is not None and self.lr_step < 1:
            raise ValueError(f"TrainConfig: lr_step must be >= 1 or None, got {self.lr_step}")
        if not 0 < self.lr_gamma <= 1:
            raise ValueError(f"TrainConfig: lr_gamma must lie in (0, 1], got {self.lr_gamma}")
        if self.adv_norm not in (2.0, float("inf")):
            raise ValueError(f"TrainConfig: adv_norm must be 2 or inf, got {self.adv_norm}")


@dataclass(frozen=True)
class TrainSummary:
    epochs_run: int
    resumed_from: int
    seconds: float
    final_loss: float
    final_penalty: float


def train_model(
    model: nn.Module,
    data: ImageData,
    config: TrainConfig,
    *,
    checkpoint: Path | None = None,
    progress: bool = True,
    desc: str = "train",
) -> TrainSummary:
    """Train ``model`` in place; resumable from ``checkpoint`` (written after every epoch).

    Under ``torchrun`` each process takes a shard of every epoch's permutation and gradients are
    averaged by DDP; only rank 0 writes the checkpoint.

    Parameters
    ----------
    model : torch.nn.Module
    data : ImageData
    config : TrainConfig
    checkpoint : Path or None
    progress : bool
        Draw a tqdm bar.
    desc : str
        The bar's label.
    """
    from tqdm.auto import tqdm

    start_epoch, t0 = 0, time.perf_counter()
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if checkpoint is not None and checkpoint.is_file():
        state = load_checkpoint(checkpoint)
        if state.get("config") != config_fingerprint(config):
            raise ValueError(f"{checkpoint}: checkpoint was written for a different configuration")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch = int(state["epoch"])
        log.info("%s: resumed after epoch %d", checkpoint, start_epoch)
    resumed = start_epoch
    penalty = (
        InputGradientPenalty(
            weight=config.lam,
            target="loss",
            reduction=config.reduction,  # type: ignore[arg-type]
        )
        if config.method == "gradient-norm"
        else None
    )
    loss = pen = float("nan")
    # the per-epoch seeds of the dropout masks must not leak into the caller's generator
    with distributed_context() as (rank, world), torch.random.fork_rng(devices=[]):
        fast = adjoint(model)  # once: the penalised objective runs on the converted model
        net: nn.Module = nn.parallel.DistributedDataParallel(fast) if world > 1 else fast
        n = len(data)
        for epoch in range(start_epoch, config.epochs):
            decay = 0 if config.lr_step is None else epoch // config.lr_step
            for group in opt.param_groups:  # a step schedule that needs no state to resume
                group["lr"] = config.lr * config.lr_gamma**decay
            gen = torch.Generator().manual_seed(config.seed * 1000 + epoch)
            perm = torch.randperm(n, generator=gen)[rank::world]
            torch.manual_seed(config.seed * 1000 + epoch * 10 + rank)  # dropout masks
            batches = perm.split(config.batch_size)
            net.train()
            bar = tqdm(
                batches,
                desc=f"{desc} epoch {epoch + 1}/{config.epochs}",
                disable=not progress or rank != 0,
                leave=False,
            )
            for idx in bar:
                x, y = data.images[idx], data.labels[idx]
                if config.method == "adversarial":  # Madry PGD: every sample perturbed
                    x = madry_pgd(
                        model,
                        x,
                        y,
                        epsilon=config.epsilon,
                        norm=config.adv_norm,
                        steps=config.adv_steps,
                        bounds=(0.0, 1.0),
                        generator=gen,
                    )
                opt.zero_grad(set_to_none=True)
                res = objective(net, x, y, penalty=penalty)
                res.total.backward()
                opt.step()
                loss, pen = float(res.task.detach()), float(res.penalty.detach())
                bar.set_postfix(loss=f"{loss:.3f}", penalty=f"{pen:.3g}")
            if checkpoint is not None and rank == 0:
                save_checkpoint(
                    {
                        "model": model.state_dict(),
                        "optimizer": opt.state_dict(),
                        "epoch": epoch + 1,
                        "config": config_fingerprint(config),
                        "loss": loss,
                    },
                    checkpoint,
                )
            if world > 1:
                dist.barrier()
    model.eval()
    return TrainSummary(
        epochs_run=config.epochs - resumed,
        resumed_from=resumed,
        seconds=time.perf_counter() - t0,
        final_loss=loss,
        final_penalty=pen,
    )
