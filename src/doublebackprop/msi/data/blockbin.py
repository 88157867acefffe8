"""Binning a whole block of spectra in one compiled pass, with the TIC fused into it.

The bin operator ``W`` of :func:`~doublebackprop.msi.data.binning.bin_operator` ((L, K), the
profile integral or the centroid sum) gives every bin a short *run* of consecutive points: the
points in the bin and, for profile data, the one on either side of it. :class:`BlockBinner`
stores bin ``k`` as the start and length of its run and a row of its weights, and a compiled
kernel (numba) walks a block eight spectra at a time: for every bin, eight float64 sums of
weight × intensity along the run, one per spectrum (independent sums, so the loop is not bound
by the latency of one addition), and then the eight totals (the TIC, a linear per-spectrum sum,
fused into the same pass).

The block is read once, in its own dtype (float32 rows are neither copied nor cast), and every
sum is float64, so the result equals ``X @ W`` and ``X.sum(axis=1)`` to float64 rounding
(≈1e-15 relative; the tests check it against explicit sums). The kernel may reorder the
additions of one sum (``reassoc``) but assumes nothing about NaN or infinity: they propagate
as in numpy (a NaN point makes exactly the bins that use it NaN). It releases the GIL, so a reader can fetch the next block meanwhile.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from doublebackprop.msi.data.binning import bin_operator

__all__ = ["BlockBinner"]

#: the dtypes the kernel reads as they are; others are cast to float64 first
_NATIVE = (np.dtype(np.float32), np.dtype(np.float64))


class BlockBinner:
    """The bin operator of one m/z axis, applied to blocks of spectra in one pass.

    Parameters
    ----------
    mz : ndarray
        ``(L,)`` strictly increasing m/z axis shared by the spectra.
    edges : ndarray
        ``(K + 1,)`` strictly increasing bin edges.
    kind : {"profile", "centroid"}
        The binning rule (:mod:`~doublebackprop.msi.data.binning`).

    Examples
    --------
    >>> mz = np.linspace(600.0, 2100.0, 20000)
    >>> op = BlockBinner(mz, np.arange(700.0, 2001.0), "profile")
    >>> binned, tic = op(np.ones((4, 20000), dtype=np.float32))
    >>> binned.shape, tic.tolist()
    ((4, 1300), [20000.0, 20000.0, 20000.0, 20000.0])
    """

    def __init__(self, mz: np.ndarray, edges: np.ndarray, kind: str) -> None:
        w = bin_operator(mz, edges, kind).T.tocsr()  # (K, L): bin k's points in row k
        w.sum_duplicates()  # sorted indices, one entry per (bin, point)
        self.n_bins, self.n_points = int(w.shape[0]), int(w.shape[1])
        counts = np.diff(w.indptr)
        has = counts > 0
        #: bin k sums ``weights[k, t] * x[start[k] + t]`` for ``t < length[k]``
        self.start = np.zeros(self.n_bins, dtype=np.int64)
        self.start[has] = w.indices[w.indptr[:-1][has]]
        self.length = counts.astype(np.int64)
        row = np.repeat(np.arange(self.n_bins), counts)
        if np.any(w.indices != self.start[row] + np.arange(w.nnz) - w.indptr[row]):
            raise AssertionError("BlockBinner: a bin's points are not consecutive")  # the rules
        self.weights = np.zeros((self.n_bins, int(counts.max(initial=0))))
        self.weights[row, w.indices - self.start[row]] = w.data

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bin a block and sum it.

        Parameters
        ----------
        x : ndarray
            ``(n, L)`` spectra on the axis (any real dtype; read, never modified).

        Returns
        -------
        ``(binned, tic)``: ``(n, K)`` float64 ``x @ W`` and ``(n,)`` float64 ``x.sum(axis=1)``.
        """
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.n_points:
            raise ValueError(f"spectra must have shape (n, {self.n_points}), got {x.shape}")
        if x.dtype not in _NATIVE:
            x = x.astype(np.float64)
        x = np.ascontiguousarray(x)
        binned = np.empty((x.shape[0], self.n_bins))
        tic = np.empty(x.shape[0])
        _kernel()(x, self.start, self.length, self.weights, binned, tic)
        return binned, tic


@cache
def _kernel() -> Any:
    """The compiled kernel (numba is imported, and the kernel compiled or loaded from its
    on-disk cache, on first use only)."""
    import numba

    @numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
    def bin_block(x, start, length, weights, binned, tic):  # type: ignore[no-untyped-def]
        n, n_points = x.shape
        n_bins = start.size
        for r in range(0, n, 8):  # a tile of eight spectra (fewer in the last one)
            if r + 8 <= n:  # eight independent sums per bin, sharing each weight
                for k in range(n_bins):
                    s = start[k]
                    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
                    for t in range(length[k]):
                        w, i = weights[k, t], s + t
                        a0 += w * x[r, i]
                        a1 += w * x[r + 1, i]
                        a2 += w * x[r + 2, i]
                        a3 += w * x[r + 3, i]
                        a4 += w * x[r + 4, i]
                        a5 += w * x[r + 5, i]
                        a6 += w * x[r + 6, i]
                        a7 += w * x[r + 7, i]
                    binned[r, k], binned[r + 1, k], binned[r + 2, k] = a0, a1, a2
                    binned[r + 3, k], binned[r + 4, k], binned[r + 5, k] = a3, a4, a5
                    binned[r + 6, k], binned[r + 7, k] = a6, a7
            else:
                for q in range(r, n):
                    for k in range(n_bins):
                        s, a = start[k], 0.0
                        for t in range(length[k]):
                            a += weights[k, t] * x[q, s + t]
                        binned[q, k] = a
            for q in range(r, min(r + 8, n)):  # the tile's TICs while its rows are in cache
                a = 0.0
                for i in range(n_points):
                    a += x[q, i]
                tic[q] = a

    return bin_block
