"""Ordinary kinds of real input, written with pyImzML's own ``ImzMLWriter``: zlib compression,
z planes and duplicate pixels, large files under an address-space limit, annotation CSVs with
shifted columns, partial files after an exception."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from pyimzml.compression import ZlibCompression

from doublebackprop.msi.data.annotations import read_annotations
from doublebackprop.msi.data.dataset import load_table
from doublebackprop.msi.data.imzml import ImzMLWriter, open_imzml
from tests.msi.data.test_binning import write_pyimzml


def _spectra(n: int, length: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    mz = np.linspace(700.0, 1000.0, length)
    return [(mz, rng.gamma(2.0, 1.0, length).astype(np.float32)) for _ in range(n)]


@pytest.mark.parametrize("mode", ["continuous", "processed"])
def test_zlib_compressed_arrays_are_decompressed(tmp_path, mode):
    spectra = _spectra(5, 300)
    path = write_pyimzml(
        tmp_path / "z.imzML",
        spectra,
        mode=mode,
        mz_compression=ZlibCompression(),
        intensity_compression=ZlibCompression(),
    )
    assert "zlib compression" in path.read_text()
    with open_imzml(path) as r:
        assert r.compression == "zlib"
        for i, (m, v) in enumerate(spectra):
            got_m, got_v = r.spectrum(i)
            np.testing.assert_array_equal(got_m, m)
            np.testing.assert_array_equal(got_v, v)
        if mode == "continuous":
            np.testing.assert_array_equal(
                r.read_rows([3, 1]), np.stack([spectra[3][1], spectra[1][1]])
            )


def test_unsupported_compression_is_refused_by_name(tmp_path):
    path = write_pyimzml(tmp_path / "n.imzML", _spectra(2, 50))
    xml = path.read_text().replace(
        'accession="MS:1000576" name="no compression"',
        'accession="MS:1002312" name="MS-Numpress linear prediction compression"',
    )
    assert "Numpress" in xml
    path.write_text(xml)
    with pytest.raises(ValueError, match=r"n\.imzML: .*'MS-Numpress linear prediction"):
        open_imzml(path)


def test_duplicate_pixels_are_an_error_naming_both_spectra(tmp_path):
    path = write_pyimzml(tmp_path / "d.imzML", _spectra(3, 20), coords=[(1, 1), (2, 1), (1, 1)])
    with pytest.raises(ValueError, match=r"d\.imzML: spectra 0 and 2 are both at pixel x=1, y=1"):
        open_imzml(path)


def test_z_planes_are_kept_and_annotations_may_give_z(tmp_path):
    spectra = _spectra(4, 40)
    coords = [(1, 1, 1), (1, 1, 2), (2, 1, 1), (2, 1, 2)]
    write_pyimzml(tmp_path / "z.imzML", spectra, mode="continuous", coords=coords)
    with open_imzml(tmp_path / "z.imzML") as r:
        assert r.coordinates[:, 2].tolist() == [1, 2, 1, 2]
    ann = tmp_path / "a.csv"
    ann.write_text("file,x,y,z,label,patient,lab\nz.imzML,1,1,2,a,p1,A\nz.imzML,2,1,1,b,p2,A\n")
    t = load_table(ann, bin_width=10.0)
    assert t.z is not None and t.z.tolist() == [2, 1] and t.x.tolist() == [1, 2]
    np.testing.assert_allclose(t.intensities[0].sum() > 0, True)
    no_z = tmp_path / "b.csv"
    no_z.write_text("file,x,y,label,patient,lab\nz.imzML,1,1,a,p1,A\n")
    with pytest.raises(ValueError, match=r"b\.csv: line 2: .*several z planes \[1, 2\]"):
        load_table(no_z, bin_width=10.0)


def test_row_with_extra_fields_is_rejected_with_its_line(tmp_path):
    ann = tmp_path / "a.csv"
    ann.write_text(
        "file,x,y,label,patient,lab\nf.imzML,1,1,breast,p1,A\nf.imzML,2,1,breast, ductal,p2,A\n"
    )
    with pytest.raises(ValueError, match=r"a\.csv: line 3: 7 fields but the header has 6"):
        read_annotations(ann)


def test_near_duplicate_labels_and_shared_patients_are_noted(tmp_path):
    from doublebackprop.msi.data.annotations import AnnotationWarning

    ann = tmp_path / "a.csv"
    ann.write_text(
        "file,x,y,label,patient,lab\n"
        "f.imzML,1,1,Breast,p1,A\nf.imzML,2,1,breast ,p2,A\nf.imzML,3,1,ovarian,p3,A\n"
        "g.imzML,1,1,ovarian,p3,B\n"
    )
    with pytest.warns(AnnotationWarning) as rec:
        a = read_annotations(ann)
    assert len(rec) == 2
    assert any("'Breast' (line 2), 'breast' (line 3)" in n for n in a.notes)
    assert any(
        "patient 'p3' appears in several labs: 'A' (line 4), 'B' (line 5)" in n for n in a.notes
    )


def test_notes_are_recorded_with_the_table(tmp_path):
    from doublebackprop.msi.data.annotations import AnnotationWarning

    write_pyimzml(tmp_path / "f.imzML", _spectra(2, 40), mode="continuous")
    ann = tmp_path / "a.csv"
    ann.write_text("file,x,y,label,patient,lab\nf.imzML,1,1,Breast,p1,A\nf.imzML,2,1,breast,p2,A\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnnotationWarning)
        t = load_table(ann, bin_width=10.0)
    assert any("differ only in case" in n for n in t.notes)


def test_partial_file_is_removed_after_an_exception(tmp_path):
    from pyimzml.ImzMLParser import ImzMLParser

    path = tmp_path / "p.imzML"
    with pytest.raises(RuntimeError, match="disk full"):
        with ImzMLWriter(path, mode="continuous", mz=np.linspace(700, 800, 10)) as w:
            w.add_spectrum(np.ones(10), (1, 1))
            raise RuntimeError("disk full")
    assert not path.exists() and not path.with_suffix(".ibd").exists()
    with pytest.raises(OSError):
        ImzMLParser(str(path))


_BIG = textwrap.dedent("""
    import resource, sys, numpy as np
    from doublebackprop.msi.data.imzml import open_imzml
    path, margin_mb = sys.argv[1], int(sys.argv[2])
    r = open_imzml(path)  # default window: 64 MiB
    vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + margin_mb * 2**20, resource.RLIM_INFINITY))
    total = 0.0
    for s, block in r.iter_blocks(64):
        total += float(block.sum(dtype=np.float64))
    print(total)
""")


def test_file_larger_than_the_address_space_left_is_read_in_windows(tmp_path):
    """A 160 MB .ibd under a 128 MiB address-space margin (pyImzML's writer; a loop of
    pyImzML's getspectrum gives the reference sum)."""
    from pyimzml.ImzMLParser import ImzMLParser
    from pyimzml.ImzMLWriter import ImzMLWriter as PyWriter

    n, length = 400, 100_000
    mz = np.linspace(700.0, 2000.0, length)
    rng = np.random.default_rng(0)
    path = tmp_path / "big.imzML"
    with PyWriter(str(path), mode="continuous", spec_type="profile") as w:
        for i in range(n):
            w.addSpectrum(mz, rng.random(length).astype(np.float32), (i % 20 + 1, i // 20 + 1))
    assert os.path.getsize(path.with_suffix(".ibd")) > 160e6
    p = ImzMLParser(str(path))
    ref = sum(float(p.getspectrum(i)[1].sum(dtype=np.float64)) for i in range(n))
    res = subprocess.run(
        [sys.executable, "-c", _BIG, str(path), "128"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert float(res.stdout.strip()) == pytest.approx(ref, rel=1e-9)
