"""Exact binning of a spectrum from its own points (no resampling, nothing invented).

One rule per kind of data, the same for continuous and processed files:

* **profile** data: a bin's value is the integral of the piecewise-linear profile through the
  measured points over the bin, divided by the bin width (the profile's mean over the bin).
  The profile exists only between the first and the last measured point; nothing is
  extrapolated beyond them, so a bin outside that range receives nothing.
* **centroid** data: a bin's value is the sum of the centroid intensities whose m/z lies in it;
  a bin holding no centroid is 0.

Bins are half-open, ``[e_k, e_{k+1})``, except the last, which also holds its upper edge.
Because the rule depends only on a spectrum's own (m/z, intensity) pairs, the same spectrum
stored in continuous or processed mode gives the same features (up to float rounding).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "KINDS",
    "bin_operator",
    "bin_spectrum",
    "bin_weights",
    "inner_edges",
    "uncovered_bins",
    "uniform_edges",
]

#: the binning rules, by spectrum type
KINDS = ("profile", "centroid")


def _check(mz: np.ndarray, edges: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    mz = np.asarray(mz, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or not np.all(np.diff(edges) > 0):
        raise ValueError("edges must be a strictly increasing 1-D array of at least two values")
    if mz.ndim != 1 or (mz.size > 1 and not np.all(np.diff(mz) > 0)):
        raise ValueError("mz must be a strictly increasing 1-D array")
    return mz, edges


def bin_weights(
    mz: np.ndarray, edges: np.ndarray, kind: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point → bin weights of the binning rule (see the module docstring).

    Parameters
    ----------
    mz : (L,) strictly increasing m/z of the measured points.
    edges : (K + 1,) strictly increasing bin edges.
    kind : ``"profile"`` or ``"centroid"``.

    Returns
    -------
    ``(point, bin, weight)``: 1-D arrays; bin ``k`` gets ``sum(weight * values[point])`` over
    the entries with ``bin == k``.
    """
    mz, edges = _check(mz, edges, kind)
    n_bins = len(edges) - 1
    if kind == "centroid":
        k = np.searchsorted(edges, mz, side="right") - 1
        k[mz == edges[-1]] = n_bins - 1
        ok = (k >= 0) & (k < n_bins)
        return np.flatnonzero(ok), k[ok], np.ones(int(ok.sum()))
    lo, hi = max(mz[0], edges[0]) if mz.size else 0.0, min(mz[-1], edges[-1]) if mz.size else 0.0
    if mz.size < 2 or not lo < hi:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    # breakpoints: the points and the edges strictly inside (lo, hi), merged (two sorted runs;
    # a point equal to an edge gives an empty piece, whose weight is 0). Piece p starts at
    # br[p]; its segment and its bin advance by one at every point / edge passed.
    pts, eds = mz[(mz > lo) & (mz < hi)], edges[(edges > lo) & (edges < hi)]
    allv = np.concatenate([pts, eds])
    order = np.argsort(allv, kind="stable")
    is_point = order < len(pts)
    br = np.concatenate([[lo], allv[order], [hi]])
    p, q = br[:-1], br[1:]
    i0 = int(np.searchsorted(mz, lo, side="right")) - 1
    k0 = int(np.searchsorted(edges, lo, side="right")) - 1
    passed = np.concatenate([[0], np.cumsum(is_point)])
    i = i0 + passed  # segment [mz[i], mz[i+1]] holding the piece
    k = k0 + np.arange(len(p)) - passed  # edges passed = breakpoints passed - points passed
    m0, m1 = mz[i], mz[i + 1]
    scale = (q - p) / (2.0 * (m1 - m0) * (edges[k + 1] - edges[k]))
    w_left = scale * (2.0 * m1 - p - q)  # ∫ (m1 - m)/h dm over [p, q], per bin width
    w_right = scale * (p + q - 2.0 * m0)  # ∫ (m - m0)/h dm over [p, q], per bin width
    return np.concatenate([i, i + 1]), np.concatenate([k, k]), np.concatenate([w_left, w_right])


def bin_spectrum(mz: np.ndarray, values: np.ndarray, edges: np.ndarray, kind: str) -> np.ndarray:
    """One spectrum binned by the rule of ``kind``; (K,) float64.

    Parameters
    ----------
    mz : ndarray
        ``(M,)`` increasing m/z of the spectrum's points.
    values : ndarray
        ``(M,)`` intensities.
    edges : ndarray
        ``(K + 1,)`` bin edges.
    kind : {"profile", "centroid"}
        The rule: the integral of the linear profile over each bin divided by its width, or the sum
        of the centroids in each bin.

    Examples
    --------
    >>> bin_spectrum(np.array([0.0, 2.0]), np.array([0.0, 2.0]), np.array([0.0, 1.0, 2.0]),
    ...              "profile").tolist()
    [0.5, 1.5]
    """
    point, b, w = bin_weights(mz, edges, kind)
    v = np.asarray(values, dtype=np.float64)
    if v.shape != np.shape(mz):
        raise ValueError(f"values shape {v.shape} differs from mz shape {np.shape(mz)}")
    return np.bincount(b, weights=w * v[point], minlength=len(edges) - 1)


def bin_operator(mz: np.ndarray, edges: np.ndarray, kind: str) -> Any:
    """Sparse (L, K) matrix ``W`` with ``X @ W`` = every row of ``X`` (on ``mz``) binned."""
    import scipy.sparse as sp

    point, b, w = bin_weights(mz, edges, kind)
    return sp.csr_matrix((w, (point, b)), shape=(len(mz), len(edges) - 1))


def uncovered_bins(lo: float, hi: float, edges: np.ndarray) -> np.ndarray:
    """Boolean (K,) mask of the bins not entirely inside the measured range ``[lo, hi]``
    (edges within 1e-9 relative of the range count as inside: float rounding of the axis)."""
    e = np.asarray(edges, dtype=np.float64)
    tol = 1e-9 * max(abs(lo), abs(hi), 1.0)
    return (e[:-1] < lo - tol) | (e[1:] > hi + tol)


def uniform_edges(mz_min: float, mz_max: float, width: float) -> np.ndarray:
    """Bin edges of width ``width`` from ``mz_min`` (the last bin ends at or after ``mz_max``)."""
    if width <= 0 or not mz_min < mz_max:
        raise ValueError(
            f"bin width must be > 0 and mz_min < mz_max (got {width}, {mz_min}, {mz_max})"
        )
    n = int(np.ceil((mz_max - mz_min) / width - 1e-9))
    return mz_min + width * np.arange(n + 1, dtype=np.float64)


def inner_edges(mz_min: float, mz_max: float, width: float) -> np.ndarray:
    """Bin edges of width ``width`` from ``mz_min`` whose last bin ends at or before ``mz_max``
    (the bins of a measured range that must not reach beyond the data)."""
    if width <= 0 or not mz_min < mz_max:
        raise ValueError(
            f"bin width must be > 0 and mz_min < mz_max (got {width}, {mz_min}, {mz_max})"
        )
    n = int(np.floor((mz_max - mz_min) / width + 1e-9))
    if n < 1:
        raise ValueError(f"the range {mz_min:g}–{mz_max:g} is narrower than one bin of {width:g}")
    return mz_min + width * np.arange(n + 1, dtype=np.float64)
