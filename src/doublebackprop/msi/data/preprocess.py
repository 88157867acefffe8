"""Spectrum preprocessing: small composable steps, vectorised over a block of spectra.

Every step is a frozen dataclass called as ``mz, X = step(mz, X)`` with ``mz`` the (L,) m/z axis
and ``X`` an (N, L) block of spectra on that axis; steps that change the axis (crop, binning)
return the new axis. All parameters a step needs are explicit fields (the bin edges of
:class:`Bin` are fitted once, e.g. by :func:`uniform_edges`), so a :class:`Pipeline` serialised
with :meth:`Pipeline.to_json` and stored beside a dataset processes new data exactly like the
training data.

Order used by :func:`doublebackprop.msi.data.dataset.load_table` (docs/papers.md): optional baseline /
smoothing / recalibration on the full range → :class:`TICNormalize` over the *full measured range*
→ :class:`Bin` over e.g. 700–2000 (from the full axis, so no crop cuts the profile at the
range ends), or :class:`Crop` when the native axis is kept.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np

from doublebackprop.msi.data import binning
from doublebackprop.msi.data.binning import inner_edges, uniform_edges
from doublebackprop.msi.data.blockbin import BlockBinner

__all__ = [
    "Bin",
    "Crop",
    "LogTransform",
    "PeakPicking",
    "Pipeline",
    "Recalibrate",
    "SNIPBaseline",
    "SavitzkyGolay",
    "SqrtTransform",
    "Step",
    "TICNormalize",
    "TopHatBaseline",
    "inner_edges",
    "uniform_edges",
]

logger = logging.getLogger(__name__)
_REGISTRY: dict[str, type[Step]] = {}


def _as_block(mz: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mz = np.asarray(mz, dtype=np.float64)
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != mz.shape[0]:
        raise ValueError(f"spectra must have shape (N, {mz.shape[0]}), got {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    return mz, x


@dataclass(frozen=True)
class Step:
    """Base of all steps: ``mz, X = step(mz, X)``; subclasses implement :meth:`apply`."""

    name: ClassVar[str] = "step"

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        _REGISTRY[cls.__name__] = cls

    def __call__(self, mz: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mz, x = _as_block(mz, x)
        return self.apply(mz, x)

    def apply(self, mz: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The step on a block: axis ``mz`` ``(L,)`` and spectra ``x`` ``(N, L)`` → ``(mz', x')``."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """The step as JSON-ready data: its class name and every field."""
        d = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}
        return {"step": type(self).__name__, **d}


@dataclass(frozen=True)
class TICNormalize(Step):
    """Divide each spectrum by its total ion count over the whole axis it is given.

    The result has mean intensity ``target`` (i.e. ``X * target * L / sum(X)``), which keeps
    values of order one whatever the number of points. All-zero spectra cannot be normalised:
    ``on_zero="keep"`` keeps them as zeros and logs how many, ``"raise"`` raises.
    """

    target: float = 1.0
    on_zero: str = "keep"

    def apply(self, mz: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scale = self.scale(x.sum(axis=1, dtype=np.float64), x.shape[1])
        return mz, x * scale[:, None].astype(x.dtype)  # float32 in, float32 out

    def scale(self, tic: np.ndarray, n_points: int) -> np.ndarray:
        """``(N,)`` float64 factors ``target * n_points / tic`` (0 for a zero or non-finite TIC,
        or :class:`ValueError` with ``on_zero="raise"``).

        Parameters
        ----------
        tic : ``(N,)`` total ion counts (summed in float64).
        n_points : number of points each total was summed over.
        """
        zero = (tic <= 0) | ~np.isfinite(tic)
        if zero.any():
            if self.on_zero == "raise":
                raise ValueError(
                    f"TICNormalize: {int(zero.sum())} spectra have zero TIC "
                    f"(first: row {int(np.flatnonzero(zero)[0])} of the block)"
                )
            logger.warning("TICNormalize: %d all-zero spectra kept as zeros", int(zero.sum()))
        return np.where(zero, 0.0, self.target * n_points / np.where(zero, 1, tic))


@dataclass(frozen=True)
class Crop(Step):
    """Keep points with ``mz_min <= m/z <= mz_max``."""

    mz_min: float = 700.0
    mz_max: float = 2000.0

    def apply(self, mz: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.mz_min < self.mz_max:
            raise ValueError(f"Crop: mz_min {self.mz_min} must be below mz_max {self.mz_max}")
        lo, hi = np.searchsorted(mz, [self.mz_min, self.mz_max], side="left")
        hi = np.searchsorted(mz, self.mz_max, side="right")
        if hi <= lo:
            raise ValueError(
                f"Crop: no point of the axis {mz[0]:.2f}–{mz[-1]:.2f} in "
                f"[{self.mz_min}, {self.mz_max}]"
            )
        return mz[lo:hi], x[:, lo:hi]


@dataclass(frozen=True)
class Bin(Step):
    """Bin onto fixed ``edges`` (fitted once; stored with the dataset) by the rule of
    :mod:`doublebackprop.msi.data.binning`: ``method="profile"`` integrates the linear profile
    over each bin (divided by the bin width), ``"centroid"`` sums the centroids in each bin.

    For profile data the spectra's axis must cover every bin: a bin reaching beyond the first or
    last point raises :class:`ValueError`, unless ``pad=True``, which leaves the part outside the
    data at zero (the loader reports which files were padded). ``"mean"`` and ``"sum"`` (stores written
    by earlier versions) are read as ``"profile"`` and ``"centroid"``.
    """

    edges: tuple[float, ...] = field(default=())
    method: str = "profile"
    pad: bool = False
    _edge_array: ClassVar[np.ndarray]  # per instance: the edges converted once (not a field)

    def __post_init__(self) -> None:
        legacy = {"mean": "profile", "sum": "centroid"}
        object.__setattr__(self, "method", legacy.get(self.method, self.method))
        if self.method not in binning.KINDS:
            raise ValueError(f"Bin: method must be one of {binning.KINDS}, got {self.method!r}")
        if len(self.edges) < 2 or not np.all(np.diff(self.edges) > 0):
            raise ValueError("Bin: needs at least two strictly increasing edges")
        object.__setattr__(self, "_edge_array", np.asarray(self.edges, dtype=np.float64))

    def centers(self) -> np.ndarray:
        """``(K,)`` bin centres: the output axis."""
        return 0.5 * (self._edge_array[1:] + self._edge_array[:-1])

    def check_covers(self, lo: float, hi: float, what: str = "the spectra") -> None:
        """Raise unless ``[lo, hi]`` covers every bin (or ``pad``, or centroid data, whose bins
        without a centroid are 0 by the rule: nothing is interpolated)."""
        if self.method == "centroid" or self.pad:
            return
        if binning.uncovered_bins(lo, hi, self._edge_array).any():
            raise ValueError(
                f"Bin: the bins span {self.edges[0]:g}–{self.edges[-1]:g} but {what} cover only "
                f"{lo:g}–{hi:g}; choose a range inside the data or pad with zeros (pad=True)"
            )

    def bin_one(self, mz: np.ndarray, values: np.ndarray) -> np.ndarray:
        """One spectrum on its own axis, (K,) float64 (no coverage check)."""
        return binning.bin_spectrum(mz, values, self._edge_array, self.method)

    def _operator(self, mz: np.ndarray) -> BlockBinner:
        """The rule on ``mz`` as a block operator; kept for the last axis seen (the blocks
        of one file share it)."""
        cached = getattr(self, "_cached", None)
        if cached is not None and cached[0].shape == mz.shape and np.array_equal(cached[0], mz):
            return cached[1]
        op = BlockBinner(mz, self._edge_array, self.method)
        object.__setattr__(self, "_cached", (mz.copy(), op))
        return op

    def apply(self, mz: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.apply_normalised(mz, x, None)

    def apply_normalised(
        self, mz: np.ndarray, x: np.ndarray, tic: TICNormalize | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``self(*tic(mz, x))`` in one pass over the block: the TIC is linear and per spectrum,
        so the product that bins (:class:`BlockBinner`, float64) sums it too, and the binned
        rows are scaled afterwards (equal to the two steps up to float rounding).

        Parameters
        ----------
        mz : ``(L,)`` axis of the spectra.
        x : ``(N, L)`` spectra (the result has their dtype).
        tic : the normalisation fused into the product; None bins only.
        """
        mz, x = _as_block(mz, x)
        if mz.size:
            self.check_covers(float(mz[0]), float(mz[-1]), "the axis")
        binned, total = self._operator(mz)(x)  # the whole block in one product
        if tic is not None:
            binned = binned * tic.scale(total, x.shape[1])[:, None]
        return self.centers(), binned.astype(x.dtype)


