"""``objective`` under DistributedDataParallel: 2 gloo processes equal one on the whole batch."""

from __future__ import annotations

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import doublebackprop as dbp

ENGINES = ("adjoint", "autograd")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(24, 3)
    ).double()


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 1, 8, generator=g, dtype=torch.float64), torch.randint(
        0, 3, (8,), generator=g
    )


def _worker(rank: int, world: int, port: int, out: dict) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        torch.set_num_threads(1)
        for engine in ENGINES:
            model = _net()
            model = dbp.adjoint(model) if engine == "adjoint" else model
            ddp = nn.parallel.DistributedDataParallel(model)
            x, y = _data()
            part = slice(rank * 4, rank * 4 + 4)
            pen = dbp.RelevancePenalty(l1=0.1, l2=0.1)
            dbp.objective(ddp, x[part], y[part], penalty=pen, engine=engine).total.backward()
            out[engine, rank] = torch.cat([p.grad.flatten() for p in model.parameters()])
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_equal_single_process():
    out = mp.get_context("spawn").Manager().dict()
    mp.start_processes(_worker, args=(2, _free_port(), out), nprocs=2, start_method="spawn")
    model = _net()
    x, y = _data()
    dbp.objective(
        model, x, y, penalty=dbp.RelevancePenalty(l1=0.1, l2=0.1), engine="autograd"
    ).total.backward()
    ref = torch.cat([p.grad.flatten() for p in model.parameters()])
    for engine in ENGINES:
        for rank in (0, 1):
            assert torch.allclose(out[engine, rank], ref, rtol=1e-10, atol=1e-12), (engine, rank)
