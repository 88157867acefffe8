"""Shared fixtures of the MSI data tests: a tiny simulated cohort and the real fixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from doublebackprop.common.paths import data_home
from doublebackprop.msi.data.imzml import write_imzml
from doublebackprop.msi.simulate.cohort import SimulationConfig, simulate_cohort


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("cohort")
    return simulate_cohort(out, SimulationConfig.preset("tiny", seed=7))


@pytest.fixture()
def example_processed() -> Path:
    p = data_home() / "imzml" / "Example_Processed.imzML"
    if not (p.is_file() and p.with_suffix(".ibd").is_file()):
        pytest.skip(f"real imzML fixture {p} absent (run scripts/fetch_data.sh)")
    return p


@pytest.fixture()
def fiedler_path() -> Path:
    p = data_home() / "maldiquant" / "fiedler2009subset.RData"
    if not p.is_file():
        pytest.skip(f"{p} absent (run scripts/fetch_data.sh)")
    pytest.importorskip("rdata", reason="rdata not installed")
    return p


def make_image(
    folder: Path,
    name: str = "img.imzML",
    *,
    nx: int = 3,
    ny: int = 2,
    n_mz: int = 50,
    seed: int = 0,
    **kw,
) -> tuple[Path, np.ndarray, np.ndarray]:
    """A small continuous image with a known axis and intensities; returns path, mz, X."""
    rng = np.random.default_rng(seed)
    mz = np.linspace(650.0, 2050.0, n_mz)
    x = rng.gamma(2.0, 1.0, (nx * ny, n_mz)).astype(np.float32)
    coords = [(i + 1, j + 1) for j in range(ny) for i in range(nx)]
    path = write_imzml(folder / name, mz, x, coords, **kw)
    return path, mz, x


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path
