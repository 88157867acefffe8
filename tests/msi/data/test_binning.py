"""Binning from each spectrum's own points, the common m/z range and the range rules.

Inputs are written with pyImzML's own ``ImzMLWriter``; expected features come from an explicit
implementation inside this file (exact trapezoidal integration of the linear profile, a
centroid loop), never from the project's reader or writer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from doublebackprop.msi.data.dataset import load_table, plan_loading
from doublebackprop.msi.data.preprocess import Bin, uniform_edges


def _oracle_profile(mz: np.ndarray, v: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mean of the linear profile over each bin: trapezoids on all breakpoints (exact)."""
    out = np.zeros(len(edges) - 1)
    for k in range(len(edges) - 1):
        a, b = max(edges[k], mz[0]), min(edges[k + 1], mz[-1])
        if b <= a:
            continue
        grid = np.unique(np.concatenate([[a, b], mz[(mz > a) & (mz < b)]]))
        f = np.interp(grid, mz, v)
        out[k] = np.sum(0.5 * (f[1:] + f[:-1]) * np.diff(grid)) / (edges[k + 1] - edges[k])
    return out


def _oracle_centroid(mz: np.ndarray, v: np.ndarray, edges: np.ndarray) -> np.ndarray:
    out = np.zeros(len(edges) - 1)
    for m, val in zip(mz, v):
        for k in range(len(edges) - 1):
            last = k == len(edges) - 2
            if edges[k] <= m < edges[k + 1] or (last and m == edges[-1]):
                out[k] += val
    return out


def _tic(v: np.ndarray) -> np.ndarray:
    return v * len(v) / v.sum()


def write_pyimzml(
    path: Path,
    spectra: list[tuple[np.ndarray, np.ndarray]],
    *,
    mode: str = "processed",
    spec_type: str = "profile",
    coords: list[tuple[int, ...]] | None = None,
    **kw,
) -> Path:
    from pyimzml.ImzMLWriter import ImzMLWriter

    coords = coords or [(i + 1, 1) for i in range(len(spectra))]
    with ImzMLWriter(str(path), mode=mode, spec_type=spec_type, mz_dtype=np.float64, **kw) as w:
        for (m, v), c in zip(spectra, coords):
            w.addSpectrum(m, v, c)
    return path


