"""The benchmark's CPU memory measurement and steady heap, against the kernel's own counters."""

from __future__ import annotations

import resource

import pytest
import torch

from doublebackprop.tools import memory

glibc = pytest.mark.skipif(not memory.steady_heap_supported(), reason="needs glibc")

MB = 2**20


def _touch(nbytes: int) -> None:
    block = torch.ones(nbytes // 4)  # written, so every page is resident
    del block


@glibc
def test_peak_rss_is_each_steps_own_peak():
    """A 16 MB step reads about 16 MB every time, not once and then 0 because glibc kept the
    freed block cached (the old sampled reading did exactly that)."""
    readings = [memory.step_memory(lambda: _touch(16 * MB), "cpu")[1] for _ in range(3)]
    assert all(15.0 <= r <= 20.0 for r in readings), readings


@glibc
def test_peak_rss_sees_a_peak_the_step_frees_again():
    def step() -> None:
        for _ in range(2):
            _touch(48 * MB)  # two peaks of 48 MB, never both alive

    rss = memory.step_memory(step, "cpu")[1]
    assert 46.0 <= rss <= 56.0


def _faults(step) -> int:  # type: ignore[no-untyped-def]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@glibc
def test_steady_heap_keeps_freed_memory_and_restores_after():
    pages = 64 * MB // 4096

    def step() -> None:
        _touch(64 * MB)

    step()
    assert _faults(step) > pages // 2  # glibc maps and unmaps a 64 MB block every time
    with memory.steady_heap() as steady:
        assert steady
        step()  # the first one grows the heap
        assert _faults(step) < pages // 20  # then the pages stay resident
    assert _faults(step) > pages // 2  # default behaviour again afterwards
