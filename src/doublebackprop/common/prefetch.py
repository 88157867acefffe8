"""Producing the items of an iterator in a background thread, a bounded number ahead.

File reads, numpy casts and reductions and BLAS products release the GIL, so a reader that
prefetches the next block while the caller computes on the current one overlaps I/O with
compute and uses a second core."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar, cast

__all__ = ["prefetch"]

T = TypeVar("T")
_DONE = object()


def prefetch(items: Iterable[T], *, depth: int = 1) -> Iterator[T]:
    """Iterate over ``items``, each produced in a background thread ahead of its use.

    Parameters
    ----------
    items : the iterable to consume; it is iterated in one background thread only.
    depth : how many finished items may wait for the caller (>= 1). At most ``depth + 2`` items
        exist at once: the caller's, the waiting ones and the one being produced.

    An exception raised while producing an item is raised to the caller at that item. Closing
    the iterator early (``break``, garbage collection) stops the producer after its current item
    and joins the thread.

    Examples
    --------
    >>> list(prefetch(range(3)))
    [0, 1, 2]
    """
    if depth < 1:
        raise ValueError(f"prefetch: depth must be >= 1, got {depth}")
    box: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as exc:  # handed to the caller
            put(_Raised(exc))
            return
        put(_DONE)

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = box.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield cast(T, item)
    finally:
        stop.set()
        thread.join()


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
