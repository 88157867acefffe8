"""The benchmark, complexity, landscape and demo tools (structure and maths, never timing)."""

from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn

from doublebackprop import RelevancePenalty
from doublebackprop.cli import main
from doublebackprop.tools import bench, zoo
from doublebackprop.tools.complexity import complexity_table, format_markdown
from doublebackprop.tools.landscape import refinement_ratio, scan_line


def test_benchmark_rows_and_json(tmp_path):
    case = bench.BenchCase("tiny", lambda: zoo.mlp(6, 8, 1, 3), (4, 6), 3, True)
    rows = bench.run_benchmark([case], repeats=1, warmup=0)
    engines = {(r.penalty, r.engine) for r in rows}
    assert ("plain", "plain") in engines
    for pen in ("gradient-norm", "DRR", "Jacobian (10 rows)"):
        assert {(pen, e) for e in ("adjoint", "sweeps", "finite_difference")} <= engines
    assert ("DRR", "autograd") in engines
    assert ("Jacobian (10 rows)", "autograd (row loop)") in engines
    assert ("Jacobian (10 rows)", "autograd (batched rows)") in engines
    plain = next(r for r in rows if r.engine == "plain")
    assert plain.ratio_to_plain == 1.0
    assert all(r.median_ms > 0 and r.memory_mb >= 0 for r in rows)
    judged = ("adjoint", "plain (converted)")
    assert all((r.met is None) == (r.engine not in judged) for r in rows)
    for r in rows:
        if r.met is not None:  # the verdict names the ratios that decide it
            assert "×stock" in r.why or "×plain" in r.why
            assert (">" in r.why) == (not r.met)
    bench.write_json(rows, "cpu", tmp_path / "b.json", settings={"quick": True, "repeats": 1})
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["meta"]["device"] == "cpu" and len(data["rows"]) == len(rows)
    assert data["meta"]["settings"] == {"quick": True, "repeats": 1}
    table = bench.format_table(rows, "cpu")
    assert "tiny" in table and "Why the CPU shows little gain" in table


def test_benchmark_targets_are_judged_as_shown():
    """A ratio is judged at the two decimals the table shows: 1.001 reads 1.00 and meets ≤ 1.00,
    1.006 reads 1.01 and does not."""
    ok = {"stock": 1.001, "mem": 1.0, "rss": float("nan"), "plain": 2.0}
    assert bench._target("DRR", "adjoint", ok)[1] is True
    assert bench._target("DRR", "adjoint", {**ok, "stock": 1.006})[1:] == (
        False,
        "time ×stock 1.01 > 1.00",
    )
    assert bench._target("plain", "plain (converted)", {**ok, "plain": 1.034})[1] is True
    assert bench._target("plain", "plain (converted)", {**ok, "plain": 1.036})[1] is False
    # the verdict quotes the ratio the table shows (no second rounding of another value)
    med = {("plain", "plain"): 100.0, ("plain", "plain (converted)"): 98.507}
    row = bench._rows("m", med, {k: (1.0, 0.0) for k in med})[1]
    assert row.why == f"time ×plain {row.ratio_to_plain:.2f} ≤ 1.03"


def test_benchmark_order_changes_every_round(monkeypatch):
    """Each round times the variants in a new order, so no variant always follows the same one."""
    orders: list[tuple[str, ...]] = []
    real = bench._variants

    def spy(*args, **kwargs):
        variants = real(*args, **kwargs)
        wrapped = {}
        for key, fn in variants.items():

            def run(key=key, fn=fn):
                orders.append(key)
                fn()

            wrapped[key] = run
        return wrapped

    monkeypatch.setattr(bench, "_variants", spy)
    monkeypatch.setattr(bench, "step_memory", lambda fn, device: (0.0, float("nan")))
    case = bench.BenchCase("tiny", lambda: zoo.mlp(6, 8, 1, 3), (4, 6), 3, True)
    bench.run_benchmark([case], repeats=4, warmup=0, penalties=["DRR"])
    n = len(set(orders))
    rounds = [tuple(orders[i : i + n]) for i in range(0, len(orders), n)]
    assert len(rounds) == 4 and all(len(set(r)) == n for r in rounds)
    assert len(set(rounds)) > 1


