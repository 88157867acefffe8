"""Known biomarker lists: a CSV with an ``mz`` column (and optional ``isotope_mz``, ``adduct_mz``)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

__all__ = ["read_biomarkers"]


def read_biomarkers(path: str | Path) -> np.ndarray:
    """All peak m/z of a biomarker CSV: its ``mz`` column, or the ``;``-separated ``isotope_mz``
    instead where given, plus ``adduct_mz``.

    Raises ``FileNotFoundError`` or ``ValueError`` naming the file (and line) when it cannot be
    read as such a list.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: biomarker file not found")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "mz" not in rows[0]:
        raise ValueError(f"{path}: a biomarker CSV needs an 'mz' column")
    peaks: list[float] = []
    for line, r in enumerate(rows, start=2):
        try:
            iso = (r.get("isotope_mz") or "").strip()
            peaks += [float(v) for v in iso.split(";")] if iso else [float(r["mz"])]
            adducts = (r.get("adduct_mz") or "").strip()
            peaks += [float(v) for v in adducts.split(";")] if adducts else []
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: line {line}: m/z values must be numbers ({exc})") from exc
    return np.asarray(peaks)
