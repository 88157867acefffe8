"""Binning a whole block of spectra in one product, with the TIC fused into it.

The bin operator ``W`` of :func:`~doublebackprop.msi.data.binning.bin_operator` ((L, K), the
profile integral or the centroid sum) is *banded*: a point feeds only the bins around its own
m/z. :class:`BlockBinner` cuts the points it touches into chunks of ``chunk`` consecutive
points; each chunk reaches only a narrow run of bins, so ``W`` becomes a stack of small dense
bands ``(n_chunks, band, chunk)``. The last row of every band is all ones, which makes the
total ion count (a linear, per-spectrum sum) a by-product of the same product. A block ``X``
(n, L) is then

1. copied once into a float64 scratch buffer, ``_ROWS`` spectra at a time (float64 rows, e.g.
   cast by a prefetching reader's thread, are read in place),
2. multiplied by the bands in one batched BLAS product (``np.matmul``),
3. scattered onto the K bins (+ the TIC) by a small 0/1 sparse matrix (the bands overlap),

i.e. the block is traversed once, in float64, whatever its dtype. Where the bands would be
mostly zeros (points much sparser than bins, so one chunk spans many bins) the same fused
operator is applied as one sparse product instead. Both give ``X @ W`` and ``X.sum(axis=1)``
to float64 rounding (≈1e-15 relative), which the tests check against explicit sums.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from doublebackprop.msi.data.binning import bin_operator

__all__ = ["BlockBinner"]

#: spectra copied into the float64 scratch buffer at a time (fewer, larger BLAS calls)
_ROWS = 64


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
    chunk : int
        Points per dense band (keyword-only).
    max_band : int
        The most bins one band may span; beyond it (or with ``dense=False``) the fused operator
        is applied as a sparse product (keyword-only).
    dense : bool
        Use the dense bands where they fit (default); False forces the sparse product.

    Examples
    --------
    >>> mz = np.linspace(600.0, 2100.0, 20000)
    >>> op = BlockBinner(mz, np.arange(700.0, 2001.0), "profile")
    >>> binned, tic = op(np.ones((4, 20000), dtype=np.float32))
    >>> binned.shape, tic.tolist()
    ((4, 1300), [20000.0, 20000.0, 20000.0, 20000.0])
    """

    def __init__(
        self,
        mz: np.ndarray,
        edges: np.ndarray,
        kind: str,
        *,
        chunk: int = 64,
        max_band: int = 48,
        dense: bool = True,
    ) -> None:
        import scipy.sparse as sp

        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        w = bin_operator(mz, edges, kind).tocsr()  # (L, K)
        w.sum_duplicates()
        self.n_points, self.n_bins = int(w.shape[0]), int(w.shape[1])
        point = np.repeat(np.arange(self.n_points), np.diff(w.indptr))  # of every entry
        lo, hi = (int(point[0]), int(point[-1]) + 1) if point.size else (0, 0)
        n_chunks = -(-(hi - lo) // chunk)
        start = max(0, min(lo, self.n_points - n_chunks * chunk))  # grid inside a row if it fits
        n_chunks = -(-(hi - start) // chunk)
        owner = (point - start) // chunk  # the chunk of every entry
        first = np.full(n_chunks, self.n_bins, dtype=np.int64)
        last = np.zeros(n_chunks, dtype=np.int64)
        np.minimum.at(first, owner, w.indices)
        np.maximum.at(last, owner, w.indices)
        first = np.where(first == self.n_bins, 0, first)  # a chunk without entries
        band = int(np.max(last - first, initial=-1)) + 1
        self.dense = bool(dense and point.size and band + 1 <= max_band)
        self._lock = threading.Lock()
        self._buf: np.ndarray | None = None
        k = self.n_bins
        if not self.dense:  # (K + 1, L): the bins and a row of ones (the TIC)
            ones = sp.csr_matrix(np.ones((1, self.n_points)))
            self._fused: Any = sp.vstack([w.T.tocsr(), ones]).tocsr()
            return
        # dense bands (n_chunks, band + 1, chunk): band row b of chunk c feeds bin first[c] + b;
        # the last row (ones) feeds the TIC, index K
        bands = np.zeros((n_chunks, band + 1, chunk))
        bands[owner, w.indices - first[owner], (point - start) % chunk] = w.data
        bands[:, band] = 1.0
        target = first[:, None] + np.arange(band + 1)[None, :]
        target[:, band] = k
        keep = (target < k) | (np.arange(band + 1)[None, :] == band)
        self._bands_w = bands
        self._scatter = sp.csr_matrix(
            (np.ones(int(keep.sum())), (target[keep], np.flatnonzero(keep.ravel()))),
            shape=(k + 1, n_chunks * (band + 1)),
        )
        self._start, self._n_chunks, self._chunk = start, n_chunks, chunk

    def __getstate__(self) -> dict[str, Any]:  # picklable: without the lock and the scratch
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_buf")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock(), _buf=None)

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bin a block and sum it.

        Parameters
        ----------
        x : ndarray
            ``(n, L)`` spectra on the axis (any float dtype; read, never modified).

        Returns
        -------
        ``(binned, tic)``: ``(n, K)`` float64 ``x @ W`` and ``(n,)`` float64 ``x.sum(axis=1)``.
        """
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.n_points:
            raise ValueError(f"spectra must have shape (n, {self.n_points}), got {x.shape}")
        out = np.empty((self.n_bins + 1, x.shape[0]))
        if not self.dense:
            out[...] = self._fused @ np.ascontiguousarray(x.T, dtype=np.float64)
            return out[: self.n_bins].T, out[self.n_bins]
        with self._lock:  # one scratch buffer per operator
            for s in range(0, x.shape[0], _ROWS):
                self._dense(x[s : s + _ROWS], out[:, s : s + _ROWS])
        return out[: self.n_bins].T, out[self.n_bins]

    def _dense(self, x: np.ndarray, out: np.ndarray) -> None:
        g, nc, c = self._start, self._n_chunks, self._chunk
        n, width = x.shape[0], nc * c
        inside = min(width, self.n_points - g)  # the grid's points that exist in a row
        if x.dtype == np.float64 and x.strides[1] == x.itemsize and inside == width:
            grid = x[:, g : g + width]  # float64 rows already: the bands read them in place
            rest = x[:, :g].sum(axis=1) + x[:, g + width :].sum(axis=1)
        else:
            if self._buf is None:  # the grid's points (zero-padded to whole chunks), the others
                self._buf = np.zeros((_ROWS, width + self.n_points - inside))
            buf = self._buf[:n]
            buf[:, :inside] = x[:, g : g + inside]  # the one float64 copy
            buf[:, width : width + g] = x[:, :g]
            buf[:, width + g :] = x[:, g + inside :]
            grid, rest = buf[:, :width], buf[:, width:].sum(axis=1)
        part = np.matmul(self._bands_w, grid.reshape(n, nc, c).transpose(1, 2, 0))
        out[...] = self._scatter @ part.reshape(-1, n)
        out[self.n_bins] += rest
