"""DRR training loop: objective, weights, batching, checkpoints/resume, DDP."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from doublebackprop.msi.models import IsotopeNet
from doublebackprop.msi.training import (
    TrainConfig,
    balanced_weights,
    eval_mode,
    predict_logits,
    train_model,
)


def _data(n=40, length=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.rand(n, length, generator=g)
    x[:, 10] += 2.0 * y  # a class-dependent peak
    return x, y


def test_balanced_weights_formula():
    y = torch.tensor([0, 0, 0, 1, 2, 2])
    w = balanced_weights(y)
    np.testing.assert_allclose(w.numpy(), [6 / 9, 6 / 9, 6 / 9, 2.0, 1.0, 1.0], rtol=1e-6)
    # each class carries the same total weight
    assert torch.allclose(torch.bincount(y, weights=w), torch.full((3,), 2.0))
    # a class absent from this subset does not count in K
    np.testing.assert_allclose(
        balanced_weights(torch.tensor([0, 0, 2]), 3).numpy(), [0.75, 0.75, 1.5]
    )


def test_one_step_equals_hand_written_drr_loss():
    """The loop's first Adam step uses exactly the paper's loss (oracle: stock autograd)."""
    x, y = _data(n=12, length=30)
    cfg = TrainConfig(epochs=1, batch_size=12, l1=0.03, l2=0.05, seed=3, engine="adjoint")
    torch.manual_seed(0)
    net = IsotopeNet(30, 2, dropout=0.0).double()
    ref = IsotopeNet(30, 2, dropout=0.0).double()
    ref.load_state_dict(net.state_dict())
    train_model(net, x.double(), y, config=cfg)
    # oracle: one AMSGrad step on w_i (CE_i + l1|r|_1 + l2|r|^2) with r = x * dz_y/dx
    opt = torch.optim.Adam(ref.parameters(), lr=cfg.lr, amsgrad=True)
    ref.train()
    xd = x.double().requires_grad_(True)
    z = ref(xd)
    (g,) = torch.autograd.grad(z.gather(1, y[:, None]).sum(), xd, create_graph=True)
    r = xd * g
    w = balanced_weights(y).double()
    loss = (
        w
        * (F.cross_entropy(z, y, reduction="none") + 0.03 * r.abs().sum(1) + 0.05 * r.pow(2).sum(1))
    ).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    for a, b in zip(net.state_dict().values(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_one_step_with_lrp_relevance_equals_hand_written_loss():
    """``relevance="lrp"``: the first Adam step uses the LRP-ε relevance of an explicit,
    non-detached recursion written in the tests (oracle: stock autograd through it)."""
    from tests.attribution.test_lrp_exact import explicit_lrp, mlp

    x = torch.rand(12, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.arange(12) % 3
    cfg = TrainConfig(
        epochs=1, batch_size=12, l1=0.03, l2=0.05, seed=3, relevance="lrp", lrp_epsilon=0.25
    )
    net, ref = mlp(4), mlp(4)
    train_model(net, x, y, config=cfg)
    opt = torch.optim.Adam(ref.parameters(), lr=cfg.lr, amsgrad=True)
    r = explicit_lrp(ref, x, y, "eps", 0.25)
    w = balanced_weights(y).double()
    per = F.cross_entropy(ref(x), y, reduction="none") + 0.03 * r.abs().sum(1)
    loss = (w * (per + 0.05 * r.pow(2).sum(1))).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    for a, b in zip(net.state_dict().values(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_training_learns_and_drr_changes_relevance():
    x, y = _data(n=60, length=45)
    base = dict(epochs=15, batch_size=20, lr=5e-3, seed=0)
    torch.manual_seed(0)
    plain = train_model(IsotopeNet(45, 2), x, y, config=TrainConfig(**base))
    assert plain.history[-1].task < plain.history[0].task
    assert all(h.penalty == 0 for h in plain.history)
    torch.manual_seed(0)
    drr = train_model(IsotopeNet(45, 2), x, y, config=TrainConfig(**base, l1=1.0, l2=1.0))
    assert drr.history[-1].penalty < drr.history[0].penalty
    assert not drr.model.training  # returned in eval mode
    assert len(plain.history) == 15 and plain.spectra_per_second > 0


def test_batches_drop_last_and_small_data():
    x, y = _data(n=25, length=20)
    res = train_model(IsotopeNet(20, 2), x, y, config=TrainConfig(epochs=1, batch_size=10))
    assert res.history[0].spectra == 20  # the partial batch of 5 is dropped
    res = train_model(IsotopeNet(20, 2), x, y, config=TrainConfig(epochs=1, batch_size=100))
    assert res.history[0].spectra == 25  # less than one batch: kept


def test_dataset_source_gives_same_result_as_tensor():
    x, y = _data(n=20, length=30)
    cfg = TrainConfig(epochs=2, batch_size=10, l1=0.01, l2=0.01)
    torch.manual_seed(0)
    a = IsotopeNet(30, 2)
    b = IsotopeNet(30, 2)
    b.load_state_dict(a.state_dict())
    train_model(a, x, y, config=cfg)
    train_model(b, torch.utils.data.TensorDataset(x, y), y, config=cfg)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)


def test_checkpoint_resume_equals_uninterrupted(tmp_path):
    x, y = _data(n=30, length=30)
    cfg4 = TrainConfig(epochs=4, batch_size=10, l1=0.01, l2=0.01, seed=2)
    torch.manual_seed(0)
    full = IsotopeNet(30, 2)
    init = {k: v.clone() for k, v in full.state_dict().items()}
    train_model(full, x, y, config=cfg4)

    ckpt = tmp_path / "run.pt"
    part = IsotopeNet(30, 2)
    part.load_state_dict(init)
    res2 = train_model(
        part, x, y, config=TrainConfig(**{**cfg4.__dict__, "epochs": 2}), checkpoint=ckpt
    )
    assert ckpt.exists() and len(res2.history) == 2
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write leaves no temp file
    resumed = IsotopeNet(30, 2)  # fresh weights: must be replaced by the checkpoint's
    res = train_model(resumed, x, y, config=cfg4, checkpoint=ckpt)
    assert res.resumed_from_epoch == 2 and [h.epoch for h in res.history] == [1, 2, 3, 4]
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    with pytest.raises(ValueError, match="different settings"):
        train_model(
            IsotopeNet(30, 2), x, y, config=TrainConfig(epochs=5, l1=0.5, l2=0.5), checkpoint=ckpt
        )


def test_config_validation():
    with pytest.raises(ValueError, match="l1"):
        TrainConfig(l1=-1e-3)
    with pytest.raises(ValueError, match="l2"):
        TrainConfig(l2=float("nan"))
    with pytest.raises(ValueError, match="engine"):
        TrainConfig(engine="magic")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="relevance must be"):
        TrainConfig(relevance="saliency")
    with pytest.raises(ValueError, match="needs the 'adjoint' or 'autograd' engine"):
        TrainConfig(relevance="lrp", engine="sweeps")
    with pytest.raises(ValueError, match="lrp_epsilon"):
        TrainConfig(relevance="lrp", lrp_epsilon=-1.0)
    x, y = _data(n=10, length=20)
    with pytest.raises(ValueError, match="shape"):
        train_model(IsotopeNet(20, 2), x, y[:5], config=TrainConfig(epochs=1))


def test_eval_mode_restores_flags_on_error():
    net = IsotopeNet(20, 2).train()
    net.dropout.eval()
    with pytest.raises(RuntimeError), eval_mode(net):
        assert not net.training
        raise RuntimeError("boom")
    assert net.training and not net.dropout.training
    logits = predict_logits(net, np.random.default_rng(0).random((5, 20), dtype=np.float32))
    assert logits.shape == (5, 2) and net.training


def test_callback_and_nan_loss():
    x, y = _data(n=20, length=20)
    seen = []
    train_model(
        IsotopeNet(20, 2),
        x,
        y,
        config=TrainConfig(epochs=2, batch_size=10),
        callback=lambda s, total: seen.append((s.epoch, total)),
    )
    assert seen == [(1, 2), (2, 2)]
    with pytest.raises(ValueError, match="NaN"):
        x_bad = x.clone()
        x_bad[0, 0] = float("nan")
        train_model(IsotopeNet(20, 2), x_bad, y, config=TrainConfig(epochs=1, batch_size=20))


# ----------------------------------------------------------------------------- DDP (2 gloo CPU)
class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 16, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x.unsqueeze(1))).flatten(1))


def _ddp_worker(rank, world, port, init, x, y, out):
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        net = _Net()
        net.load_state_dict(init)
        cfg = TrainConfig(epochs=2, batch_size=8, l1=0.05, l2=0.05, lr=1e-2)
        train_model(net, x, y, config=cfg)
        torch.save(net.state_dict(), f"{out}/net{rank}.pt")
        iso = IsotopeNet(30, 2)  # the real model: BN + dropout + LC under DDP
        torch.manual_seed(0)
        iso.load_state_dict(IsotopeNet(30, 2).state_dict())
        train_model(
            iso,
            torch.rand(16, 30),
            torch.arange(16) % 2,
            config=TrainConfig(epochs=1, batch_size=8, l1=1e-2, l2=1e-2),
        )
        torch.save(iso.dense.weight.detach(), f"{out}/iso{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_gloo_processes_match_single_process(tmp_path):
    """Each global batch is split over 2 ranks; without BN the result equals 1 process."""
    import torch.multiprocessing as mp

    torch.manual_seed(0)
    net = _Net()
    init = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = torch.rand(32, 16), torch.arange(32) % 2
    mp.spawn(_ddp_worker, args=(2, _free_port(), init, x, y, str(tmp_path)), nprocs=2, join=True)
    out = {k: torch.load(tmp_path / f"{k}.pt") for k in ("net0", "net1", "iso0", "iso1")}
    single = _Net()
    single.load_state_dict(init)
    train_model(single, x, y, config=TrainConfig(epochs=2, batch_size=8, l1=0.05, l2=0.05, lr=1e-2))
    for k, v in single.state_dict().items():
        torch.testing.assert_close(out["net0"][k], v, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out["net1"][k], v, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["iso0"], out["iso1"])  # ranks stay in sync
    assert not torch.equal(out["iso0"], IsotopeNet(30, 2).dense.weight)
