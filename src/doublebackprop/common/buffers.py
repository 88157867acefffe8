"""Byte buffers that are used again once nothing refers to them any more.

A fresh multi-megabyte ``np.empty`` is new memory from the kernel, which zeroes every page on
first touch: for a reader that fills one block after another that is a second pass over every
byte, as costly as the read itself. :class:`BufferPool` hands out slices of a few buffers
instead and gives a buffer out again only when no array made from it is alive (numpy views
keep a reference to the buffer that owns their memory), so a caller that keeps its blocks
keeps valid data: the pool then just makes new buffers.
"""

from __future__ import annotations

import sys

import numpy as np

__all__ = ["BufferPool"]


class BufferPool:
    """A few reusable byte buffers (one producer thread takes from a pool).

    Parameters
    ----------
    size : the most buffers kept; when all are in use a new, unkept buffer is returned.

    Examples
    --------
    >>> pool = BufferPool()
    >>> a = pool.take(1000)
    >>> b = pool.take(1000)        # ``a`` is alive: another buffer
    >>> a.ctypes.data != b.ctypes.data
    True
    >>> first = a.ctypes.data
    >>> del a
    >>> pool.take(800).ctypes.data == first   # no view of it is left: used again
    True
    """

    def __init__(self, size: int = 4) -> None:
        if size < 1:
            raise ValueError(f"BufferPool: size must be >= 1, got {size}")
        self.size = size
        self._buffers: list[np.ndarray] = []
        self._idle: list[int] = []  # the reference count of each buffer when nothing uses it

    def _refs(self, i: int) -> int:
        return sys.getrefcount(self._buffers[i])

    def take(self, nbytes: int) -> np.ndarray:
        """A writable uint8 array of ``nbytes`` (contents undefined)."""
        free = [i for i in range(len(self._buffers)) if self._refs(i) == self._idle[i]]
        for i in free:
            if self._buffers[i].nbytes >= nbytes:
                return self._buffers[i][:nbytes]
        if free:  # a free buffer too small for this request: replaced by a larger one
            del self._buffers[free[0]], self._idle[free[0]]
        if len(self._buffers) == self.size:
            return np.empty(nbytes, dtype=np.uint8)
        self._buffers.append(np.empty(nbytes, dtype=np.uint8))
        self._idle.append(self._refs(len(self._buffers) - 1))
        return self._buffers[-1][:nbytes]
