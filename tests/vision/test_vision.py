"""Data loading (IDX validation), models, resumable training and the study CLI end to end."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from doublebackprop.cli import main
from doublebackprop.vision.datasets import ImageData, load_fashion_mnist, read_idx
from doublebackprop.vision.models import SmallCNN, SmallResNet
from doublebackprop.vision.training import TrainConfig, train_model


def write_idx(path: Path, array: np.ndarray, *, gz: bool = True, cut: int = 0) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    raw = raw[: len(raw) - cut]
    if gz:
        with gzip.open(path, "wb") as fh:
            fh.write(raw)
    else:
        path.write_bytes(raw)


def fake_fashion(root: Path, n_train: int = 300, n_test: int = 120) -> Path:
    """Class-dependent blobs: learnable in a few steps, so the pipeline has something to measure."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n)
        imgs = rng.integers(0, 60, (n, 28, 28))
        for i, c in enumerate(labels):
            r, q = divmod(int(c), 5)
            imgs[i, 4 + 10 * r : 12 + 10 * r, 2 + 5 * q : 7 + 5 * q] += 180
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", imgs)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


def test_read_idx_roundtrip_and_errors(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "ok.gz", a)
    write_idx(tmp_path / "ok.raw", a, gz=False)
    np.testing.assert_array_equal(read_idx(tmp_path / "ok.gz"), a)
    np.testing.assert_array_equal(read_idx(tmp_path / "ok.raw"), a)
    write_idx(tmp_path / "short.gz", a, cut=5)
    with pytest.raises(ValueError, match=r"short\.gz.*truncated"):
        read_idx(tmp_path / "short.gz")
    (tmp_path / "bad").write_bytes(b"\x12\x34\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="bad.*magic"):
        read_idx(tmp_path / "bad")
    (tmp_path / "corrupt.gz").write_bytes(gzip.compress(a.tobytes())[:10])
    with pytest.raises(ValueError, match="corrupt.gz"):
        read_idx(tmp_path / "corrupt.gz")
    with pytest.raises(FileNotFoundError, match="missing.gz"):
        read_idx(tmp_path / "missing.gz")


def test_fashion_loader_real_files_or_skip():
    from doublebackprop.common.paths import data_home

    root = data_home() / "fashion-mnist"
    if not (root / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not fetched into {root} (run scripts/fetch_data.sh)")
    test = load_fashion_mnist(root, split="test")
    assert test.images.shape == (10_000, 1, 28, 28) and test.labels.shape == (10_000,)
    assert 0 <= float(test.images.min()) and float(test.images.max()) <= 1
    assert torch.bincount(test.labels).tolist() == [1000] * 10


def test_fashion_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_fashion_mnist(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty.*train-images-idx3-ubyte"):
        load_fashion_mnist(tmp_path / "empty")
    root = fake_fashion(tmp_path / "fm", 20, 10)
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.zeros(7, dtype=np.uint8))
    with pytest.raises(ValueError, match="do not match"):
        load_fashion_mnist(root, split="test")


def test_models_shapes_and_wrong_channels():
    x = torch.rand(2, 1, 28, 28)
    assert SmallCNN(width=0.25)(x).shape == (2, 10)
    assert SmallResNet(width=0.25)(x).shape == (2, 10)
    with pytest.raises(RuntimeError, match="channels"):
        SmallCNN(width=0.25)(torch.rand(2, 3, 28, 28))


def test_training_resumes_without_losing_epochs(tmp_path):
    data = load_fashion_mnist(fake_fashion(tmp_path / "fm", 200, 20), split="train")
    ckpt = tmp_path / "ck" / "m.pt"
    cfg1 = TrainConfig(method="gradient-norm", lam=0.1, epochs=1, batch_size=50)
    torch.manual_seed(0)
    m1 = SmallCNN(width=0.25)
    s1 = train_model(m1, data, cfg1, checkpoint=ckpt, progress=False)
    assert s1.epochs_run == 1 and ckpt.is_file() and not ckpt.with_name("m.pt.tmp").exists()
    # "interrupted" after epoch 1: a fresh process asks for 2 epochs and resumes at epoch 2
    torch.manual_seed(123)
    m2 = SmallCNN(width=0.25)
    s2 = train_model(
        m2,
        data,
        TrainConfig(method="gradient-norm", lam=0.1, epochs=2, batch_size=50),
        checkpoint=ckpt,
        progress=False,
    )
    assert (s2.resumed_from, s2.epochs_run) == (1, 1)
    # identical to an uninterrupted 2-epoch run
    torch.manual_seed(0)
    m3 = SmallCNN(width=0.25)
    train_model(
        m3,
        data,
        TrainConfig(method="gradient-norm", lam=0.1, epochs=2, batch_size=50),
        progress=False,
    )
    for a, b in zip(m2.state_dict().values(), m3.state_dict().values()):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match=r"m\.pt.*different configuration"):
        train_model(
            SmallCNN(width=0.25),
            data,
            TrainConfig(method="plain", epochs=3),
            checkpoint=ckpt,
            progress=False,
        )


def test_adversarial_training_batches_are_pgd_iterates(tmp_path, monkeypatch):
    """Every training sample is a PGD point on the ε-sphere side of the ball, never a clean image.

    The batches the optimiser sees are recorded and each point is matched to its nearest clean
    training image: the distance must be > 0 (perturbed) and ≤ ε (inside the ball)."""
    import doublebackprop.vision.training as training

    data = load_fashion_mnist(fake_fashion(tmp_path / "fm", 100, 20), split="train")
    seen: list[torch.Tensor] = []
    real = training.objective

    def spy(net, x, y, **kw):
        seen.append(x.detach().clone())
        return real(net, x, y, **kw)

    monkeypatch.setattr(training, "objective", spy)
    torch.manual_seed(0)
    m = SmallResNet(width=0.25)
    eps = 0.5
    s = train_model(
        m,
        data,
        TrainConfig(method="adversarial", epsilon=eps, adv_steps=3, epochs=1, batch_size=50),
        progress=False,
    )
    assert s.epochs_run == 1 and not m.training
    x = torch.cat(seen)
    assert x.shape == data.images.shape
    d = torch.cdist(x.flatten(1).double(), data.images.flatten(1).double()).amin(1)
    assert (d > 1e-3).all(), f"{int((d <= 1e-3).sum())} of {len(d)} training samples are clean"
    assert (d <= eps + 1e-5).all()
    assert float(d.median()) > 0.5 * eps  # fixed steps move every sample well into the ball


def test_cli_study_end_to_end(tmp_path):
    root = fake_fashion(tmp_path / "fm")
    out = tmp_path / "out"
    argv = [
        "robustness",
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        str(root),
        "--quick",
        "--out",
        str(out),
        "--width",
        "0.25",
        "--epochs",
        "2",
        "--train-size",
        "300",
        "--attack-size",
        "12",
        "--lambdas",
        "0,1",
        "--adv-epsilon",
        "1",
        "--seeds",
        "0,1",
        "--no-progress",
    ]
    assert main(argv) == 0
    records = json.loads((out / "results.json").read_text())
    assert [(r["method"], r["seed"]) for r in records] == [
        ("plain", 0),
        ("gradient-norm", 0),
        ("adversarial", 0),
        ("plain", 1),
        ("gradient-norm", 1),
        ("adversarial", 1),
    ]
    rows = json.loads((out / "summary.json").read_text())["across_seeds"]
    assert [(r["config"], r["n_seeds"]) for r in rows] == [
        ("plain_lam0", 2),
        ("gradient-norm_lam1", 2),
        ("adversarial_eps1", 2),
    ]
    for row in rows:  # the seed mean is the mean of the two per-seed values
        per = [r["clean_accuracy"] for r in records if r["config"] == row["config"]]
        assert row["clean_accuracy"] == pytest.approx(sum(per) / 2)
    for r in records:
        assert r["n_correct_attacked"] == r["n_broken"] + r["n_failed"]
        assert len(r["median_distance_ci"]) == 2
    for r in records:
        for key in (
            "model",
            "lambda",
            "clean_accuracy",
            "median_distance",
            "median_linearized_distance",
            "median_alignment",
            "median_cosine_alignment",
            "median_alignment_ci",
            "n_failed",
            "robust_accuracy",
        ):
            assert key in r
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4
    assert "None" not in html and "Across seeds" in html and "seed 1" in html
    for name in (
        "alignment_vs_distance.png",
        "per_sample.png",
        "lambda_sweep.png",
        "saliency_grid.png",
        "results.csv",
    ):
        assert (out / name).is_file()
    # a second run reuses the finished checkpoints (no retraining) and gives the same records
    assert main(argv) == 0
    again = json.loads((out / "results.json").read_text())
    assert [r["clean_accuracy"] for r in again] == [r["clean_accuracy"] for r in records]


def test_cli_errors(tmp_path, capsys):
    assert (
        main(["robustness", "--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
        == 2
    )
    assert "--data-dir" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert (
        main(
            [
                "robustness",
                "--data-dir",
                str(tmp_path / "empty"),
                "--out",
                str(tmp_path / "o"),
                "--quick",
            ]
        )
        == 2
    )
    assert "train-images-idx3-ubyte" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["robustness", "--out", str(tmp_path / "o"), "--lambdas", "a,b"])


def test_image_data_validation():
    with pytest.raises(ValueError, match="ImageData"):
        ImageData(torch.rand(3, 28, 28), torch.zeros(3, dtype=torch.long), ("a",), "x")
    ok = ImageData(torch.rand(3, 1, 4, 4), torch.tensor([0, 1, 1]), ("a", "b"), "ok")
    assert len(ok) == 3 and len(ok.subset(torch.tensor([2]))) == 1
    with pytest.raises(ValueError, match=r"ImageData\(px\): pixel values must lie in \[0, 1\]"):
        ImageData(torch.rand(3, 1, 4, 4) * 255, torch.tensor([0, 1, 1]), ("a", "b"), "px")
    nan = torch.rand(3, 1, 4, 4)
    nan[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="pixel values"):
        ImageData(nan, torch.tensor([0, 1, 1]), ("a", "b"), "nan")
    with pytest.raises(ValueError, match=r"label 2 of image 1 is outside \[0, 1\]"):
        ImageData(torch.rand(3, 1, 4, 4), torch.tensor([0, 2, 1]), ("a", "b"), "lab")
    with pytest.raises(ValueError, match="floating point"):
        ImageData(
            torch.zeros(3, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1, 1]), ("a", "b"), "u8"
        )
    with pytest.raises(ValueError, match="int64"):
        ImageData(torch.rand(3, 1, 4, 4), torch.tensor([0.0, 1.0, 1.0]), ("a", "b"), "fl")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_evaluation_reports_failed_attacks_as_not_broken():
    """A model no attack can break: every correct image is 'not broken' (inf), none dropped."""
    from doublebackprop.vision.study import evaluate_model

    const = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    with torch.no_grad():
        const[1].weight.zero_()
        const[1].bias.copy_(torch.tensor([2.0, 0.0, -1.0]))
    g = torch.Generator().manual_seed(0)
    data = ImageData(
        torch.rand(10, 1, 8, 8, generator=g),
        torch.tensor([0, 0, 0, 0, 0, 0, 1, 2, 1, 0]),
        ("a", "b", "c"),
        "toy",
    )
    rec, per = evaluate_model(const, data, data, fast=True, seed=0, robust_epsilons=(0.5,))
    assert rec["n_correct_attacked"] == 7 and rec["n_failed"] == 7 and rec["n_broken"] == 0
    assert rec["median_distance"] == float("inf") and rec["failure_fraction"] == 1.0
    assert rec["robust_accuracy"] == {"0.5": pytest.approx(0.7)}
    assert all(v == float("inf") for v in rec["median_distance_by_attack"].values())
    assert np.isinf(per["distance"][per["correct"]]).all()
    rec, _ = evaluate_model(
        const, data, data, fast=True, seed=0, norm=float("inf"), robust_epsilons=(0.1,)
    )
    assert rec["norm"] == "Linf" and rec["n_failed"] == 7 and rec["median_distance"] == float("inf")
    assert any("MinimalPGD(Linf)" in k for k in rec["median_distance_by_attack"])


def test_cli_adv_epsilon_empty_means_none(tmp_path):
    import argparse

    from doublebackprop.vision.cli import register
    from doublebackprop.vision.study import StudyConfig, _plan

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["robustness", "--out", str(tmp_path), "--adv-epsilon", ""])
    assert args.adv_epsilon == ()
    plan = _plan(StudyConfig(out=tmp_path, adversarial_epsilons=args.adv_epsilon))
    assert [p.method for p in plan if p.method == "adversarial"] == []
    assert parser.parse_args(
        ["robustness", "--out", "o", "--adv-epsilon", "0.5,1"]
    ).adv_epsilon == (
        0.5,
        1.0,
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["robustness", "--out", "o", "--adv-epsilon", "0"])


