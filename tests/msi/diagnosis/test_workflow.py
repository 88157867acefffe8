"""Train on one simulated lab, type the other lab's slides without their annotations."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from doublebackprop.cli import main
from doublebackprop.msi import load_model
from doublebackprop.msi.data.dataset import load_table
from doublebackprop.msi.diagnosis.train import TyperSettings, train_typer


@pytest.fixture(scope="module")
def bundle_dir(two_labs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "model"
    argv = ["msi", "train", "--annotations", str(two_labs["lab_a"]), "--out", str(out)]
    argv += ["--epochs", "2", "--validation-folds", "2", "--mz-range", "700", "2000"]
    assert main([*argv, "--no-progress"]) == 0
    return out


def test_bundle_records_settings_provenance_and_calibration(bundle_dir: Path):
    meta = json.loads((bundle_dir / "bundle.json").read_text())
    assert meta["model"]["architecture"] == "isotopenet"
    assert meta["classes"] == ["breast", "ovarian"]
    assert meta["provenance"]["settings"]["drr"] is True
    assert all(
        len(i["uuid"]) == 32 and len(i["ibd_sha1"]) == 40 for i in meta["provenance"]["inputs"]
    )
    assert {"torch", "numpy", "doublebackprop"} <= set(meta["provenance"]["versions"])
    cal = meta["metrics"]["calibration"]
    assert cal["temperature"] > 0 and 0 <= cal["ece_before"] <= 1
    assert meta["metrics"]["validation"]["chosen"] in (0.15, 0.3)
    assert (bundle_dir / "reliability.png").stat().st_size > 1000
    assert not any(p.name.endswith(".checkpoints") for p in bundle_dir.parent.iterdir())


def test_predict_types_the_other_lab_without_annotations(two_labs, bundle_dir, tmp_path):
    slides = [two_labs["b0"], two_labs["b1"]]
    out = tmp_path / "typed"
    assert (
        main(
            [
                "msi",
                "predict",
                str(bundle_dir),
                *map(str, slides),
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    with open(out / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:7] == ["file", "x", "y", "z", "predicted", "p_breast", "p_ovarian"]
    typer = load_model(bundle_dir)
    n = sum(typer.predict(s).probabilities.shape[0] for s in slides)
    assert len(rows) == n
    for r in rows:
        assert abs(float(r["p_breast"]) + float(r["p_ovarian"]) - 1) < 1e-5
        assert r["predicted"] == max(("breast", "ovarian"), key=lambda c: float(r[f"p_{c}"]))
    for s in slides:
        page = (out / f"{s.stem}.html").read_text()
        images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
        assert len(images) == 2
        import matplotlib.image as mpimg

        for data in images:  # every embedded picture decodes
            assert mpimg.imread(io.BytesIO(base64.b64decode(data))).ndim == 3
        assert "Most relevant m/z" in page and "None" not in page


def test_probabilities_and_relevance_equal_an_explicit_computation(two_labs, bundle_dir):
    typer = load_model(bundle_dir)
    slide = two_labs["b0"]
    pred = typer.predict(slide)
    # the same pixels through the training loader, then the network by hand
    table = load_table(two_labs["annotations"], mz_range=(700.0, 2000.0), bin_width=1.0)
    sel = table.file == slide.name
    net = typer.bundle.network().double()
    x = torch.from_numpy(table.intensities[sel].astype(np.float64)).requires_grad_()
    logits = net(x)
    p = torch.softmax(logits / typer.temperature, dim=1).detach().numpy()
    np.testing.assert_allclose(np.sort(pred.probabilities, 0), np.sort(p, 0), rtol=1e-4, atol=1e-5)
    k = p.argmax(1)
    (g,) = torch.autograd.grad(logits.gather(1, torch.from_numpy(k)[:, None]).sum(), x)
    r = (x * g).detach().numpy()
    assert pred.relevance is not None
    order_a = np.lexsort(pred.features.T)
    order_b = np.lexsort(table.intensities[sel].T)
    np.testing.assert_allclose(pred.relevance[order_a], r[order_b], rtol=1e-3, atol=1e-5)


def test_scored_against_annotations_and_anndata(two_labs, bundle_dir, tmp_path):
    pytest.importorskip("anndata")
    import anndata as ad

    out = tmp_path / "scored"
    argv = ["msi", "predict", str(bundle_dir), str(two_labs["b0"]), "--out", str(out)]
    argv += [
        "--annotations",
        str(two_labs["annotations"]),
        "--biomarkers",
        str(two_labs["biomarkers"]),
        "--anndata",
        "--no-progress",
    ]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert 0 <= summary["score"]["spot"] <= 1 and summary["score"]["n_spots"] > 0
    adata = ad.read_h5ad(out / "predictions.h5ad")
    assert adata.obsm["spatial"].shape == (adata.n_obs, 2)
    assert adata.n_vars == len(load_model(bundle_dir).mz)
    assert {"predicted", "p_breast", "p_ovarian", "x", "y", "z"} <= set(adata.obs.columns)


def test_bad_slides_are_refused_before_work_and_outputs_kept(
    two_labs, bundle_dir, tmp_path, capsys
):
    from pyimzml.ImzMLWriter import ImzMLWriter

    other = tmp_path / "lipids.imzML"
    with ImzMLWriter(str(other), mode="continuous") as w:  # another lab's lipid range
        for i in range(3):
            w.addSpectrum(np.linspace(100, 600, 500), np.ones(500), (i + 1, 1, 1))
    out = tmp_path / "typed"
    out.mkdir()
    (out / "keep.txt").write_text("earlier result")
    argv = ["msi", "predict", str(bundle_dir), str(two_labs["b0"]), str(other), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "lipids.imzML" in err and "does not cover the model's axis" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert main(["msi", "predict", str(tmp_path / "nothing"), str(other), "--out", str(out)]) == 2
    assert "not found" in capsys.readouterr().err
    nan = tmp_path / "nan.imzML"
    with ImzMLWriter(str(nan), mode="continuous", spec_type="profile") as w:
        mz = np.linspace(650, 2050, 3000)
        w.addSpectrum(mz, np.where(np.arange(3000) == 5, np.nan, 1.0), (1, 1, 1))
    assert main(["msi", "predict", str(bundle_dir), str(nan), "--out", str(out)]) == 2
    assert "nan.imzML" in capsys.readouterr().err
    assert (
        main(
            [
                "msi",
                "predict",
                str(bundle_dir),
                str(nan),
                "--out",
                str(out),
                "--repair",
                "--no-progress",
            ]
        )
        == 0
    )
    assert not (out / "keep.txt").exists() and (out / "predictions.csv").is_file()  # replaced
    centroid = tmp_path / "centroid.imzML"
    with ImzMLWriter(str(centroid), mode="continuous") as w:  # pyImzML's default: centroid
        w.addSpectrum(np.linspace(650, 2050, 3000), np.ones(3000), (1, 1, 1))
    assert main(["msi", "predict", str(bundle_dir), str(centroid), "--out", str(out)]) == 2
    assert "centroid spectra, but the model was trained on profile" in capsys.readouterr().err


def test_interrupted_training_resumes_to_the_same_model(two_labs, tmp_path):
    table = load_table(two_labs["lab_a"], mz_range=(700.0, 2000.0), bin_width=1.0)
    settings = TyperSettings(epochs=3, folds=2)
    whole = train_typer(table, settings)

    def stop_midway(name: str, fraction: float) -> None:
        if fraction > 0.5:
            raise KeyboardInterrupt

    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        train_typer(table, settings, checkpoint_dir=ckpt, progress=stop_midway)
    assert any(ckpt.iterdir())
    resumed = train_typer(table, settings, checkpoint_dir=ckpt)
    for k, v in whole.bundle.state.items():
        torch.testing.assert_close(resumed.bundle.state[k], v, rtol=0, atol=0)
    assert resumed.bundle.temperature == whole.bundle.temperature
