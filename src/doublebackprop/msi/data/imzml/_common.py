"""What the imzML reader and writer share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _norm_uuid(value: Any) -> str:
    return str(value).strip().strip("{}").replace("-", "").lower()


def _finite_nonnegative(values: np.ndarray) -> bool:
    """Whether every value is finite and >= 0, in one integer reduction for float arrays: read as
    unsigned integers, the bit patterns of the finite non-negative floats are exactly those
    below the pattern of +inf (the sign bit makes every negative, and -0.0, larger). False
    only sends the caller to its exact element-wise check."""
    if values.dtype.kind == "f" and values.dtype.itemsize in (4, 8):
        bits = values.view(np.uint32 if values.dtype.itemsize == 4 else np.uint64)
        return bool(bits.max() < np.array(np.inf, dtype=values.dtype).view(bits.dtype))
    return bool(np.isfinite(values.sum()) and values.min() >= 0)


def check_unique_pixels(path: Path, coordinates: np.ndarray) -> None:
    """Raise :class:`ValueError` naming the first two spectra of ``path`` at one (x, y, z)."""
    c = coordinates
    if not len(c):
        return
    order = np.lexsort((np.arange(len(c)), c[:, 2], c[:, 1], c[:, 0]))
    same = np.all(c[order][1:] == c[order][:-1], axis=1)
    if same.any():
        k = int(np.flatnonzero(same)[0])
        i, j = int(order[k]), int(order[k + 1])
        x, y, z = (int(v) for v in c[i])
        raise ValueError(
            f"{path}: spectra {i} and {j} are both at pixel x={x}, y={y}, z={z} "
            f"(duplicate coordinates; {int(same.sum())} duplicates in all)"
        )
