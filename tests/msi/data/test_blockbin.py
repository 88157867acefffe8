"""The fast reading path against slow, explicit ones.

* :class:`BlockBinner` (one compiled pass per block, TIC fused) against the explicit trapezoid
  integral and centroid loop of ``test_binning`` (1e-9: the explicit integral's own rounding
  on an axis near m/z 1000), against the slow path, one spectrum at a time through
  :func:`bin_spectrum` (1e-12), and against ``math.fsum``, in float64;
* the fused ``TICNormalize → Bin`` pipeline against the two steps applied one at a time and
  against the explicit integral of the TIC-normalised spectrum;
* the prefetching block reader against pyImzML's ``getspectrum`` on files written by pyImzML's
  own ``ImzMLWriter`` (last partial block, a block larger than the file, errors, early stop).
"""

from __future__ import annotations

import logging
import math
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from doublebackprop.msi.data.binning import bin_operator, bin_spectrum
from doublebackprop.msi.data.blockbin import BlockBinner
from doublebackprop.msi.data.imzml import open_imzml
from doublebackprop.msi.data.preprocess import Bin, Pipeline, TICNormalize, uniform_edges
from tests.msi.data.test_binning import _oracle_centroid, _oracle_profile, write_pyimzml

ORACLE = {"profile": _oracle_profile, "centroid": _oracle_centroid}


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 300),
    st.integers(0, 140),
    st.floats(0.02, 4.0),
    st.sampled_from(["profile", "centroid"]),
    st.sampled_from([np.float32, np.float64, np.int32]),
    st.integers(0, 2**31 - 1),
)
def test_block_binner_equals_explicit_binning_and_sum(n_points, rows, width, kind, dtype, seed):
    rng = np.random.default_rng(seed)
    mz = np.unique(rng.uniform(100, 130, n_points))
    edges = uniform_edges(rng.uniform(95, 115), rng.uniform(116, 135), width)
    x = (rng.gamma(2.0, 1.0, (rows, len(mz))) * (100 if dtype == np.int32 else 1)).astype(dtype)
    op = BlockBinner(mz, edges, kind)
    binned, tic = op(x)
    assert binned.shape == (rows, len(edges) - 1) and tic.shape == (rows,)
    assert binned.dtype == tic.dtype == np.float64
    x64 = x.astype(np.float64)
    for r in range(rows):  # 0 rows, whole tiles of eight spectra and the rest
        ref = ORACLE[kind](mz, x64[r], edges)
        atol = 1e-13 * max(ref.max(), 1)
        np.testing.assert_allclose(binned[r], ref, rtol=1e-9, atol=atol)
        slow = bin_spectrum(mz, x64[r], edges, kind)
        np.testing.assert_allclose(binned[r], slow, rtol=1e-12, atol=atol)
        assert tic[r] == pytest.approx(math.fsum(x64[r]), rel=1e-13)


@pytest.mark.parametrize("n_points", [20000, 60])
def test_any_layout_and_dtype_of_a_block_gives_the_same_bins(n_points):
    mz = np.linspace(600, 2100, n_points)  # 60 points: runs of two points, most bins empty
    edges = uniform_edges(700, 2000, 1.0)
    op = BlockBinner(mz, edges, "profile")
    x32 = np.random.default_rng(4).gamma(2.0, 1.0, (70, n_points)).astype(np.float32)
    x64 = x32.astype(np.float64)
    ref = op(x32)
    for x in (x64, np.asfortranarray(x64), x64[:, ::-1][:, ::-1], x32.astype(np.float16)):
        got = op(x)
        rtol = 1e-3 if x.dtype == np.float16 else 1e-14
        np.testing.assert_allclose(got[0], ref[0], rtol=rtol, atol=rtol)
        np.testing.assert_allclose(got[1], ref[1], rtol=rtol)
    for r in (0, 63, 64, 69):  # in a tile of eight and in the last, partial one
        slow = bin_spectrum(mz, x64[r], edges, "profile")
        np.testing.assert_allclose(ref[0][r], slow, rtol=1e-12, atol=1e-13)
    with pytest.raises(ValueError, match=rf"shape \(n, {n_points}\)"):
        op(np.ones((2, 5)))


