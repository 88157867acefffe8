"""What every training loop of the package shares: atomic checkpoints that load without
running code, configuration fingerprints, ``torchrun`` process groups and a scoped eval mode."""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "config_fingerprint",
    "distributed_context",
    "eval_mode",
    "load_checkpoint",
    "rank_and_world",
    "save_checkpoint",
    "seeded",
]


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then ``os.replace``: a crash never
    leaves a partial checkpoint, and the previous one stays until the new one is complete.

    ``state`` must hold only tensors, containers and plain Python values, so that
    :func:`load_checkpoint` can read it with ``weights_only=True``; NumPy scalars (what a running
    mean of losses often is) are stored as the Python numbers they hold.
    """
    state = _plain(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _plain(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    return obj


def load_checkpoint(path: Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``.

    A file that carries pickled objects (which could run code when loaded) is refused with a
    ``ValueError`` naming the file, never executed.
    """
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{path}: not a plain checkpoint (it holds pickled objects, which are not loaded "
            f"because they could run code): {str(exc).splitlines()[0]}"
        ) from exc
    if not isinstance(state, dict):
        raise ValueError(f"{path}: a checkpoint must hold a dict, got {type(state).__name__}")
    return state


def config_fingerprint(config: object, *, ignore: Sequence[str] = ("epochs",)) -> dict[str, Any]:
    """The fields of a config dataclass that a resumed run must share with the checkpoint
    (``ignore``: fields that may change on resume, such as more epochs)."""
    return {k: v for k, v in asdict(config).items() if k not in ignore}  # type: ignore[call-overload]


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of the current process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class distributed_context:
    """Initialise a gloo process group when launched by ``torchrun`` (``WORLD_SIZE > 1``).

    Yields ``(rank, world size)``; the group is destroyed on exit if this context created it.
    """

    def __enter__(self) -> tuple[int, int]:
        self.owned = False
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("gloo")
            self.owned = True
        return rank_and_world()

    def __exit__(self, *exc: object) -> None:
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block; restore every submodule's flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block on torch's CPU generator seeded with ``seed`` (weight initialisation,
    dropout masks), and give the caller's global generator state back afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