@dataclass(frozen=True)
class SNIPBaseline(Step):
    """Subtract a SNIP baseline (Ryan et al. 1988) with ``iterations`` clipping windows,
    computed on the log-log-sqrt (LLS) scale when ``lls`` (as in MALDIquant)."""

    iterations: int = 40
    lls: bool = True

    def apply(self, mz: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y = np.maximum(x.astype(np.float64), 0)
        v = np.log(np.log(np.sqrt(y + 1) + 1) + 1) if self.lls else y.copy()
        n = v.shape[1]
        for k in range(min(self.iterations, (n - 1) // 2), 0, -1):
            mid = 0.5 * (v[:, : n - 2 * k] + v[:, 2 * k :])
            np.minimum(v[:, k : n - k], mid, out=v[:, k : n - k])
        base = (np.exp(np.exp(v) - 1) - 1) ** 2 - 1 if self.lls else v
        return mz, (x - base).astype(x.dtype)


@dataclass(frozen=True)
class TopHatBaseline(Step):
    """Subtract a morphological opening with a flat window of ``2*half_window+1`` points."""

    half_window: int = 50

    def apply(self, mz: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from scipy.ndimage import grey_opening

        base = grey_opening(x, size=(1, 2 * self.half_window + 1), mode="nearest")
        return mz, (x - base).astype(x.dtype)


@dataclass(frozen=True)
class SavitzkyGolay(Step):
    """Savitzky–Golay smoothing along m/z (``window`` odd, ``polyorder`` < window)."""

    window: int = 11
    polyorder: int = 3

    def apply(self, mz: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from scipy.signal import savgol_filter

        if self.window % 2 == 0 or self.polyorder >= self.window:
            raise ValueError(
                f"SavitzkyGolay: window must be odd and > polyorder, got "
                f"{self.window}, {self.polyorder}"
            )
        return mz, savgol_filter(x, self.window, self.polyorder, axis=1).astype(x.dtype)


@dataclass(frozen=True)
class SqrtTransform(Step):
    """Variance-stabilising square root of (clipped non-negative) intensities."""

    def apply(self, mz: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return mz, np.sqrt(np.maximum(x, 0))


@dataclass(frozen=True)
class LogTransform(Step):
    """``log(offset + max(x, 0))``."""

    offset: float = 1.0

    def apply(self, mz: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return mz, np.log(self.offset + np.maximum(x, 0))


@dataclass(frozen=True)
class PeakPicking(Step):
    """Keep local maxima above ``snr`` × the spectrum's noise (MAD) in a ±``half_window``
    neighbourhood; every other point becomes zero (same axis, sparse spectra)."""

    snr: float = 3.0
    half_window: int = 5

    def apply(self, mz: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from scipy.ndimage import maximum_filter1d

        med = np.median(x, axis=1, keepdims=True)
        noise = 1.4826 * np.median(np.abs(x - med), axis=1, keepdims=True)
        peak = (x == maximum_filter1d(x, 2 * self.half_window + 1, axis=1)) & (x > self.snr * noise)
        return mz, np.where(peak, x, 0).astype(x.dtype)


@dataclass(frozen=True)
class Recalibrate(Step):
    """Per-spectrum mass recalibration against known reference peaks.

    In each spectrum the most intense point within ``tolerance_ppm`` of every reference m/z is
    taken as the observed peak; a shift (one match) or a linear map m_true = a + b·m_obs (two or
    more) is fitted and the spectrum is re-interpolated onto the unchanged axis. Spectra with no
    match are left as they are (counted in the log).
    """

    reference_mz: tuple[float, ...] = ()
    tolerance_ppm: float = 300.0

    def apply(self, mz: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ref = np.asarray(self.reference_mz, dtype=np.float64)
        out = x.copy()
        unmatched = 0
        for i in range(x.shape[0]):
            obs, true = [], []
            for r in ref:
                lo, hi = np.searchsorted(
                    mz, [r * (1 - self.tolerance_ppm * 1e-6), r * (1 + self.tolerance_ppm * 1e-6)]
                )
                if hi - lo >= 3:
                    seg = x[i, lo:hi]
                    j = int(np.argmax(seg))
                    if 0 < j < len(seg) - 1 and seg[j] > 0:  # parabolic apex
                        a, b, c = seg[j - 1], seg[j], seg[j + 1]
                        den = a - 2 * b + c
                        d = 0.5 * (a - c) / den if den != 0 else 0.0
                        obs.append(np.interp(lo + j + d, np.arange(len(mz)), mz))
                        true.append(r)
            if not obs:
                unmatched += 1
                continue
            if len(obs) == 1:
                true_of_obs = mz + (true[0] - obs[0])
            else:
                b, a = np.polyfit(obs, true, 1)
                true_of_obs = a + b * mz
            out[i] = np.interp(mz, true_of_obs, x[i], left=0.0, right=0.0)
        if unmatched:
            logger.warning(
                "Recalibrate: %d spectra without any reference peak left unchanged", unmatched
            )
        return mz, out


@dataclass(frozen=True)
class Pipeline:
    """A sequence of steps applied in order; serialisable with :meth:`to_json`.

    Examples
    --------
    >>> p = Pipeline((TICNormalize(), Crop(700, 2000), Bin(tuple(uniform_edges(700, 2000, 0.5)))))
    >>> mz2, X2 = p(mz, X)                       # doctest: +SKIP
    >>> Pipeline.from_json(p.to_json()) == p
    True
    """

    steps: tuple[Step, ...] = ()

    def __call__(self, mz: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Apply the steps; a :class:`TICNormalize` directly followed by a :class:`Bin` runs
        fused (:meth:`Bin.apply_normalised`: one pass over the block instead of two)."""
        steps, i = self.steps, 0
        while i < len(steps):
            step, nxt = steps[i], steps[i + 1] if i + 1 < len(steps) else None
            if type(step) is TICNormalize and type(nxt) is Bin:  # exact types: no subclass
                mz, x = nxt.apply_normalised(mz, x, step)
                i += 2
            else:
                mz, x = step(mz, x)
                i += 1
        return mz, x

    def to_json(self) -> str:
        """The steps as JSON (see :meth:`from_json`)."""
        return json.dumps([s.to_dict() for s in self.steps])

    @classmethod
    def from_json(cls, text: str) -> Pipeline:
        """The pipeline :meth:`to_json` wrote; unknown steps are an error."""
        steps: list[Step] = []
        for d in json.loads(text):
            d = dict(d)
            kind = _REGISTRY.get(d.pop("step"))
            if kind is None:
                raise ValueError(f"unknown preprocessing step in {text[:80]!r}")
            steps.append(kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}))
        return cls(tuple(steps))

    def __add__(self, other: Pipeline | Sequence[Step]) -> Pipeline:
        more = other.steps if isinstance(other, Pipeline) else tuple(other)
        return Pipeline(self.steps + more)
