"""Annotation tables: parsing, validation errors naming the row, pixel location, load_table."""

from __future__ import annotations

import numpy as np
import pytest

from doublebackprop.msi.data.annotations import AnnotationColumns, locate_pixels, read_annotations
from doublebackprop.msi.data.dataset import load_table
from doublebackprop.msi.data.imzml import write_imzml
from tests.msi.conftest import make_image, write_csv

H = "file,x,y,label,patient,lab,core"


def test_pixel_rows_and_extra_columns(tmp_path):
    p = write_csv(
        tmp_path / "a.csv", H + ",batch", ["img.imzML,1,1,t,p1,A,c1,7", "img.imzML,2,1,t,p1,A,c1,7"]
    )
    ann = read_annotations(p)
    assert len(ann) == 2 and ann.files() == ["img.imzML"]
    assert ann.extra["batch"].tolist() == ["7", "7"]
    assert ann.resolve("img.imzML") == tmp_path.resolve() / "img.imzML"


def test_tsv_and_custom_columns(tmp_path):
    p = tmp_path / "a.tsv"
    p.write_text("X\tY\ttumour\tcase\n1\t1\tbreast\tp9\n")
    cols = AnnotationColumns(x="X", y="Y", label="tumour", patient="case")
    ann = read_annotations(p, columns=cols, default_file="img.imzML", default_lab="L")
    assert ann.label.tolist() == ["breast"] and ann.lab.tolist() == ["L"] and ann.core is None


def test_missing_columns(tmp_path):
    p = write_csv(tmp_path / "a.csv", "file,x,y,label", ["img.imzML,1,1,t"])
    with pytest.raises(ValueError, match=r"a.csv: missing column\(s\) patient, lab"):
        read_annotations(p)


def test_bad_integer_names_line(tmp_path):
    p = write_csv(tmp_path / "a.csv", H, ["img.imzML,1,1,t,p1,A,c", "img.imzML,x,1,t,p1,A,c"])
    with pytest.raises(ValueError, match="line 3: column 'x'"):
        read_annotations(p)


def test_conflicting_labels_for_patient(tmp_path):
    p = write_csv(tmp_path / "a.csv", H, ["img.imzML,1,1,t,p1,A,c", "img.imzML,2,1,n,p1,A,c"])
    with pytest.raises(ValueError, match="line 3: patient 'p1' labelled 'n' but 't' on line 2"):
        read_annotations(p)


def test_unknown_and_duplicate_pixels(tmp_path):
    make_image(tmp_path)
    unknown = write_csv(tmp_path / "u.csv", H, ["img.imzML,1,1,t,p1,A,c", "img.imzML,9,9,t,p1,A,c"])
    with pytest.raises(ValueError, match="u.csv: line 3: pixel x=9, y=9 is not in img.imzML"):
        load_table(unknown, mz_range=None)
    dup = write_csv(tmp_path / "d.csv", H, ["img.imzML,1,1,t,p1,A,c", "img.imzML,1,1,t,p1,A,c"])
    with pytest.raises(ValueError, match="line 3: pixel x=1, y=1 .* line 2 \\(duplicate pixel\\)"):
        load_table(dup, mz_range=None)


def test_regions_expand_and_overlap_is_duplicate(tmp_path):
    _, _, _ = make_image(tmp_path, nx=3, ny=2)
    hdr = "file,x_min,x_max,y_min,y_max,label,patient,lab"
    p = write_csv(tmp_path / "r.csv", hdr, ["img.imzML,1,2,1,2,t,p1,A", "img.imzML,3,3,1,2,n,p2,A"])
    ann = read_annotations(p)
    pix, idx = locate_pixels(
        ann, {"img.imzML": np.array([[i, j, 1] for j in (1, 2) for i in (1, 2, 3)])}
    )
    assert len(pix) == 6 and sorted(idx.tolist()) == list(range(6))
    assert pix.label[pix.x == 3].tolist() == ["n", "n"]
    ov = write_csv(
        tmp_path / "o.csv", hdr, ["img.imzML,1,2,1,2,t,p1,A", "img.imzML,2,3,1,1,t,p1,A"]
    )
    with pytest.raises(ValueError, match="line 3: pixel x=2, y=1 .*duplicate"):
        load_table(ov, mz_range=None)


def test_missing_imzml_file_named(tmp_path):
    p = write_csv(tmp_path / "a.csv", H, ["nothere.imzML,1,1,t,p1,A,c"])
    with pytest.raises(FileNotFoundError, match="nothere.imzML"):
        load_table(p)


def test_load_table_own_files_continuous(tmp_path):
    _, mz, x = make_image(tmp_path, nx=3, ny=2)
    rows = [
        f"img.imzML,{i},{j},{'t' if i < 3 else 'n'},p{i},A,c{i}" for j in (1, 2) for i in (1, 2, 3)
    ]
    t = load_table(write_csv(tmp_path / "a.csv", H, rows), mz_range=(700, 2000))
    full = x.astype(np.float64) * x.shape[1] / x.sum(1, keepdims=True)  # TIC over full range
    keep = (mz >= 700) & (mz <= 2000)
    np.testing.assert_allclose(t.intensities, full[:, keep], rtol=1e-5)
    assert t.classes == ("n", "t") and t.intensities.dtype == np.float32
    assert t.x.tolist() == [1, 2, 3, 1, 2, 3] and t.file.tolist() == ["img.imzML"] * 6


def test_load_table_processed_resampled_onto_common_grid(tmp_path):
    rng = np.random.default_rng(0)
    mzs = [np.sort(rng.uniform(600, 2100, 400)) for _ in range(3)]
    its = [rng.random(400) for _ in range(3)]
    write_imzml(tmp_path / "p.imzML", mzs, its, [(1, 1), (2, 1), (3, 1)], mode="processed")
    p = write_csv(tmp_path / "a.csv", H, [f"p.imzML,{i},1,t,p{i},A,c" for i in (1, 2, 3)])
    t = load_table(p, mz_range=(700, 2000), bin_width=1.0)
    assert t.intensities.shape == (3, 1300)
    np.testing.assert_allclose(t.mz[:2], [700.5, 701.5])
    assert np.isfinite(t.intensities).all() and (t.intensities >= 0).all()
