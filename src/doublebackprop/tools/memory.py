"""Memory of one training step: bytes autograd saves for backward, resident-set growth (CPU) or
peak allocated bytes (CUDA). Used by ``doublebackprop bench``."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator

import torch

__all__ = ["step_memory", "RSS_FLOOR_MB"]

#: RSS growth below this is allocator noise, not a measurement (MB)
RSS_FLOOR_MB = 1.0


@contextlib.contextmanager
def _saved_bytes(counter: list[int]) -> Iterator[None]:
    seen: set[tuple[int, int]] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key not in seen:  # a tensor saved by several nodes is stored once
            seen.add(key)
            counter[0] += storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield


def step_memory(step: Callable[[], None], device: str) -> tuple[float, float]:
    """``(saved-or-peak MB, RSS MB)`` of one step (see :class:`BenchRow`)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20, float("nan")
    counter = [0]
    with _saved_bytes(counter):
        step()
    return counter[0] / 2**20, _rss_growth(step)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _rss_growth(step: Callable[[], None]) -> float:
    """Peak resident-set growth (MB) during ``step``, sampled every millisecond; NaN where
    ``/proc`` is not available."""
    try:
        base = _rss_bytes()
    except OSError:
        return float("nan")
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            done.wait(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        step()
    finally:
        done.set()
        thread.join()
    peak[0] = max(peak[0], _rss_bytes())
    return (peak[0] - base) / 2**20
