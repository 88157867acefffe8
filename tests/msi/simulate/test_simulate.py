"""The virtual cohort: contract files, structure, determinism, chemistry and the confounder."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from pyimzml.ImzMLParser import ImzMLParser

from doublebackprop.msi.data.dataset import load_table
from doublebackprop.msi.simulate.cohort import NA_SHIFT, SimulationConfig, mz_axis, simulate_cohort
from doublebackprop.msi.simulate.peptides import digest, embedded_proteome, isotope_envelope


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_contract_files(tiny_cohort):
    out = tiny_cohort.out_dir
    rows = _rows(tiny_cohort.annotations)
    assert {"file", "x", "y", "label", "patient", "lab", "core", "batch"} <= set(rows[0])
    assert {r["lab"] for r in rows} == {"A", "B"}
    assert {r["label"] for r in rows} == {"breast", "ovarian"}
    assert len(rows) == tiny_cohort.n_spectra == 2 * 4 * 1 * 3
    for f in {r["file"] for r in rows}:
        assert (
            not f.startswith("/")
            and (out / f).is_file()
            and (out / f).with_suffix(".ibd").is_file()
        )
    bm = _rows(tiny_cohort.biomarkers)
    assert len(bm) == 6 and all(700 < float(r["mz"]) < 2000 for r in bm)
    assert {r["higher_in"] for r in bm} == {"breast", "ovarian"}
    for r in bm:  # [M+Na]+ of the listed isotopes (those strong enough to be rendered)
        iso = [float(v) for v in r["isotope_mz"].split(";")]
        na = [float(v) for v in r["adduct_mz"].split(";")]
        assert 1 <= len(na) <= len(iso)
        assert na == pytest.approx([m + NA_SHIFT for m in iso[: len(na)]], abs=1e-3)
    truth = json.loads(tiny_cohort.ground_truth.read_text())
    ab = np.array([p["abundance"] for p in truth["peptides"]])
    lo, hi = np.quantile(ab, SimulationConfig().biomarker_abundance)
    by_mz = {round(p["mz"], 4): p["abundance"] for p in truth["peptides"]}
    assert all(lo <= by_mz[round(float(r["mz"]), 4)] <= hi for r in bm)
    assert truth["config"]["seed"] == 7 and len(truth["patients"]) == 8


def test_pyimzml_reads_simulated_files(tiny_cohort):
    rows = _rows(tiny_cohort.annotations)
    for f in tiny_cohort.imzml_files:
        p = ImzMLParser(str(f))
        mine = {(int(r["x"]), int(r["y"])) for r in rows if r["file"] == f.name}
        assert {c[:2] for c in p.coordinates} == mine
        mz, it = p.getspectrum(0)
        assert len(mz) == 3000 and np.all(it >= 0) and np.all(np.diff(mz) > 0)


def test_deterministic_and_seed_dependent(tmp_path, tiny_cohort):
    again = simulate_cohort(tmp_path / "a", SimulationConfig.preset("tiny", seed=7))
    for f, g in zip(tiny_cohort.imzml_files, again.imzml_files):
        assert f.with_suffix(".ibd").read_bytes() == g.with_suffix(".ibd").read_bytes()
    other = simulate_cohort(tmp_path / "b", SimulationConfig.preset("tiny", seed=8))
    assert (
        other.imzml_files[0].with_suffix(".ibd").read_bytes()
        != tiny_cohort.imzml_files[0].with_suffix(".ibd").read_bytes()
    )


def test_processed_mode_loads_like_continuous(tmp_path):
    kw = dict(seed=3, patients_per_lab=2, spots_per_core=2, n_points=12000)
    cfg = SimulationConfig.preset("tiny", **kw)
    a = simulate_cohort(tmp_path / "c", cfg)
    b = simulate_cohort(tmp_path / "p", SimulationConfig.preset("tiny", mode="processed", **kw))
    ta, tb = load_table(a.annotations, bin_width=1.0), load_table(b.annotations, bin_width=1.0)
    assert ta.intensities.shape == tb.intensities.shape
    # processed spectra are resampled onto a common grid before binning: nearly, not exactly, equal
    for u, v in zip(ta.intensities, tb.intensities):
        assert np.corrcoef(u, v)[0, 1] > 0.98


def test_isotope_envelope_closed_form():
    """M and M+1 of [M+H]+ against the closed forms prod p0^n and M * sum n p1/p0."""
    from pyteomics import mass

    seq = "LVNELTEFAK"
    env = isotope_envelope(seq, 12)  # 12 peaks hold all the probability: no renormalisation
    comp = dict(mass.Composition(sequence=seq))
    comp["H"] += 1
    assert comp == {"C": 53, "H": 87, "N": 12, "O": 17}
    ab = {e: [v[1] for k, v in sorted(mass.nist_mass[e].items()) if k and v[1] > 0] for e in comp}
    mono = np.prod([ab[e][0] ** n for e, n in comp.items()])
    m1 = mono * sum(n * ab[e][1] / ab[e][0] for e, n in comp.items())
    assert env[0] == pytest.approx(mono, rel=1e-6) and env[0] == pytest.approx(0.514, abs=1e-3)
    assert env[1] == pytest.approx(m1, rel=1e-6)
    assert env.sum() == pytest.approx(1.0)


def test_digest_gives_real_tryptic_peptides():
    peps = digest(embedded_proteome(), mz_min=600, mz_max=2100, rng=np.random.default_rng(0))
    seqs = {p.sequence for p in peps}
    assert "VDPVNFK" in seqs or "LRVDPVNFK" in seqs  # haemoglobin alpha
    assert all(p.sequence[-1] in "KR" or p.protein for p in peps)
    assert len(peps) > 200 and all(600 <= p.mz <= 2100 for p in peps)


def test_axis_is_tof_like():
    ax = mz_axis(SimulationConfig())
    d = np.diff(ax)
    assert ax[0] == pytest.approx(600) and ax[-1] == pytest.approx(2100)
    assert d[-1] / d[0] == pytest.approx(np.sqrt(2100 / 600), rel=1e-2)


def test_confounder_structure(tiny_cohort):
    truth = json.loads(tiny_cohort.ground_truth.read_text())["patients"]
    for lab, expect in (("A", {"breast": 1, "ovarian": 2}), ("B", {"breast": 2, "ovarian": 1})):
        for cls, batch in expect.items():
            got = [p["batch"] for p in truth.values() if p["lab"] == lab and p["label"] == cls]
            assert got and all(b == batch for b in got)  # tiny: 2 per class -> all in "its" batch


def test_batch_artefact_and_biomarker_signal(tmp_path):
    """Inside one lab a contaminant peak separates the classes; across labs it flips, while the
    biomarkers keep their direction."""
    cfg = SimulationConfig(
        seed=1, patients_per_lab=12, cores_per_patient=1, spots_per_core=4, n_points=6000
    )
    res = simulate_cohort(tmp_path / "m", cfg)
    t = load_table(res.annotations, bin_width=1.0)
    y = t.label_index()
    keratin = np.argmin(np.abs(t.mz - 842.51))
    diffs = {}
    for lab in "AB":
        m = t.lab == lab
        diffs[lab] = (
            t.intensities[m & (y == 1), keratin].mean()
            - t.intensities[m & (y == 0), keratin].mean()
        )
    assert diffs["A"] > 0 > diffs["B"]  # digest-residue batch holds ovarian in A, breast in B
    for r in _rows(res.biomarkers):
        b = np.argmin(np.abs(t.mz - float(r["mz"])))
        sign = 1 if r["higher_in"] == "ovarian" else -1
        v = np.log(t.intensities[:, b - 1 : b + 3].sum(1))  # both labs pooled: true direction
        assert sign * (v[y == 1].mean() - v[y == 0].mean()) > 0.15, r["mz"]


def test_config_validation():
    with pytest.raises(ValueError, match="biomarker_abundance"):
        SimulationConfig(biomarker_abundance=(0.9, 0.5))
    with pytest.raises(ValueError, match="confounding"):
        SimulationConfig(confounding=1.5)
    with pytest.raises(ValueError, match="size must be one of"):
        SimulationConfig.preset("huge")
    with pytest.raises(ValueError, match="classes"):
        SimulationConfig(classes=("a", "a"))


def test_uniprot_proteome_option(tmp_path):
    from doublebackprop.common.paths import data_home
    from doublebackprop.msi.simulate.peptides import human_entries

    fasta = data_home() / "proteins" / "DB.fasta.gz"
    if not fasta.is_file():
        pytest.skip(f"{fasta} absent (run scripts/fetch_data.sh: Debian mmseqs2-examples)")
    prot = human_entries(fasta)
    assert 150 < len(prot) < 300  # the sample holds 204 human entries
    res = simulate_cohort(tmp_path, SimulationConfig.preset("tiny", seed=0, proteome=str(fasta)))
    truth = json.loads(res.ground_truth.read_text())
    assert truth["n_peptides"] > 1000
