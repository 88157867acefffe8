"""The float64 equality tests of every engine on CUDA (batched and looped rows), and mixed
precision under CUDA autocast. Run by ``make gpu-check``; skipped without a CUDA device."""

from __future__ import annotations

import copy

import pytest
import torch

import doublebackprop as dbp

from .nets import families, penalties
from .test_autocast import _models as autocast_models
from .test_batched_rows import MODELS, _grads, _reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CUDA = torch.device("cuda")


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("engine", ["autograd", "adjoint"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_jacobian_rows_on_cuda(name, engine, batched):
    model, shape, classes = copy.deepcopy(MODELS[name])
    model = model.to(CUDA).eval()
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64).to(CUDA)
    y = torch.randint(0, classes, (shape[0],), generator=gen).to(CUDA)
    ref_model = copy.deepcopy(model)
    eye = torch.eye(classes, dtype=torch.float64, device=CUDA)
    rows = [eye[c].expand(shape[0], classes) for c in range(classes)]
    _reference(ref_model, x, y, 0.05, rows).backward()
    eng = (
        dbp.Autograd(batched_rows=batched)
        if engine == "autograd"
        else dbp.Adjoint(batched_rows=batched)
    )
    net = dbp.adjoint(model) if engine == "adjoint" else model
    dbp.objective(net, x, y, penalty=dbp.JacobianPenalty(weight=0.05), engine=eng).total.backward()
    g, g_ref = _grads(model), _grads(ref_model)
    assert float((g - g_ref).norm() / g_ref.norm()) <= 1e-12


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("engine", ["adjoint", "sweeps", "finite_difference"])
@pytest.mark.parametrize("pname", sorted(penalties()))
@pytest.mark.parametrize("family", sorted(families()))
def test_engines_match_autograd_on_cuda(family, pname, engine, mode):
    model, shape, classes = copy.deepcopy(families()[family])
    sequential = isinstance(model, torch.nn.Sequential) and family != "isotopenet"
    if engine == "sweeps" and (mode == "train" or not sequential):
        pytest.skip("the sweeps engine: eval-mode nn.Sequential nets")
    if engine == "finite_difference" and mode == "train":
        pytest.skip("finite differences are checked in eval mode")
    model = model.to(CUDA).train(mode == "train")
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64).to(CUDA)
    y = torch.randint(0, classes, (shape[0],), generator=gen).to(CUDA)
    pen = penalties()[pname]
    stock = copy.deepcopy(model)
    torch.manual_seed(0)
    dbp.objective(stock, x, y, penalty=pen, engine="autograd").total.backward()
    net = dbp.adjoint(model) if engine == "adjoint" else model
    torch.manual_seed(0)
    eng = dbp.FiniteDifference(step=1e-5, central=True) if engine == "finite_difference" else engine
    dbp.objective(net, x, y, penalty=pen, engine=eng).total.backward()
    g, g_ref = _grads(model), _grads(stock)
    tol = 1e-3 if engine == "finite_difference" else 1e-8
    assert float((g - g_ref).norm() / g_ref.norm()) <= tol


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", sorted(autocast_models()))
def test_autocast_on_cuda(name, dtype):
    model, shape, classes = autocast_models()[name]
    model = model.to(CUDA).train()
    stock = copy.deepcopy(model)
    fast = dbp.adjoint(model)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=gen).to(CUDA)
    y = torch.randint(0, classes, (shape[0],), generator=gen).to(CUDA)
    pen = dbp.InputGradientPenalty(weight=0.1)
    out = []
    for net, engine in ((stock, "autograd"), (fast, "adjoint")):
        torch.manual_seed(2)
        with torch.autocast("cuda", dtype=dtype):
            res = dbp.objective(net, x, y, penalty=pen, engine=engine)
        res.total.backward()
        out.append((res, _grads(net)))
    (ref, g_ref), (res, g) = out
    assert torch.allclose(res.total, ref.total, rtol=2e-2, atol=0)
    assert float((g.float() - g_ref.float()).norm() / g_ref.float().norm()) <= 5e-2
