"""Memory of one training step: bytes autograd saves for backward, peak resident-set growth
(CPU) or peak allocated bytes (CUDA); and a steady CPU heap for timing. Used by
``doublebackprop bench``.

On Linux with glibc the CPU peak is the kernel's own high-water mark (``VmHWM``, reset through
``/proc/self/clear_refs``), measured with every block of 64 KiB or more in its own mapping
(returned to the kernel when freed) and after ``malloc_trim`` has handed cached memory back: the
peak of what the step keeps alive, not what earlier steps left cached or where the heap
fragmented. Elsewhere a sampling thread reads the resident set every millisecond.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Callable, Iterator

import torch

__all__ = ["step_memory", "steady_heap", "steady_heap_supported", "RSS_FLOOR_MB"]

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


def step_memory(step: Callable[[], None], device: str, rss_repeats: int = 3) -> tuple[float, float]:
    """``(saved-or-peak MB, RSS MB)`` of one step (see :class:`BenchRow`).

    Parameters
    ----------
    step : callable
        One training step.
    device : str
    rss_repeats : int, default 3
        Steps whose peak RSS growth is measured on the CPU; the median is returned (a step's
        peak moves by a few MB between steps with the C library's and oneDNN's own buffers).
    """
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
    readings = sorted(_rss_growth(step) for _ in range(max(1, rss_repeats)))
    return counter[0] / 2**20, readings[len(readings) // 2]


# mallopt parameters (malloc.h) and glibc's defaults for them
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 128 * 1024, 65536
#: blocks at least this large get their own mapping while a peak is measured
_EXACT_MMAP_THRESHOLD = 64 * 1024


def _glibc() -> ctypes.CDLL | None:
    """The C library if it is glibc (it has ``mallopt`` and ``malloc_trim``), else ``None``."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):
        return None
    return libc


def steady_heap_supported() -> bool:
    """Whether :func:`steady_heap` and the exact peak RSS work here (glibc)."""
    return _glibc() is not None


@contextlib.contextmanager
def steady_heap() -> Iterator[bool]:
    """Keep freed CPU memory in the process while timing; yields whether it could.

    glibc returns large freed blocks to the kernel (``mmap`` above a threshold that moves with
    the history of frees, and trimming of the heap top), so the next step page-faults them back:
    thousands of faults per step or none, depending on what ran before, not on the step itself
    (a round robin of variants couples them through the heap). Inside this block no block is
    ``mmap``-ed and the heap is never trimmed, as a caching allocator would behave (PyTorch's
    CUDA allocator does). Afterwards glibc's default settings are restored and the heap
    trimmed. Without glibc nothing changes.
    """
    libc = _glibc()
    if libc is None:
        yield False
        return
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    try:
        yield True
    finally:
        libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def _peak_rss_growth(step: Callable[[], None]) -> float | None:
    """Peak RSS growth (MB) of ``step`` from the kernel's high-water mark; ``None`` where it
    cannot be reset (no glibc, no ``/proc/self/clear_refs``)."""
    libc = _glibc()
    if libc is None:
        return None
    libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
    libc.mallopt(_M_MMAP_THRESHOLD, _EXACT_MMAP_THRESHOLD)  # big blocks: own mapping, no reuse
    try:
        libc.malloc_trim(0)  # freed memory back to the kernel: the step's pages are its own
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
            base = _status_kb("VmRSS")
        except OSError:
            return None
        step()
        return (_status_kb("VmHWM") - base) / 1024
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, _DEFAULT_MMAP_THRESHOLD)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _rss_growth(step: Callable[[], None]) -> float:
    """Peak resident-set growth (MB) during ``step``: the kernel's high-water mark where it can
    be reset, else sampled every millisecond; NaN where ``/proc`` is not available."""
    exact = _peak_rss_growth(step)
    if exact is not None:
        return exact
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