def test_nan_and_inf_reach_exactly_the_bins_that_use_them():
    mz = np.linspace(600, 2100, 3000)
    edges = uniform_edges(700, 2000, 1.0)
    x = np.ones((10, 3000))
    x[2, 1000] = np.nan
    x[9, 2000] = np.inf
    binned, tic = BlockBinner(mz, edges, "profile")(x)
    ref = (bin_operator(mz, edges, "profile").T @ x.T).T  # sparse: stored weights only
    assert 0 < np.isnan(ref).sum() <= 2 and np.isinf(ref).sum() <= 2  # one point: its bins
    np.testing.assert_array_equal(np.isnan(binned), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(binned), np.isinf(ref))
    assert np.isnan(tic[2]) and np.isinf(tic[9]) and np.isfinite(np.delete(tic, [2, 9])).all()


def test_bin_step_bins_a_block_like_each_row_alone():
    rng = np.random.default_rng(3)
    mz = np.sort(rng.uniform(650, 2050, 3000))
    x = rng.gamma(2.0, 1.0, (150, 3000))
    edges = uniform_edges(700, 2000, 0.5)
    step = Bin(tuple(edges), "profile")
    _, y = step(mz, x)
    for r in (0, 63, 64, 149):
        np.testing.assert_allclose(y[r], _oracle_profile(mz, x[r], edges), rtol=1e-9)
        slow = bin_spectrum(mz, x[r], edges, "profile")
        np.testing.assert_allclose(y[r], slow, rtol=1e-12, atol=1e-14)


def _tic(v: np.ndarray) -> np.ndarray:
    return v * len(v) / math.fsum(v)


