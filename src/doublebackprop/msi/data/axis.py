"""The common m/z range of several imzML files, and what each file loses or lacks in it.

Rules (docs/msi-data.md):

* the common range is built from *all* files: by default the intersection of their measured
  ranges, so no file contributes values it did not measure;
* a requested range is checked against every file; a file that does not cover it is an error
  naming the file and its range, unless ``pad=True``, which fills the uncovered part with zeros
  and reports it;
* every file's report says which parts of its own range were cut.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["FileRange", "common_range"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileRange:
    """What the common range does to one file.

    ``mz_min``/``mz_max``: the file's measured range; ``cut``: parts of it outside the common
    range (dropped); ``padded``: parts of the common range the file did not measure (zeros,
    only with ``pad=True``).
    """

    file: str
    mz_min: float
    mz_max: float
    cut: tuple[tuple[float, float], ...]
    padded: tuple[tuple[float, float], ...]

    def describe(self) -> str:
        """One line for a log or a report."""
        parts = [f"{self.file}: measured {self.mz_min:.4f}–{self.mz_max:.4f}"]
        if self.cut:
            parts.append("cut " + ", ".join(f"{a:.4f}–{b:.4f}" for a, b in self.cut))
        if self.padded:
            parts.append("zero-padded " + ", ".join(f"{a:.4f}–{b:.4f}" for a, b in self.padded))
        return "; ".join(parts)


def _outside(lo: float, hi: float, a: float, b: float) -> tuple[tuple[float, float], ...]:
    """Parts of ``[lo, hi]`` outside ``[a, b]``."""
    out = []
    if lo < a:
        out.append((lo, min(hi, a)))
    if hi > b:
        out.append((max(lo, b), hi))
    return tuple(out)


def common_range(
    extents: Mapping[str, tuple[float, float]],
    *,
    requested: tuple[float, float] | None = None,
    pad: bool = False,
) -> tuple[tuple[float, float], tuple[FileRange, ...]]:
    """The range every file is reduced to, and a :class:`FileRange` per file.

    Parameters
    ----------
    extents : file name → its measured (min, max) m/z.
    requested : the wanted range; None takes the intersection of the files' ranges.
    pad : allow a requested range that a file does not cover (zeros there, reported).

    Examples
    --------
    >>> (lo, hi), rep = common_range({"a": (600.0, 2000.0), "b": (650.0, 2100.0)})
    >>> (lo, hi), rep[0].cut
    ((650.0, 2000.0), ((600.0, 650.0),))
    """
    if not extents:
        raise ValueError("no imzML file to take an m/z range from")
    for name, (a, b) in extents.items():
        if not a < b:
            raise ValueError(f"{name}: no m/z range (measured {a}–{b}; empty file?)")
    if requested is None:
        lo = max(a for a, _ in extents.values())
        hi = min(b for _, b in extents.values())
        if not lo < hi:
            listing = ", ".join(f"{n} {a:.4f}–{b:.4f}" for n, (a, b) in extents.items())
            raise ValueError(f"the imzML files share no m/z range: {listing}")
    else:
        lo, hi = (float(v) for v in requested)
        if not lo < hi:
            raise ValueError(f"m/z range: min {lo} must be below max {hi}")
        if not pad:
            for name, (a, b) in extents.items():
                if a > lo or b < hi:
                    raise ValueError(
                        f"{name}: measured m/z range {a:.4f}–{b:.4f} does not cover the "
                        f"requested range {lo:g}–{hi:g}; request a range inside every file "
                        "(the default is their common range) or pad with zeros explicitly"
                    )
    report = tuple(
        FileRange(
            file=name,
            mz_min=float(a),
            mz_max=float(b),
            cut=_outside(float(a), float(b), lo, hi),
            padded=_outside(lo, hi, float(a), float(b)),
        )
        for name, (a, b) in extents.items()
    )
    for r in report:
        if r.cut or r.padded:
            logger.info("%s", r.describe())
    return (lo, hi), report
