"""Real MALDI-TOF spectra (fiedler2009subset) as a SpectraTable."""

from __future__ import annotations

import numpy as np
import pytest

from doublebackprop.msi.data.fiedler import load_fiedler2009
from doublebackprop.msi.data.preprocess import Bin, uniform_edges
from doublebackprop.msi.data.splits import assert_patient_disjoint, grouped_stratified_kfold


def test_structure(fiedler_path):
    t = load_fiedler2009(fiedler_path)
    assert t.intensities.shape == (16, 42388)
    assert t.mz[0] == pytest.approx(1000.0, abs=0.1) and t.mz[-1] == pytest.approx(9999.7, abs=0.1)
    assert t.classes == ("control", "tumor")
    assert sorted(set(t.lab.tolist())) == ["heidelberg", "leipzig"]
    pats, counts = np.unique(t.patient, return_counts=True)
    assert len(pats) == 8 and set(counts.tolist()) == {2}
    for p in pats:  # replicate pairs share label and site
        m = t.patient == p
        assert len(set(t.label[m])) == 1 and len(set(t.lab[m])) == 1
        assert sorted(t.x[m].tolist()) == [1, 2]
    for lab in ("heidelberg", "leipzig"):
        assert sorted(np.unique(t.label[t.lab == lab], return_counts=True)[1].tolist()) == [4, 4]
    np.testing.assert_allclose(t.intensities.mean(1), 1.0, rtol=1e-5)  # TIC: mean 1
    folds = grouped_stratified_kfold(t.label, t.patient, n_splits=4, seed=0)
    assert_patient_disjoint(folds, t.patient)


def test_crop_and_bin(fiedler_path):
    full = load_fiedler2009(fiedler_path)
    t = load_fiedler2009(fiedler_path, mz_range=(2000, 4000), bin_width=2.0)
    assert t.intensities.shape == (16, 1000)
    # TIC over the full range, then the bins (from the full axis: no crop cuts the profile)
    step = Bin(tuple(uniform_edges(2000, 4000, 2.0)), "profile")
    mz, ref = step(full.mz, full.intensities.astype(np.float64))
    np.testing.assert_allclose(t.mz, mz)
    np.testing.assert_allclose(t.intensities, ref, rtol=1e-5)


def test_missing_file_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="fetch_data.sh"):
        load_fiedler2009(tmp_path / "x.RData")