@pytest.mark.parametrize("kind", ["profile", "centroid"])
def test_fused_tic_and_bin_equal_the_two_steps(kind):
    rng = np.random.default_rng(5)
    mz = np.sort(rng.uniform(600, 2100, 5000))
    x = rng.gamma(2.0, 1.0, (70, 5000))
    edges = uniform_edges(700, 2000, 1.0)
    tic, step = TICNormalize(target=2.0), Bin(tuple(edges), kind)
    fused = Pipeline((tic, step))(mz, x)[1]
    np.testing.assert_allclose(fused, step(*tic(mz, x))[1], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(fused, step.apply_normalised(mz, x, tic)[1], rtol=0, atol=0)
    for r in (0, 69):
        ref = ORACLE[kind](mz, 2.0 * _tic(x[r]), edges)
        np.testing.assert_allclose(fused[r], ref, rtol=1e-9, atol=1e-14)
    x32 = x.astype(np.float32)  # float32 in, float32 out, computed in float64 inside
    y32 = Pipeline((tic, step))(mz, x32)[1]
    assert y32.dtype == np.float32
    ref = ORACLE[kind](mz, 2.0 * _tic(x32[3].astype(np.float64)), edges)
    np.testing.assert_allclose(y32[3], ref, rtol=1e-6, atol=1e-7)


def test_fused_path_keeps_the_zero_tic_rules(caplog):
    mz = np.linspace(690, 2010, 400)
    x = np.ones((3, 400))
    x[1] = 0.0
    pipe = Pipeline((TICNormalize(), Bin(tuple(uniform_edges(700, 2000, 10.0)), "profile")))
    with caplog.at_level(logging.WARNING):
        y = pipe(mz, x)[1]
    assert "1 all-zero spectra kept as zeros" in caplog.text
    np.testing.assert_array_equal(y[1], 0.0)
    np.testing.assert_allclose(y[0], 1.0, rtol=1e-12)
    strict = Pipeline((TICNormalize(on_zero="raise"), pipe.steps[1]))
    with pytest.raises(ValueError, match=r"1 spectra have zero TIC \(first: row 1"):
        strict(mz, x)


def test_a_tic_subclass_is_not_fused():
    class Doubled(TICNormalize):
        def apply(self, mz, x):
            return mz, 2.0 * x

    mz = np.linspace(690, 2010, 300)
    x = np.random.default_rng(0).random((2, 300))
    step = Bin(tuple(uniform_edges(700, 2000, 10.0)), "profile")
    np.testing.assert_allclose(Pipeline((Doubled(), step))(mz, x)[1], step(mz, 2.0 * x)[1])


def _continuous(tmp_path, n=11, length=400, bad=None):
    rng = np.random.default_rng(2)
    mz = np.linspace(600.0, 2100.0, length)
    x = rng.gamma(2.0, 1.0, (n, length)).astype(np.float32)
    if bad is not None:
        x[bad[0], 7] = bad[1]
    spectra = [(mz, row) for row in x]
    path = write_pyimzml(
        tmp_path / "c.imzML",
        spectra,
        mode="continuous",
        intensity_dtype=np.float32,
        coords=[(i % 4 + 1, i // 4 + 1) for i in range(n)],
    )
    return path


@pytest.mark.parametrize("block", [1, 3, 11, 64])
def test_prefetching_blocks_equal_pyimzml_and_the_plain_reader(tmp_path, block):
    from pyimzml.ImzMLParser import ImzMLParser

    path = _continuous(tmp_path)
    p = ImzMLParser(str(path))
    with open_imzml(path) as r:
        plain = list(r.iter_blocks(block))
        fetched = list(r.iter_blocks(block, prefetch=True))
    assert [s for s, _ in fetched] == list(range(0, 11, block)) == [s for s, _ in plain]
    got = np.concatenate([b for _, b in fetched])
    assert got.shape == (11, 400)  # the last block is partial, or one block holds everything
    for i in range(11):
        np.testing.assert_array_equal(got[i], p.getspectrum(i)[1])
    np.testing.assert_array_equal(got, np.concatenate([b for _, b in plain]))
    with open_imzml(path) as r:  # cast in the reading thread
        cast = list(r.iter_blocks(block, prefetch=True, dtype=np.float64))
    assert all(b.dtype == np.float64 for _, b in cast)
    np.testing.assert_array_equal(np.concatenate([b for _, b in cast]), got.astype(np.float64))


def _prefetch_threads() -> int:
    return sum(t.name == "prefetch" and t.is_alive() for t in threading.enumerate())


def test_prefetching_reader_raises_at_the_bad_block_and_stops_when_closed(tmp_path):
    path = _continuous(tmp_path, bad=(7, np.nan))
    before = _prefetch_threads()
    with open_imzml(path) as r:
        blocks = r.iter_blocks(3, prefetch=True)
        assert next(blocks)[0] == 0 and next(blocks)[0] == 3
        with pytest.raises(ValueError, match=r"c.imzML: spectrum 7 .*NaN"):
            next(blocks)
        early = r.iter_blocks(1, prefetch=True)
        next(early)
        early.close()  # the caller stops early: the reading thread ends
    assert _prefetch_threads() == before
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        open_imzml(path).iter_blocks(0)


@pytest.mark.parametrize("value", [np.inf, -np.inf, -1.0, -0.0])
def test_block_check_of_special_values(tmp_path, value):
    path = _continuous(tmp_path, bad=(4, value))
    with open_imzml(path) as r:
        if value == 0:  # -0.0 is a valid zero intensity
            assert np.signbit(r.read_block(0, 11)[4, 7])
            return
        with pytest.raises(ValueError, match=r"spectrum 4 .*(NaN/inf|negative)"):
            r.read_block(0, 11)


def test_a_used_bin_step_still_pickles_and_copies():
    import copy
    import pickle

    mz = np.linspace(690, 2010, 300)
    x = np.random.default_rng(0).random((2, 300))
    step = Bin(tuple(uniform_edges(700, 2000, 10.0)), "profile")
    y = step(mz, x)[1]  # caches the block operator of this axis
    for other in (pickle.loads(pickle.dumps(step)), copy.deepcopy(step)):
        assert other == step
        np.testing.assert_array_equal(other(mz, x)[1], y)


def test_block_reader_reuses_its_buffers_only_for_dropped_blocks(tmp_path):
    from pyimzml.ImzMLParser import ImzMLParser

    path = _continuous(tmp_path, n=40)
    p = ImzMLParser(str(path))
    with open_imzml(path) as r:
        owners = set()
        for s, block in r.iter_blocks(4, prefetch=True):  # dropped after use
            owners.add(block.base.ctypes.data if block.base is not None else block.ctypes.data)
            for k in range(len(block)):
                np.testing.assert_array_equal(block[k], p.getspectrum(s + k)[1])
        assert len(owners) <= 4  # the pool's buffers, not one per block
        kept = list(r.iter_blocks(4, prefetch=True))  # all kept: none is overwritten
    got = np.concatenate([b for _, b in kept])
    for i in range(40):
        np.testing.assert_array_equal(got[i], p.getspectrum(i)[1])
