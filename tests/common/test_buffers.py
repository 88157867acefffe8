"""The buffer pool gives a buffer out again only when no array made from it is alive."""

from __future__ import annotations

import numpy as np
import pytest

from doublebackprop.common.buffers import BufferPool


def _owner(a: np.ndarray) -> int:
    return (a.base if a.base is not None else a).ctypes.data


def test_a_buffer_with_a_live_view_is_never_handed_out_again():
    pool = BufferPool(size=3)
    kept = []
    for k in range(6):  # every block kept: each gets its own memory, the data stays
        a = pool.take(1000).view(np.float64)
        a[:] = k
        kept.append(a.reshape(5, 25)[1:])  # a derived view keeps the buffer too
        del a
    assert len({_owner(v) for v in kept}) == 6
    for k, v in enumerate(kept):
        np.testing.assert_array_equal(v, k)


def test_a_buffer_no_array_refers_to_is_used_again():
    pool = BufferPool(size=2)
    seen = set()
    for _ in range(10):
        block = pool.take(4096).view(np.float32).reshape(4, 256)
        seen.add(block.ctypes.data)
        del block
    assert len(seen) == 1
    small = pool.take(100)
    big = pool.take(10_000)  # the free buffer is too small: replaced, not overrun
    assert big.nbytes == 10_000 and small.nbytes == 100
    assert _owner(big) != _owner(small)


def test_pool_size_is_checked():
    with pytest.raises(ValueError, match="size must be >= 1"):
        BufferPool(size=0)
