"""The shared training utilities: atomic checkpoints that never run code when loaded."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from doublebackprop.common import (
    config_fingerprint,
    eval_mode,
    load_checkpoint,
    save_checkpoint,
    seeded,
)

_RAN: list[str] = []


def _mark(message: str) -> None:
    _RAN.append(message)


class _Payload:
    """Unpickling this object runs a call (``__reduce__``): a stand-in for arbitrary code."""

    def __reduce__(self):
        return (_mark, ("code ran",))


def test_checkpoint_with_a_pickled_object_is_refused_not_run(tmp_path: Path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": _Payload()}, path)  # stock torch.save pickles anything
    with pytest.raises(ValueError, match="evil.pt: not a plain checkpoint"):
        load_checkpoint(path)
    assert _RAN == []
    # the same load with weights_only=False would have run it: the test can fail
    torch.load(path, weights_only=False)
    assert _RAN == ["code ran"]


def test_checkpoint_round_trip_is_atomic(tmp_path: Path):
    path = tmp_path / "sub" / "ckpt.pt"
    state = {"epoch": 3, "model": {"w": torch.arange(4.0)}, "config": {"lr": 0.1, "k": (1, 2)}}
    save_checkpoint(state, path)
    back = load_checkpoint(path)
    assert back["epoch"] == 3 and back["config"] == {"lr": 0.1, "k": (1, 2)}
    torch.testing.assert_close(back["model"]["w"], torch.arange(4.0))
    assert os.listdir(path.parent) == ["ckpt.pt"]  # no temporary file left

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError):
        save_checkpoint({"x": Unsaveable()}, path)
    assert load_checkpoint(path)["epoch"] == 3  # the old checkpoint is intact
    assert os.listdir(path.parent) == ["ckpt.pt"]


def test_fingerprint_ignores_resumable_fields():
    @dataclass
    class Cfg:
        epochs: int
        lr: float

    assert config_fingerprint(Cfg(3, 0.1)) == config_fingerprint(Cfg(9, 0.1)) == {"lr": 0.1}
    assert config_fingerprint(Cfg(3, 0.1), ignore=()) == {"epochs": 3, "lr": 0.1}


def test_seeded_is_reproducible_and_leaves_the_global_generator():
    before = torch.get_rng_state()
    with seeded(5):
        a = torch.rand(3)
    with seeded(5):
        b = torch.rand(3)
    torch.testing.assert_close(a, b)
    assert torch.equal(torch.get_rng_state(), before)


def test_eval_mode_restores_each_flag_even_on_error():
    net = torch.nn.Sequential(torch.nn.Dropout(), torch.nn.Dropout())
    net[1].eval()
    with pytest.raises(KeyError), eval_mode(net):
        assert not net.training and not net[0].training
        raise KeyError
    assert net.training and net[0].training and not net[1].training
