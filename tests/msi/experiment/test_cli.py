"""``doublebackprop msi interlab`` and the demo entry points, on a tiny simulated cohort."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import pytest

from doublebackprop.msi import demo
from doublebackprop.msi.data.biomarkers import read_biomarkers
from doublebackprop.msi.experiment import cli as experiment_cli
from doublebackprop.msi.experiment import settings
from doublebackprop.msi.simulate.cohort import SimulationConfig, simulate_cohort

FAST = [
    "--epochs",
    "1",
    "--folds",
    "3",
    "--workers",
    "1",
    "--no-progress",
    "--bootstrap",
    "20",
    "--lambdas",
    "1e-2",
    "--bin-width",
    "2.0",
    "--intralab",
    "linear",
]


def tiny_config(seed: int = 0) -> SimulationConfig:
    return SimulationConfig.preset("tiny", seed=seed, patients_per_lab=6)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cohort")
    return simulate_cohort(out, tiny_config()).annotations


def _cli(argv: list[str]) -> int:
    from doublebackprop.cli import main

    return main(argv)


def _rewrite(src: Path, dst_dir: Path, edit) -> Path:
    """A copy of the annotation CSV (same folder, so the imzML paths resolve) edited row-wise."""
    with open(src, newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows, fields = edit(rows)
    path = src.parent / f"{dst_dir.name}.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return path


def test_interlab_command_writes_contract_outputs(cohort, tmp_path, capsys):
    out = tmp_path / "run"
    code = _cli(
        [
            "msi",
            "interlab",
            "--annotations",
            str(cohort),
            "--out",
            str(out),
            "--models",
            "isotopenet,isotopenet+drr,linear",
            "--biomarkers",
            str(cohort.parent / "biomarkers.csv"),
            *FAST,
        ]
    )
    assert code == 0
    records = json.loads((out / "results.json").read_text())
    assert isinstance(records, list) and records
    for r in records:
        assert r["model"] in {"isotopenet", "resnet1d", "linear"} and isinstance(r["drr"], bool)
        assert 0 <= r["spot_balanced_accuracy"] <= 1 and 0 <= r["patient_balanced_accuracy"] <= 1
        assert "relevance_on_biomarkers" in r
    keys = {(r["model"], r["drr"], r["direction"]) for r in records}
    for model, drr in (("isotopenet", False), ("isotopenet", True), ("linear", False)):
        assert {(model, drr, d) for d in ("A->B", "B->A", "pooled")} <= keys
    assert ("linear", False, "within-lab") in keys
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "isotopenet + DRR" in html
    assert (out / "results.csv").exists() and (out / "accuracy.png").exists()
    assert "Most relevant m/z" in html and "annotation file" in html and "DRR λ grid" in html
    assert (out / "class_maps_1.png").exists() and (out / "ion_images_1.png").exists()
    with open(out / "predictions.csv", newline="") as fh:
        spots = list(csv.DictReader(fh))
    truth = {(r["file"], r["x"], r["y"]): r["label"] for r in csv.DictReader(open(cohort))}
    # every test spot of every arm: inter-lab directions test every spot once per model
    n_interlab = sum(1 for s in spots if s["protocol"] == "interlab")
    assert n_interlab == 3 * len(truth)
    for s in spots:
        assert s["label"] == truth[(s["file"], s["x"], s["y"])]
        assert s["predicted"] in ("breast", "ovarian") and s["source"] != "" and s["target"] != ""
    printed = capsys.readouterr().out
    assert "pooled" in printed and "spot BA" in printed


def test_demo_entry_point_simulates_and_seed_changes_cohort(tmp_path, monkeypatch):
    import doublebackprop.msi.simulate.cohort as sim

    monkeypatch.setattr(sim, "SimulationConfig", lambda seed: tiny_config(seed))
    parser = argparse.ArgumentParser()
    demo.add_demo_arguments(parser)
    outs = []
    for seed in (0, 1):
        out = tmp_path / f"demo{seed}"
        args = parser.parse_args(
            ["--out", str(out), "--seed", str(seed), "--models", "linear", *FAST]
        )
        assert demo.run_demo(args) == 0
        assert (out / "report.html").exists()
        # the typer trained on lab A typed lab B's slides, scored against their annotations
        assert (out / "model" / "bundle.json").is_file()
        typed = json.loads((out / "typing" / "summary.json").read_text())
        assert typed["score"]["n_spots"] > 0 and len(typed["slides"]) >= 1
        assert "Slide typing" in (out / "report.html").read_text()
        recs = json.loads((out / "results.json").read_text())
        assert any(r["direction"] == "pooled" and "relevance_on_biomarkers" in r for r in recs)
        outs.append((out / "cohort" / "biomarkers.csv").read_text())
    assert outs[0] != outs[1]


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_lab", "lab"),
        ("single_class", "single class"),
        ("lab_lacks_class", "has no spots of class"),
        ("negative_lambda", "λ must be > 0"),
        ("mz_outside", "outside the data"),
        ("lrp_with_sweeps", "--drr-relevance lrp needs --engine adjoint or autograd"),
        ("negative_lrp_epsilon", "--lrp-epsilon must be >= 0"),
    ],
)
def test_bad_input_fails_before_training(cohort, tmp_path, capsys, monkeypatch, case, message):
    from doublebackprop.msi.experiment import protocol as interlab

    def boom(*a, **k):  # training must never start
        raise AssertionError("training started")

    monkeypatch.setattr(interlab.JobRunner, "run", boom)
    ann, extra = cohort, []
    if case == "no_lab":
        ann = _rewrite(
            cohort,
            tmp_path,
            lambda rows: (
                [{k: v for k, v in r.items() if k != "lab"} for r in rows],
                [k for k in rows[0] if k != "lab"],
            ),
        )
    elif case == "single_class":
        ann = _rewrite(
            cohort, tmp_path, lambda rows: ([{**r, "label": "breast"} for r in rows], list(rows[0]))
        )
    elif case == "lab_lacks_class":
        ann = _rewrite(
            cohort,
            tmp_path,
            lambda rows: (
                [r for r in rows if not (r["lab"] == "B" and r["label"] == "ovarian")],
                list(rows[0]),
            ),
        )
    elif case == "negative_lambda":
        extra = ["--lambdas=-1e-3"]
    elif case == "mz_outside":
        extra = ["--mz-range", "300", "2000"]
    elif case == "lrp_with_sweeps":
        extra = ["--drr-relevance", "lrp", "--engine", "sweeps"]
    elif case == "negative_lrp_epsilon":
        extra = ["--drr-relevance", "lrp", "--lrp-epsilon=-0.1"]
    code = _cli(
        ["msi", "interlab", "--annotations", str(ann), "--out", str(tmp_path / "o"), *FAST, *extra]
    )
    assert code == 2
    assert message in capsys.readouterr().err


def test_biomarker_csv_peaks_and_per_model_epochs(tmp_path):
    path = tmp_path / "bm.csv"
    path.write_text("mz,isotope_mz,adduct_mz\n1000.5,1000.5;1001.5,1022.48\n1200.0,,\n")
    assert read_biomarkers(path).tolist() == [1000.5, 1001.5, 1022.48, 1200.0]
    parser = argparse.ArgumentParser()
    experiment_cli.add_demo_arguments(parser)
    quick = settings.settings_from_args(parser.parse_args(["--out", "x"]))
    assert quick["epochs"] > quick["resnet_epochs"]  # the comparison arm trains shorter
    explicit = settings.settings_from_args(parser.parse_args(["--out", "x", "--epochs", "3"]))
    assert explicit["epochs"] == 3 and explicit["resnet_epochs"] is None  # --epochs: every net
    specs = settings.model_specs(("isotopenet", "resnet1d+drr", "linear"), quick)
    assert [s.epochs for s in specs] == [None, quick["resnet_epochs"], None]


def test_demo_on_fiedler_is_leave_one_site_out(fiedler_path, tmp_path):
    out = tmp_path / "f"
    argv = ["demo", "--fiedler", "--out", str(out), "--epochs", "1", "--bin-width", "20"]
    assert (
        _cli([*argv, "--models", "isotopenet+drr,linear", "--no-progress", "--workers", "1"]) == 0
    )
    records = json.loads((out / "results.json").read_text())
    assert {r["direction"] for r in records} == {
        "heidelberg->leipzig",
        "leipzig->heidelberg",
        "pooled",
    }
    assert all("relevance_on_biomarkers" not in r for r in records)  # no ground truth
    settings = json.loads((out / "settings.json").read_text())["settings"]
    assert settings["lambdas"] == [0.3] and settings["refit"] is True
    assert (out / "report.html").is_file()


def test_interlab_from_a_store_equals_interlab_from_the_files(cohort, tmp_path):
    """``--store`` (converted once) gives the same records as reading the imzML files."""
    files = sorted(str(p) for p in cohort.parent.glob("*.imzML"))
    store = tmp_path / "s.h5"
    convert = ["msi", "convert", *files, "--annotations", str(cohort), "--out", str(store)]
    assert _cli([*convert, "--bin-width", "2", "--mz-min", "700", "--mz-max", "2000"]) == 0
    i = FAST.index("--bin-width")
    fast = FAST[:i] + FAST[i + 2 :]  # the store fixed the axis
    runs = {}
    for name, source in (
        ("files", ["--annotations", str(cohort), "--mz-range", "700", "2000", "--bin-width", "2"]),
        ("store", ["--store", str(store)]),
    ):
        out = tmp_path / name
        argv = ["msi", "interlab", *source, "--out", str(out), "--models", "linear", *fast]
        assert _cli(argv) == 0
        runs[name] = json.loads((out / "results.json").read_text())
    assert runs["store"] == runs["files"]
    bad = ["msi", "interlab", "--store", str(store), "--out", str(tmp_path / "x"), *FAST]
    assert _cli(bad) == 2  # --bin-width with a store is refused


def test_full_follows_the_papers_lambda_convention():
    parser = argparse.ArgumentParser()
    experiment_cli.add_demo_arguments(parser)
    full = settings.settings_from_args(parser.parse_args(["--out", "x", "--full"]))
    quick = settings.settings_from_args(parser.parse_args(["--out", "x"]))
    assert full["lambda_convention"] == "batch_sum" and quick["lambda_convention"] == "per_sample"
    assert full["lambdas"][0] == pytest.approx(1e-2) and "resnet1d" in full["models"]
    assert "resnet1d" not in quick["models"]
    both = parser.parse_args(["--out", "x", "--full", "--lambda-convention", "per_sample"])
    assert settings.settings_from_args(both)["lambda_convention"] == "per_sample"