def test_icml_mnist_preset_and_step_schedule(tmp_path):
    from doublebackprop.common.training import load_checkpoint
    from doublebackprop.vision.study import _plan, icml_mnist_config

    cfg = icml_mnist_config(tmp_path)
    assert (cfg.dataset, cfg.epochs, cfg.lr, cfg.lr_step, cfg.lr_gamma) == (
        "mnist",
        200,
        1e-3,
        80,
        0.1,
    )
    assert (cfg.weight_decay, cfg.reduction, cfg.lambdas) == (1e-6, "batch_mean", (0.0, 10.0))
    penalised = [p for p in _plan(cfg) if p.method == "gradient-norm"]
    assert {p.lam for p in penalised} == {10.0} and {p.seed for p in penalised} == {0, 1, 2}
    assert all(p.reduction == "batch_mean" and p.weight_decay == 1e-6 for p in penalised)
    # the schedule: lr · γ^(epoch // step), written into the optimizer state of each epoch
    data = load_fashion_mnist(fake_fashion(tmp_path / "fm", 40, 10), split="train")
    ckpt = tmp_path / "m.pt"
    tc = TrainConfig(epochs=3, batch_size=40, lr=0.01, lr_step=2, lr_gamma=0.5, weight_decay=0.1)
    torch.manual_seed(0)
    train_model(SmallCNN(width=0.25), data, tc, checkpoint=ckpt, progress=False)
    group = load_checkpoint(ckpt)["optimizer"]["param_groups"][0]
    assert group["lr"] == pytest.approx(0.005) and group["weight_decay"] == 0.1
    with pytest.raises(ValueError, match="lr_gamma"):
        TrainConfig(lr_gamma=0.0)


def test_saliency_grid_keeps_channels_and_one_scale(tmp_path):
    from doublebackprop.vision.plots import plot_saliency_grid

    rng = np.random.default_rng(0)
    images = rng.random((3, 3, 8, 8))
    a = rng.normal(size=(3, 3, 8, 8))
    b = 1e-4 * rng.normal(size=(3, 3, 8, 8))  # a far smaller gradient stays visible
    v = plot_saliency_grid(
        [("m_a", a, np.array([0, 1, 2])), ("m_b", b, np.array([2, 2, 0]))],
        images,
        tmp_path / "s.png",
        classes=("cat", "dog", "car"),
    )
    unit = [g.sum(1) / np.sqrt((g.reshape(3, -1) ** 2).sum(1))[:, None, None] for g in (a, b)]
    assert v == pytest.approx(max(np.abs(u).max() for u in unit))
    assert (tmp_path / "s.png").stat().st_size > 0
