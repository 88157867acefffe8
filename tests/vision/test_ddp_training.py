"""Image-model training under DDP (as ``torchrun`` launches it): 2 gloo processes."""

from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp

from doublebackprop.vision.datasets import ImageData
from doublebackprop.vision.models import SmallCNN
from doublebackprop.vision.training import TrainConfig, train_model


def _data() -> ImageData:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(32, 1, 16, 16, generator=g)
    labels = torch.randint(0, 3, (32,), generator=g)
    return ImageData(images, labels, ("a", "b", "c"), "random")


def _model() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN(in_channels=1, classes=3, size=16, width=0.25)


def _worker(rank: int, port: int, out: dict) -> None:
    os.environ.update(
        WORLD_SIZE="2",
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    model = _model()
    config = TrainConfig(method="gradient-norm", lam=0.1, epochs=1, batch_size=8)
    train_model(model, _data(), config, progress=False)
    out[rank] = torch.cat([p.detach().flatten() for p in model.parameters()])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_training_keeps_replicas_identical():
    out = mp.get_context("spawn").Manager().dict()
    mp.start_processes(_worker, args=(_free_port(), out), nprocs=2, start_method="spawn")
    initial = torch.cat([p.detach().flatten() for p in _model().parameters()])
    assert torch.equal(out[0], out[1])  # DDP averaged every step's gradients
    assert not torch.allclose(out[0], initial)  # and training moved the weights
