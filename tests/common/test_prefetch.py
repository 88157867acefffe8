"""The background-thread iterator, against plain iteration."""

from __future__ import annotations

import threading
import time

import pytest

from doublebackprop.common.prefetch import prefetch


def test_items_arrive_in_order_and_at_most_depth_ahead():
    made: list[int] = []

    def items():
        for i in range(20):
            made.append(i)
            yield i

    seen: list[int] = []
    for i in prefetch(items(), depth=2):
        time.sleep(0.002)
        assert len(made) - len(seen) <= 2 + 2  # waiting, in production, the caller's
        seen.append(i)
    assert seen == list(range(20))


def test_errors_reach_the_caller_at_their_item():
    def items():
        yield 1
        raise KeyError("boom")

    it = prefetch(items())
    assert next(it) == 1
    with pytest.raises(KeyError, match="boom"):
        next(it)


def test_closing_early_stops_the_thread():
    def items():
        i = 0
        while True:
            yield i
            i += 1

    before = sum(t.name == "prefetch" for t in threading.enumerate())
    it = prefetch(items(), depth=1)
    assert next(it) == 0
    it.close()
    assert sum(t.name == "prefetch" for t in threading.enumerate()) == before
    with pytest.raises(ValueError, match="depth must be >= 1"):
        next(prefetch([1], depth=0))
