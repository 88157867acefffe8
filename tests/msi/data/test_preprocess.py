"""Preprocessing steps against direct implementations and known signals."""

from __future__ import annotations

import numpy as np
import pytest

from doublebackprop.msi.data.preprocess import (
    Bin,
    Crop,
    LogTransform,
    PeakPicking,
    Pipeline,
    Recalibrate,
    SavitzkyGolay,
    SNIPBaseline,
    SqrtTransform,
    TICNormalize,
    TopHatBaseline,
    uniform_edges,
)


def _gauss(mz, mu, sd=0.3, h=100.0):
    return h * np.exp(-0.5 * ((mz - mu) / sd) ** 2)


def test_tic_uses_full_range_then_crop():
    mz = np.linspace(600, 2100, 1501)
    x = np.random.default_rng(0).random((4, 1501))
    m2, y = Pipeline((TICNormalize(), Crop(700, 2000)))(mz, x)
    full = x * 1501 / x.sum(1, keepdims=True)
    np.testing.assert_allclose(y, full[:, (mz >= 700) & (mz <= 2000)])
    assert m2[0] == 700 and m2[-1] == 2000


def test_tic_zero_spectra_explicit(caplog):
    x = np.zeros((2, 5))
    x[0] = 1
    _, y = TICNormalize()(np.arange(5.0), x)
    np.testing.assert_array_equal(y[1], 0)
    assert "1 all-zero spectra" in caplog.text
    with pytest.raises(ValueError, match="zero TIC"):
        TICNormalize(on_zero="raise")(np.arange(5.0), x)


def test_snip_and_tophat_remove_smooth_baseline_keep_peak():
    mz = np.linspace(700, 2000, 3000)
    base = 50 * np.exp(-(mz - 700) / 400)
    x = (base + _gauss(mz, 1200, 1.0))[None]
    for step in (
        SNIPBaseline(iterations=60, lls=False),
        SNIPBaseline(iterations=60),
        TopHatBaseline(half_window=60),
    ):
        _, y = step(mz, x)
        far = np.abs(mz - 1200) > 20
        assert np.abs(y[0, far]).max() < 5.0, step
        assert y[0, np.argmin(np.abs(mz - 1200))] > 90, step


def test_savgol_keeps_polynomial_and_smooths_noise():
    mz = np.linspace(0, 1, 200)
    poly = (1 + 2 * mz + 3 * mz**2)[None]
    np.testing.assert_allclose(SavitzkyGolay(11, 3)(mz, poly)[1], poly, atol=1e-9)
    noisy = poly + np.random.default_rng(0).normal(0, 0.1, poly.shape)
    assert np.std(SavitzkyGolay(21, 2)(mz, noisy)[1] - poly) < 0.06
    with pytest.raises(ValueError, match="odd"):
        SavitzkyGolay(10, 3)(mz, poly)


def test_peak_picking_and_transforms():
    mz = np.linspace(700, 800, 1001)
    x = (_gauss(mz, 750, 0.2) + np.random.default_rng(0).normal(0, 1, 1001) + 5)[None]
    _, p = PeakPicking(snr=10)(mz, x)
    assert np.count_nonzero(p) == 1 and abs(mz[np.flatnonzero(p[0])[0]] - 750) < 0.15
    np.testing.assert_allclose(SqrtTransform()(mz, np.full((1, 1001), 4.0))[1], 2.0)
    np.testing.assert_allclose(LogTransform()(mz, np.zeros((1, 1001)))[1], 0.0)


def test_recalibration_recovers_shift():
    mz = np.linspace(900, 1500, 12001)
    refs = (1000.0, 1400.0)
    shifted = sum(_gauss(mz, r * (1 + 150e-6), 0.05) for r in refs)[None]
    _, y = Recalibrate(reference_mz=refs, tolerance_ppm=400)(mz, shifted)
    for r in refs:
        w = np.abs(mz - r) < 0.5
        assert abs(mz[w][np.argmax(y[0, w])] - r) < 0.01


def test_pipeline_json_roundtrip():
    p = Pipeline(
        (
            SNIPBaseline(20),
            TICNormalize(),
            Bin(tuple(uniform_edges(700, 2000, 0.5)), "profile"),
        )
    )
    q = Pipeline.from_json(p.to_json())
    assert q == p
    mz = np.linspace(650, 2050, 500)
    x = np.random.default_rng(0).random((2, 500))
    np.testing.assert_array_equal(p(mz, x)[1], q(mz, x)[1])
    with pytest.raises(ValueError, match="unknown preprocessing step"):
        Pipeline.from_json('[{"step": "Nope"}]')


def test_shape_errors():
    with pytest.raises(ValueError, match=r"shape \(N, 5\)"):
        TICNormalize()(np.arange(5.0), np.ones((2, 4)))
    with pytest.raises(ValueError, match="no point"):
        Crop(1, 2)(np.arange(10.0) + 100, np.ones((1, 10)))
