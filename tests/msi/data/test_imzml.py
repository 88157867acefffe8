"""imzML reading/writing: round trips, agreement with pyimzML, bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from pyimzml.ImzMLParser import ImzMLParser

from doublebackprop.msi.data.imzml import ImzMLWriter, open_imzml, write_imzml
from tests.msi.conftest import make_image


@pytest.mark.parametrize("mz_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("int_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("spectrum_type", ["profile", "centroid"])
def test_continuous_roundtrip_matches_pyimzml(tmp_path, mz_dtype, int_dtype, spectrum_type):
    path, mz, x = make_image(
        tmp_path,
        mz_dtype=mz_dtype,
        intensity_dtype=int_dtype,
        spectrum_type=spectrum_type,
        pixel_size_um=20.0,
    )
    p = ImzMLParser(str(path))
    assert p.spectrum_mode == spectrum_type
    with open_imzml(path) as r:
        assert r.mode == "continuous" and r.n_spectra == 6 and r.spectrum_type == spectrum_type
        assert r.intensity_dtype == np.dtype(int_dtype)
        np.testing.assert_array_equal(r.coordinates[:, :2], np.asarray(p.coordinates)[:, :2])
        block = r.read_block(0, 6)
        np.testing.assert_array_equal(r.read_rows([4, 1]), block[[4, 1]])
        for i in range(6):
            m, v = p.getspectrum(i)
            np.testing.assert_array_equal(block[i], v)
            np.testing.assert_array_equal(r.mz_axis(), m.astype(np.float64))
            np.testing.assert_array_equal(v, x[i].astype(int_dtype))
        np.testing.assert_allclose(r.mz_axis(), mz.astype(mz_dtype))


def test_processed_roundtrip_with_empty_spectrum(tmp_path):
    rng = np.random.default_rng(1)
    mzs = [np.sort(rng.uniform(700, 2000, k)) for k in (5, 0, 9)]
    its = [rng.random(len(m)) for m in mzs]
    path = write_imzml(
        tmp_path / "p.imzML",
        mzs,
        its,
        [(1, 1), (2, 1), (1, 3)],
        mode="processed",
        mz_dtype=np.float64,
        intensity_dtype=np.float64,
    )
    p = ImzMLParser(str(path))
    with open_imzml(path) as r:
        assert r.mode == "processed"
        for i in range(3):
            m, v = r.spectrum(i)
            pm, pv = p.getspectrum(i)
            np.testing.assert_array_equal(m, pm)
            np.testing.assert_array_equal(v, pv)
        assert r.repairs["empty"] == 1
        with pytest.raises(ValueError, match="processed"):
            r.read_block(0, 1)


def test_real_example_processed_matches_pyimzml(example_processed):
    p = ImzMLParser(str(example_processed))
    with open_imzml(example_processed) as r:
        assert r.mode == "processed" and r.n_spectra == 9
        np.testing.assert_array_equal(r.coordinates, np.asarray(p.coordinates))
        for i in range(r.n_spectra):
            m, v = r.spectrum(i)
            pm, pv = p.getspectrum(i)
            np.testing.assert_array_equal(m, pm.astype(np.float64))
            np.testing.assert_array_equal(v, pv)


def test_blocks_cover_file_in_order(tmp_path):
    path, _, x = make_image(tmp_path, nx=5, ny=5)
    with open_imzml(path) as r:
        got = np.concatenate([b for _, b in r.iter_blocks(7)])
    np.testing.assert_array_equal(got, x)


def test_missing_ibd(tmp_path):
    path, _, _ = make_image(tmp_path)
    path.with_suffix(".ibd").unlink()
    with pytest.raises(FileNotFoundError, match="img.ibd"):
        open_imzml(path)


def test_truncated_ibd_names_file_and_spectrum(tmp_path):
    path, _, _ = make_image(tmp_path)
    ibd = path.with_suffix(".ibd")
    ibd.write_bytes(ibd.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"img.imzML: spectrum 5 .*truncated"):
        open_imzml(path)


def test_uuid_mismatch(tmp_path):
    a, _, _ = make_image(tmp_path, "a.imzML", uuid="0" * 32)
    b, _, _ = make_image(tmp_path, "b.imzML", uuid="1" * 32)
    shutil.copy(b.with_suffix(".ibd"), a.with_suffix(".ibd"))
    with pytest.raises(ValueError, match="a.imzML: UUID"):
        open_imzml(a)


def test_nan_and_negative_intensities_raise_or_repair(tmp_path, caplog):
    mz = np.linspace(700, 2000, 10)
    x = np.ones((3, 10), dtype=np.float32)
    x[1, 3] = np.nan
    x[2, 0] = -1
    path = write_imzml(tmp_path / "bad.imzML", mz, x, [(1, 1), (2, 1), (3, 1)])
    with open_imzml(path) as r, pytest.raises(ValueError, match=r"bad.imzML: spectrum 1 .*NaN"):
        r.read_block(0, 3)
    with open_imzml(path, repair=True) as r:
        got = r.read_block(0, 3)
    assert np.isfinite(got).all() and (got >= 0).all()
    assert r.repairs["invalid_intensity_values"] == 2
    assert "set 2 NaN/negative" in caplog.text


def test_unsorted_and_mismatched_processed(tmp_path):
    path = write_imzml(
        tmp_path / "u.imzML",
        [np.array([900.0, 800.0, 1000.0])],
        [np.array([1.0, 2.0, 3.0])],
        [(1, 1)],
        mode="processed",
    )
    with open_imzml(path) as r, pytest.raises(ValueError, match=r"spectrum 0 .*not strictly"):
        r.spectrum(0)
    with open_imzml(path, repair=True) as r:
        m, v = r.spectrum(0)
    np.testing.assert_array_equal(m, [800, 900, 1000])
    np.testing.assert_array_equal(v, [2, 1, 3])
    # intensity length != m/z length in the XML
    text = path.read_text().replace(
        'name="external array length" value="3"', 'name="external array length" value="2"', 1
    )
    path.write_text(text)
    with open_imzml(path) as r, pytest.raises(ValueError, match="m/z array has 2 values"):
        r.spectrum(0)


def test_writer_validates_arguments(tmp_path):
    with pytest.raises(ValueError, match="needs the shared m/z"):
        ImzMLWriter(tmp_path / "a.imzML", mode="continuous")
    with ImzMLWriter(tmp_path / "b.imzML", mz=np.arange(5.0) + 1) as w:
        with pytest.raises(ValueError, match="5"):
            w.add_spectrum(np.ones(4), (1, 1))
        with pytest.raises(ValueError, match="1-based"):
            w.add_spectrum(np.ones(5), (0, 1))
    with pytest.raises(ValueError, match=".imzML"):
        ImzMLWriter(tmp_path / "c.txt", mz=np.arange(3.0))


def test_deterministic_output_with_uuid(tmp_path):
    a, _, _ = make_image(tmp_path, "a.imzML", uuid="ab" * 16)
    b, _, _ = make_image(tmp_path, "b.imzML", uuid="ab" * 16)
    assert a.with_suffix(".ibd").read_bytes() == b.with_suffix(".ibd").read_bytes()
    assert a.read_text() == b.read_text()