def write_annotations(path: Path, files: dict[str, int], label: str = "t") -> Path:
    lines = ["file,x,y,label,patient,lab"]
    for f, n in files.items():
        lines += [f"{f},{i + 1},1,{label}{i % 2},p{f}{i % 2},{f[0]}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 120), st.floats(0.05, 3.0), st.integers(0, 2**31 - 1))
def test_bin_step_matches_explicit_integral_and_centroid_sum(n, width, seed):
    rng = np.random.default_rng(seed)
    mz = np.unique(rng.uniform(100, 120, n))
    x = rng.random((2, len(mz)))
    lo, hi = float(mz[0]), float(mz[-1])
    if hi - lo < width:
        return
    edges = lo + width * np.arange(int((hi - lo) // width) + 1)
    _, prof = Bin(tuple(edges), "profile")(mz, x)
    _, cent = Bin(tuple(edges), "centroid")(mz, x)
    for r in range(2):
        np.testing.assert_allclose(prof[r], _oracle_profile(mz, x[r], edges), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(cent[r], _oracle_centroid(mz, x[r], edges), rtol=1e-12)


def test_bin_refuses_bins_beyond_the_axis_unless_padded():
    mz = np.linspace(10.0, 20.0, 11)
    x = np.ones((1, 11))
    with pytest.raises(ValueError, match="cover only 10–20"):
        Bin(tuple(uniform_edges(8.0, 20.0, 1.0)), "profile")(mz, x)
    _, y = Bin(tuple(uniform_edges(8.0, 20.0, 1.0)), "profile", pad=True)(mz, x)
    np.testing.assert_array_equal(y[0], [0, 0] + [1.0] * 10)  # nothing copied from the edge


def test_processed_and_continuous_give_identical_features(tmp_path):
    # narrow peaks (a few points wide) on a non-uniform axis: the old bin_width/4 resampling
    # aliased them, giving different features for the same spectra in the two modes
    rng = np.random.default_rng(3)
    mz = np.sort(rng.uniform(700.0, 1000.0, 4000))
    spectra = []
    for _ in range(6):
        v = rng.gamma(2.0, 1.0, mz.size)
        for c in rng.uniform(705, 995, 20):
            v += 300 * np.exp(-0.5 * ((mz - c) / 0.02) ** 2)
        spectra.append((mz, v))
    for mode in ("continuous", "processed"):
        write_pyimzml(tmp_path / f"{mode}.imzML", spectra, mode=mode)
    edges = uniform_edges(710.0, 990.0, 0.5)
    feats = {}
    for mode in ("continuous", "processed"):
        ann = write_annotations(tmp_path / f"{mode}.csv", {f"{mode}.imzML": len(spectra)})
        feats[mode] = load_table(ann, mz_range=(710.0, 990.0), bin_width=0.5).intensities
    np.testing.assert_allclose(feats["processed"], feats["continuous"], rtol=1e-6, atol=0)
    for r, (m, v) in enumerate(spectra):
        ref = _oracle_profile(m, _tic(v), edges)
        np.testing.assert_allclose(feats["processed"][r], ref, rtol=1e-5)


def test_centroid_peak_list_gets_zeros_in_empty_bins(tmp_path):
    peaks = np.array([712.3, 845.05, 1033.7, 1500.2, 1999.9])
    other = np.array([650.0, 2050.0])  # a second spectrum makes the file range 650–2050
    spectra = [
        (peaks, np.array([5.0, 1.0, 2.0, 3.0, 4.0])),
        (other, np.array([1.0, 1.0])),
    ]
    write_pyimzml(tmp_path / "c.imzML", spectra, spec_type="centroid")
    ann = write_annotations(tmp_path / "c.csv", {"c.imzML": 2})
    t = load_table(ann, mz_range=(700.0, 2000.0), bin_width=1.0)
    assert t.intensities.shape == (2, 1300)
    assert np.count_nonzero(t.intensities[0]) == 5
    edges = uniform_edges(700.0, 2000.0, 1.0)
    ref = _oracle_centroid(peaks, _tic(spectra[0][1]), edges)
    np.testing.assert_allclose(t.intensities[0], ref, rtol=1e-6)
    assert np.count_nonzero(t.intensities[1]) == 0  # its peaks lie outside the range


def _two_labs(tmp_path: Path) -> tuple[Path, list]:
    rng = np.random.default_rng(5)
    mz_a = np.linspace(600.0, 2000.0, 3000)
    mz_b = np.linspace(700.0, 2100.0, 2500)
    sa = [(mz_a, rng.gamma(2.0, 1.0, mz_a.size)) for _ in range(4)]
    sb = [(mz_b, rng.gamma(2.0, 1.0, mz_b.size)) for _ in range(4)]
    write_pyimzml(tmp_path / "A.imzML", sa, mode="continuous")
    write_pyimzml(tmp_path / "B.imzML", sb, mode="continuous")
    return write_annotations(tmp_path / "ann.csv", {"A.imzML": 4, "B.imzML": 4}), sa + sb


def test_files_on_different_axes_use_their_intersection(tmp_path, caplog):
    ann, spectra = _two_labs(tmp_path)
    caplog.set_level("INFO")
    plan = plan_loading(ann, bin_width=2.0)
    assert plan.mz_range == (700.0, 2000.0)
    rep = {r.file: r for r in plan.ranges}
    assert rep["A.imzML"].cut == ((600.0, 700.0),) and rep["B.imzML"].cut == ((2000.0, 2100.0),)
    assert "A.imzML: measured 600.0000–2000.0000; cut 600.0000–700.0000" in caplog.text
    t = load_table(ann, bin_width=2.0)
    edges = uniform_edges(700.0, 2000.0, 2.0)
    for r, (m, v) in enumerate(spectra):
        np.testing.assert_allclose(t.intensities[r], _oracle_profile(m, _tic(v), edges), rtol=1e-5)


def test_requested_range_outside_a_file_is_an_error_or_explicit_padding(tmp_path):
    ann, spectra = _two_labs(tmp_path)
    with pytest.raises(ValueError, match=r"B\.imzML: measured m/z range 700\.0000–2100\.0000"):
        plan_loading(ann, mz_range=(650.0, 2000.0), bin_width=2.0)
    plan = plan_loading(ann, mz_range=(650.0, 2000.0), bin_width=2.0, pad=True)
    rep = {r.file: r for r in plan.ranges}
    assert rep["B.imzML"].padded == ((650.0, 700.0),) and rep["A.imzML"].padded == ()
    t = load_table(ann, mz_range=(650.0, 2000.0), bin_width=2.0, pad=True)
    assert np.all(t.intensities[4:, :25] == 0)  # B has no data in 650–700
    assert np.all(t.intensities[:4, :25] > 0)


def test_processed_data_without_bin_width_is_refused(tmp_path):
    write_pyimzml(tmp_path / "p.imzML", [(np.linspace(100, 200, 50), np.ones(50))] * 2)
    ann = write_annotations(tmp_path / "p.csv", {"p.imzML": 2})
    with pytest.raises(ValueError, match="not on one shared m/z axis"):
        plan_loading(ann)


def test_default_range_is_the_datas_own_range(tmp_path):
    # lipid data in 100–1000: the paper's 700–2000 crop must not apply to it
    mz = np.linspace(100.0, 1000.0, 900)
    spectra = [(mz, np.full(mz.size, 1.0 + i)) for i in range(2)]
    write_pyimzml(tmp_path / "lipid.imzML", spectra, mode="continuous")
    ann = write_annotations(tmp_path / "l.csv", {"lipid.imzML": 2})
    t = load_table(ann, bin_width=10.0)
    assert t.mz[0] == 105.0 and t.mz[-1] == 995.0 and t.intensities.shape == (2, 90)
    np.testing.assert_allclose(t.intensities, 1.0, rtol=1e-6)


def test_continuous_peak_list_bins_without_data_are_zero(tmp_path):
    # the axis of a continuous centroid file is the peak list itself: 5 points for 1 Da bins
    peaks = np.array([712.3, 845.05, 1033.7, 1500.2, 1999.9])
    spectra = [(peaks, np.array([5.0, 1.0, 2.0, 3.0, 4.0])), (peaks, np.ones(5))]
    write_pyimzml(tmp_path / "c.imzML", spectra, mode="continuous", spec_type="centroid")
    ann = write_annotations(tmp_path / "c.csv", {"c.imzML": 2})
    t = load_table(ann, bin_width=1.0)  # the peak list's own range 712.3-1999.9
    assert [np.count_nonzero(row) for row in t.intensities] == [5, 5]
    edges = 712.3 + np.arange(t.intensities.shape[1] + 1)
    np.testing.assert_allclose(
        t.intensities[0], _oracle_centroid(peaks, _tic(spectra[0][1]), edges), rtol=1e-6
    )