def test_benchmark_critic_case():
    case = bench.BenchCase(
        "critic", lambda: zoo.dcgan_discriminator(1, 2), (2, 1, 64, 64), 0, False
    )
    messages: list[str] = []
    rows = bench.run_benchmark([case], repeats=1, warmup=0, progress=messages.append)
    assert {(r.penalty, r.engine) for r in rows} == {
        ("plain", "plain"),
        ("plain", "plain (converted)"),
        ("R1 gradient penalty", "autograd"),
        ("R1 gradient penalty", "adjoint"),
    }
    assert messages[0].startswith("[1/1] critic") and "done" in messages[-1]


def test_complexity_counts_show_the_saved_sweep():
    rows = complexity_table(width=8, batch=4, repeats=1)
    by = {(r.penalty, r.activation.split()[0]): r for r in rows}
    jac = next(k for k in by if k[0].startswith("‖J‖"))[0]
    assert by[jac, "ReLU"].sweeps == "B1+F2" and by[jac, "ReLU"].b2 == 0
    assert by[jac, "Softplus"].sweeps == "B1+F2+B2" and by[jac, "Softplus"].b2 > 0
    assert by["DRR", "ReLU"].per_row < by["DRR", "Softplus"].per_row
    assert by["‖∇ₓ loss‖²", "ReLU"].sweeps == "B1+F2+B2"  # the softmax Hessian at the head
    text = format_markdown(rows, width=8, depth=3, batch=4)
    assert text.count("\n| ") == len(rows) + 1
    assert "stock autograd ms" in text and all(r.stock_ms > 0 for r in rows)


def _line(act, batch):
    torch.manual_seed(0)
    net = zoo.cnn2d(1, 8, 4, widths=(4,), act=act, pool=nn.AvgPool2d).double().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(batch, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (batch,), generator=g)
    t = np.linspace(-0.5, 0.5, 201)
    return scan_line(
        net,
        x,
        y,
        RelevancePenalty(l1=1.0, l2=1.0),
        batch_sizes=(1, batch),
        t=t,
        generator=torch.Generator().manual_seed(2),
    )


def test_relu_penalty_jumps_softplus_does_not():
    relu = _line(nn.ReLU, 64)
    soft = _line(nn.Softplus, 64)
    assert relu[0].refinement_ratio > 0.75  # a single ReLU sample: jumps dominate
    assert abs(soft[0].refinement_ratio - 0.5) < 0.05  # smooth
    assert relu[1].max_jump < relu[0].max_jump  # averaging over the batch smooths


def test_refinement_ratio_on_known_curves():
    t = np.linspace(0, 1, 201)
    assert abs(refinement_ratio(t**2) - 0.5) < 0.01
    assert refinement_ratio(np.where(t > 0.503, 1.0, 0.0) + 0.01 * t) > 0.95


def test_scan_restores_parameters():
    net = zoo.mlp(4, 5, 1, 2)
    before = [p.detach().clone() for p in net.parameters()]
    scan_line(
        net,
        torch.randn(3, 4),
        torch.tensor([0, 1, 0]),
        RelevancePenalty(l1=1, l2=1),
        batch_sizes=(2,),
        t=np.linspace(-1, 1, 5),
        generator=torch.Generator().manual_seed(0),
    )
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_cli_landscape_refuses_too_few_points(capsys):
    for points in ("0", "2", "40"):
        assert main(["landscape", "--points", points]) == 2
        assert "--points must be >= 41" in capsys.readouterr().err


def test_cli_landscape_writes_png(tmp_path, capsys):
    assert main(["landscape", "--out", str(tmp_path), "--points", "41"]) == 0
    assert "ReLU: batch 512: 41 points done" in capsys.readouterr().out
    assert (tmp_path / "landscape.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "landscape.json").read_text())
    assert set(summary["nets"]) == {"ReLU", "Softplus"}


def test_cli_engines_demo(tmp_path, capsys):
    assert main(["engines-demo", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    for engine in ("plain", "adjoint", "autograd", "sweeps", "finite_difference"):
        assert engine in out


def test_cli_errors_are_clean(capsys):
    assert main(["bench", "--repeats", "0"]) == 2
    assert "--repeats must be >= 1" in capsys.readouterr().err
