"""What the commands do with real-world input (files written with pyImzML's own writer): the
store survives a failed convert, repairs are recorded per pixel, info counts invalid values,
demo/interlab check the range against every file and share --repair."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from doublebackprop.cli import main
from doublebackprop.msi.data.store import open_store
from tests.msi.data.test_binning import write_annotations, write_pyimzml


def _bad_values(tmp_path):
    """A continuous file with one NaN (spectrum 1) and one negative value (spectrum 2)."""
    rng = np.random.default_rng(0)
    mz = np.linspace(700.0, 1000.0, 200)
    spectra = [(mz, rng.gamma(2.0, 1.0, 200).astype(np.float32)) for _ in range(4)]
    spectra[1][1][17] = np.nan
    spectra[2][1][3] = -2.0
    path = write_pyimzml(tmp_path / "f.imzML", spectra, mode="continuous")
    ann = write_annotations(tmp_path / "a.csv", {"f.imzML": 3})  # 3 of the 4 spectra
    return path, ann


def _convert(path, ann, out, *extra):
    return main(["msi", "convert", str(path), "--annotations", str(ann), "--out", str(out), *extra])


def test_failed_convert_leaves_the_old_store_intact(tmp_path, capsys):
    path, ann = _bad_values(tmp_path)
    out = tmp_path / "store.h5"
    assert _convert(path, ann, out, "--repair", "--bin-width", "5") == 0
    before = out.read_bytes()
    listing = sorted(p.name for p in tmp_path.iterdir())
    assert _convert(path, ann, out, "--bin-width", "5") == 2  # NaN found while reading
    assert "NaN" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == listing  # no stub, no temporary file


def test_repairs_are_recorded_per_pixel_in_the_store(tmp_path, capsys):
    path, ann = _bad_values(tmp_path)
    out = tmp_path / "store.h5"
    assert _convert(path, ann, out, "--repair", "--bin-width", "5") == 0
    assert "f.imzML: 3 of 4 spectra annotated" in capsys.readouterr().out
    with open_store(out) as s:
        assert s.repaired is not None
        assert s.repaired.tolist() == ["", "invalid_intensities", "invalid_intensities"]
        assert s.x.tolist() == [1, 2, 3]
    capsys.readouterr()
    assert main(["msi", "info", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["repaired_spectra"] == 2


def test_info_counts_invalid_values(tmp_path, capsys):
    path, _ = _bad_values(tmp_path)
    assert main(["msi", "info", str(path)]) == 0
    captured = capsys.readouterr()
    counts = json.loads(captured.out)["intensity_values"]
    assert counts["values"] == 800 and counts["nan"] == 1 and counts["negative"] == 1
    assert "1 nan, 1 negative" in captured.err


def _two_labs(tmp_path):
    rng = np.random.default_rng(1)
    out = {}
    for name, (lo, hi) in {"A.imzML": (600.0, 2000.0), "B.imzML": (700.0, 2100.0)}.items():
        mz = np.linspace(lo, hi, 1400)
        write_pyimzml(
            tmp_path / name, [(mz, rng.gamma(2.0, 1.0, 1400)) for _ in range(4)], mode="continuous"
        )
        out[name] = 4
    return write_annotations(tmp_path / "ann.csv", out)


def test_experiment_range_check_uses_the_intersection_of_the_files(tmp_path):
    from doublebackprop.msi.experiment.runner import _load, data_record

    ann = _two_labs(tmp_path)
    # 650-2000 lies inside the union 600-2100 but B starts at 700
    with pytest.raises(ValueError, match=r"outside the data: .*B\.imzML: measured m/z range 700"):
        _load(ann, (650.0, 2000.0), 1.0)
    t = _load(ann, None, 1.0)  # user data: the common range by default
    assert (t.mz[0], t.mz[-1]) == (700.5, 1999.5)
    rec = data_record(t)
    assert any(
        "A.imzML: measured 600.0000–2000.0000; cut 600.0000–700.0000" in n for n in rec["notes"]
    )


def test_experiment_records_repaired_pixels(tmp_path):
    from doublebackprop.msi.experiment.runner import _load, data_record

    _, ann = _bad_values(tmp_path)
    with pytest.raises(ValueError, match="repair"):
        _load(ann, None, 5.0)
    rec = data_record(_load(ann, None, 5.0, repair=True))
    assert [(r["x"], r["repairs"]) for r in rec["repaired_spectra"]] == [
        (2, "invalid_intensities"),
        (3, "invalid_intensities"),
    ]


@pytest.mark.parametrize("command", ["demo", "interlab"])
def test_repair_option_is_accepted_by_the_experiment_commands(command):
    from doublebackprop.msi.experiment import cli as experiment_cli

    parser = argparse.ArgumentParser()
    if command == "demo":
        experiment_cli.add_demo_arguments(parser)
    else:
        experiment_cli._add_experiment_arguments(parser)
    assert parser.parse_args(["--out", "x", "--repair"]).repair is True


def test_default_range_user_data_vs_simulated_and_full():
    from doublebackprop.msi.experiment import cli as experiment_cli
    from doublebackprop.msi.experiment.settings import settings_from_args

    parser = argparse.ArgumentParser()
    experiment_cli.add_demo_arguments(parser)
    quick = parser.parse_args(["--out", "x"])
    assert settings_from_args(quick, simulated=False)["mz_range"] is None
    assert settings_from_args(quick, simulated=True)["mz_range"] == (700.0, 2000.0)
    full = parser.parse_args(["--out", "x", "--full"])
    assert settings_from_args(full, simulated=False)["mz_range"] == (700.0, 2000.0)


def test_convert_reports_and_stores_what_the_common_range_cut(tmp_path, capsys):
    ann = _two_labs(tmp_path)
    out = tmp_path / "s.h5"
    code = main(
        ["msi", "convert", str(tmp_path / "A.imzML"), str(tmp_path / "B.imzML"),
         "--annotations", str(ann), "--out", str(out), "--bin-width", "1"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "m/z range 700.0000–2000.0000" in printed
    assert "B.imzML: measured 700.0000–2100.0000; cut 2000.0000–2100.0000" in printed
    with open_store(out) as s:
        assert s.shape[1] == 1300
        assert any(n.startswith("A.imzML: measured 600.0000") for n in s.notes)
