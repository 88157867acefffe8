"""The ``doublebackprop msi`` commands and their contract."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from doublebackprop.cli import main
from doublebackprop.msi.data.store import open_store


def test_simulate_convert_info(tmp_path, capsys):
    out = tmp_path / "cohort"
    assert main(["msi", "simulate", "--out", str(out), "--seed", "2", "--size", "tiny"]) == 0
    rows = list(csv.DictReader(open(out / "annotations.csv")))
    assert {"file", "x", "y", "label", "patient", "lab"} <= set(rows[0])
    assert "mz" in next(csv.DictReader(open(out / "biomarkers.csv")))
    files = sorted(str(p) for p in out.glob("*.imzML"))
    store = tmp_path / "s.h5"
    assert (
        main(
            [
                "msi",
                "convert",
                *files,
                "--annotations",
                str(out / "annotations.csv"),
                "--out",
                str(store),
                "--bin-width",
                "1",
                "--mz-min",  # the default is the files' own common range (600-2100 here)
                "700",
                "--mz-max",
                "2000",
            ]
        )
        == 0
    )
    with open_store(store) as s:
        assert len(s) == len(rows) and s.shape[1] == 1300
    capsys.readouterr()
    assert main(["msi", "info", str(store)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["labs"] == ["A", "B"] and info["spectra"] == len(rows)
    assert main(["msi", "info", files[0]]) == 0
    assert json.loads(capsys.readouterr().out)["mode"] == "continuous"


def test_convert_bad_input_names_file(tiny_cohort, tmp_path, capsys):
    ann = str(tiny_cohort.annotations)
    files = [str(p) for p in tiny_cohort.imzml_files]
    assert (
        main(
            [
                "msi",
                "convert",
                str(tmp_path / "nope.imzML"),
                "--annotations",
                ann,
                "--out",
                str(tmp_path / "s.h5"),
            ]
        )
        == 2
    )
    assert "nope.imzML" in capsys.readouterr().err
    assert (
        main(["msi", "convert", files[0], "--annotations", ann, "--out", str(tmp_path / "s.h5")])
        == 2
    )
    assert "not given on the command line" in capsys.readouterr().err
    # a truncated .ibd among the inputs
    bad = tmp_path / "bad"
    bad.mkdir()
    for p in tiny_cohort.imzml_files:
        for q in (p, p.with_suffix(".ibd")):
            (bad / q.name).write_bytes(q.read_bytes())
    (bad / "annotations.csv").write_bytes(tiny_cohort.annotations.read_bytes())
    ibd = bad / tiny_cohort.imzml_files[1].with_suffix(".ibd").name
    ibd.write_bytes(ibd.read_bytes()[:1000])
    code = main(
        [
            "msi",
            "convert",
            *[str(bad / p.name) for p in tiny_cohort.imzml_files],
            "--annotations",
            str(bad / "annotations.csv"),
            "--out",
            str(tmp_path / "t.h5"),
        ]
    )
    assert code == 2
    assert tiny_cohort.imzml_files[1].name in capsys.readouterr().err


def test_console_entry_point(tmp_path):
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"),
    }
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "doublebackprop.cli",
            "msi",
            "simulate",
            "--out",
            str(tmp_path / "c"),
            "--size",
            "tiny",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "c" / "biomarkers.csv").is_file()


@pytest.mark.parametrize("argv", [["msi", "simulate"], ["msi", "convert", "x.imzML"]])
def test_missing_required_arguments(argv):
    with pytest.raises(SystemExit):
        main(argv)
