"""The benchmark's CPU memory measurement and steady heap, against the kernel's own counters."""

from __future__ import annotations

import json
import subprocess
import sys

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


_STEADY_SCRIPT = """
import json, resource, torch
from doublebackprop.tools import memory

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.ones(10 * 2**20)  # 40 MB, above glibc's largest dynamic mmap threshold
    del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

out = {"before": [faults() for _ in range(3)]}
with memory.steady_heap() as steady:
    out["steady"] = steady
    out["inside"] = [faults() for _ in range(6)]
out["after"] = [faults() for _ in range(3)]
print(json.dumps(out))
"""


@glibc
def test_steady_heap_keeps_freed_memory_and_restores_after():
    """In a fresh process (the heap's history decides what glibc does): by default a 40 MB
    block is handed back to the kernel and page-faulted again (not necessarily every time);
    inside ``steady_heap`` it stays resident once the heap has grown; afterwards it is handed
    back again."""
    run = subprocess.run(
        [sys.executable, "-c", _STEADY_SCRIPT], capture_output=True, text=True, check=True
    )
    out = json.loads(run.stdout.strip().splitlines()[-1])
    pages = 40 * MB // 4096
    assert out["steady"] is True
    assert sum(out["before"]) > pages
    assert max(out["inside"][3:]) < pages // 20  # resident once the heap has grown
    assert sum(out["after"]) > pages // 2
