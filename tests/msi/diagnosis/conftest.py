"""A tiny simulated two-lab cohort, lab A's annotations as their own CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from doublebackprop.msi.simulate.cohort import SimulationConfig, simulate_cohort


@pytest.fixture(scope="session")
def two_labs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("two_labs")
    cohort = simulate_cohort(out, SimulationConfig.preset("tiny", seed=11))
    rows = list(csv.DictReader(open(cohort.annotations, newline="")))
    lab_a = rows[0]["lab"]
    a_csv = out / "lab_a.csv"
    with open(a_csv, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(r for r in rows if r["lab"] == lab_a)
    b_files = sorted({out / r["file"] for r in rows if r["lab"] != lab_a})
    return {
        "dir": out,
        "annotations": cohort.annotations,
        "lab_a": a_csv,
        "biomarkers": cohort.biomarkers,
        **{f"b{i}": p for i, p in enumerate(b_files)},
    }
