"""The model bundle: exact round trip, and refusal of corrupt, foreign or unsafe bundles."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from doublebackprop.msi.data.preprocess import Bin, Crop, Pipeline, TICNormalize, uniform_edges
from doublebackprop.msi.diagnosis.bundle import (
    Bundle,
    LinearScores,
    ModelConfig,
    build_network,
    load_bundle,
    save_bundle,
)
from doublebackprop.msi.models import LinearBaseline


def _bundle(seed: int = 0) -> Bundle:
    edges = uniform_edges(700.0, 760.0, 1.0)
    cfg = ModelConfig("isotopenet", len(edges) - 1, 2, {"dropout": 0.3})
    torch.manual_seed(seed)
    net = build_network(cfg)
    return Bundle(
        config=cfg,
        state=net.state_dict(),
        pipeline=Pipeline((TICNormalize(), Crop(700.0, 760.0), Bin(tuple(edges), "mean"))),
        mz=0.5 * (edges[1:] + edges[:-1]),
        classes=("breast", "ovarian"),
        temperature=1.7,
        metrics={"calibration": {"ece_before": 0.1}},
        provenance={"inputs": [{"file": "a.imzML", "uuid": "0" * 32}]},
    )


def test_round_trip_is_exact(tmp_path: Path):
    b = _bundle()
    save_bundle(b, tmp_path / "m")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "m").stat().st_mode & 0o777 == 0o777 & ~umask  # not a private temp dir
    back = load_bundle(tmp_path / "m")
    assert back.classes == b.classes and back.temperature == 1.7 and back.config == b.config
    assert back.pipeline == b.pipeline
    np.testing.assert_array_equal(back.mz, b.mz)
    x = torch.rand(3, len(b.mz))
    torch.testing.assert_close(back.network()(x), b.network()(x), rtol=0, atol=0)
    assert back.metrics == b.metrics and back.provenance == b.provenance


def test_linear_scores_equal_the_fitted_lda():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 30)
    x = rng.random((60, 40)) + 0.5 * y[:, None] * (np.arange(40) < 3)
    fit = LinearBaseline(grid=(3, 10)).fit(x, y)
    module = LinearScores.from_fit(fit, 40, 2).double()
    got = module(torch.from_numpy(x)).detach().numpy()
    # the module holds float32 weights, as every bundle does
    np.testing.assert_allclose(got, fit.decision_function(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got.argmax(1), fit.predict(x))


def test_refuses_corrupt_foreign_and_unsafe_bundles(tmp_path: Path):
    path = save_bundle(_bundle(), tmp_path / "m")
    meta = json.loads((path / "bundle.json").read_text())
    # a flipped byte in the weights
    w = bytearray((path / "weights.pt").read_bytes())
    w[len(w) // 2] ^= 0xFF
    (path / "weights.pt").write_bytes(bytes(w))
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_bundle(path)
    # weights that carry a pickled object, with a checksum that matches them
    torch.save({"payload": Path("x")}, path / "weights.pt")
    import hashlib

    meta["weights_sha256"] = hashlib.sha256((path / "weights.pt").read_bytes()).hexdigest()
    (path / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="not a plain checkpoint"):
        load_bundle(path)
    # another format version
    meta["version"] = 99
    (path / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format version 99"):
        load_bundle(path)
    (path / "bundle.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt bundle metadata"):
        load_bundle(path)
    (path / "bundle.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not a doublebackprop MSI model bundle"):
        load_bundle(path)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_bundle(tmp_path / "nothing")
    with pytest.raises(ValueError, match="architecture must be one of"):
        ModelConfig("vgg", 10, 2)


def test_failed_save_leaves_the_old_bundle(tmp_path: Path):
    path = save_bundle(_bundle(0), tmp_path / "m")
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    with pytest.raises(FileNotFoundError):
        save_bundle(_bundle(1), path, extra_files={"plot.png": tmp_path / "missing.png"})
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary folder left
