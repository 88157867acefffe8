"""The conversion: shared state, bit-identical forwards, second derivatives, fallbacks."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import doublebackprop as dbp
from doublebackprop.engine.adjoint import AdjointModule

from .nets import families


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("family", sorted(families()))
def test_forward_bit_identical_and_one_model(family, mode):
    model, shape, _ = families()[family]
    model.train(mode == "train")
    stock = copy.deepcopy(model)
    keys = list(model.state_dict())
    params = list(model.parameters())
    fast = dbp.adjoint(model)
    assert fast is model  # converted in place: one model, one state
    x = torch.randn(*shape, dtype=torch.float64)
    torch.manual_seed(1)
    ref = stock(x)
    torch.manual_seed(1)
    out = fast(x)
    assert torch.equal(ref, out)
    assert list(fast.state_dict()) == keys
    assert all(p is q for p, q in zip(params, fast.parameters()))
    assert any(isinstance(m, AdjointModule) for m in fast.modules())
    assert not any(isinstance(m, AdjointModule) for m in stock.modules())
    for m, s in zip(fast.modules(), stock.modules()):
        assert isinstance(m, type(s))  # isinstance checks keep working


def _bn_conv() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(3 * 16, 2),
    )


@pytest.mark.parametrize("handle", ["original", "converted"])
def test_train_eval_reach_every_module(handle):
    model = _bn_conv().eval()
    fast = dbp.adjoint(model)  # converted in eval mode
    (model if handle == "original" else fast).train()
    assert all(m.training for m in fast.modules()) and all(m.training for m in model.modules())
    before = fast[1].running_mean.clone()  # type: ignore[operator]
    fast(torch.randn(4, 1, 4, 4))
    assert not torch.equal(fast[1].running_mean, before)  # BatchNorm really is in train mode
    assert int(model[1].num_batches_tracked) == 1
    (model if handle == "original" else fast).eval()
    assert not any(m.training for m in fast.modules())
    x = torch.randn(4, 1, 4, 4)
    assert torch.equal(fast(x), fast(x))  # eval: no dropout, no batch statistics


@pytest.mark.parametrize("handle", ["original", "converted"])
def test_to_requires_grad_and_hooks_reach_every_module(handle):
    model = _bn_conv()
    fast = dbp.adjoint(model)
    h = model if handle == "original" else fast
    h.to(torch.float64)
    assert all(t.dtype == torch.float64 for t in fast.parameters())
    assert all(b.dtype == torch.float64 for b in fast.buffers() if b.is_floating_point())
    h.requires_grad_(False)
    assert not any(p.requires_grad for p in model.parameters())
    h.requires_grad_(True)
    seen = []
    handles = [m.register_forward_hook(lambda m, i, o: seen.append(type(m))) for m in h.modules()]
    fast(torch.randn(2, 1, 4, 4, dtype=torch.float64))
    assert len(seen) == len(list(model.modules()))
    for hd in handles:
        hd.remove()
    grads = []
    h[0].register_full_backward_hook(lambda m, gi, go: grads.append(go[0]))  # type: ignore[index]
    fast(torch.randn(2, 1, 4, 4, dtype=torch.float64, requires_grad=True)).sum().backward()
    assert len(grads) == 1


def test_adjoint_engine_leaves_an_unconverted_model_unconverted():
    model = _bn_conv().double()
    stock = copy.deepcopy(model)
    x = torch.randn(4, 1, 4, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0])
    pen = dbp.InputGradientPenalty(weight=0.3)
    torch.manual_seed(3)
    res = dbp.objective(model, x, y, penalty=pen, engine="adjoint")
    res.total.backward()  # the graph outlives the scoped conversion
    assert not dbp.engine.is_adjoint(model)
    assert [type(m) for m in model.modules()] == [type(m) for m in stock.modules()]
    torch.manual_seed(3)
    ref = dbp.objective(stock, x, y, penalty=pen, engine="autograd")
    ref.total.backward()
    for p, q in zip(model.parameters(), stock.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-12, atol=1e-15)


def test_training_updates_both():
    model, shape, classes = families()["resnet_bn"]
    fast = dbp.adjoint(model)
    before = model.block.bn1.running_mean.clone()
    fast.train()
    fast(torch.randn(*shape, dtype=torch.float64))
    assert not torch.equal(model.block.bn1.running_mean, before)
    assert int(model.block.bn1.num_batches_tracked) == 1


@pytest.mark.parametrize("train", [True, False])
def test_gradgradcheck_smooth_and_batchnorm(train):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv1d(1, 2, 3, stride=2, padding=1),
        nn.BatchNorm1d(2),
        nn.Softplus(),
        nn.AvgPool1d(2),
        nn.Identity(),
        nn.Flatten(),
        nn.Linear(8, 2),
    ).double()
    fast = dbp.adjoint(net).train(train)
    x = torch.randn(4, 1, 16, dtype=torch.float64, requires_grad=True)
    params = dict(fast.named_parameters())
    names = list(params)

    def f(x, *ps):
        out = torch.func.functional_call(
            fast, {**dict(zip(names, ps)), **dict(fast.named_buffers())}, (x,)
        )
        return out

    ps = tuple(p.detach().clone().requires_grad_(True) for p in params.values())
    # buffers (running stats) are updated by each call in train mode; statistics are batch ones
    assert torch.autograd.gradcheck(f, (x, *ps))
    assert torch.autograd.gradgradcheck(f, (x, *ps))


def test_unsupported_module_warns_once_naming_it():
    class Odd(nn.Module):
        def forward(self, x):
            return x * 2

    net = nn.Sequential(nn.Linear(3, 3), Odd(), Odd(), nn.ReLU())
    stock = copy.deepcopy(net)
    with pytest.warns(UserWarning, match="Odd") as record:
        fast = dbp.adjoint(net)
    assert len([w for w in record if "no adjoint rule" in str(w.message)]) == 1
    x = torch.randn(2, 3)
    assert torch.equal(fast(x), stock(x))


def test_known_modules_do_not_warn():
    net = families()["isotopenet"][0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dbp.adjoint(net)


def test_converting_twice_is_a_no_op():
    net = nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU())
    fast = dbp.adjoint(net)
    assert dbp.adjoint(fast) is fast


def test_non_module_is_rejected():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        dbp.adjoint(lambda x: x)  # type: ignore[type-var]


def test_circular_padding_conv_falls_back_to_stock():
    net = nn.Sequential(nn.Conv1d(1, 2, 3, padding=1, padding_mode="circular"))
    with pytest.warns(UserWarning, match=r"Conv1d\(padding_mode='circular'\) at 0"):
        fast = dbp.adjoint(net)
    assert type(fast[0]) is nn.Conv1d


def test_relu_net_penalty_has_no_second_backward_through_primal_graph():
    """φ'' = 0 made explicit: the logit-saliency graph never reaches the pre-activations."""
    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)).double()
    fast = dbp.adjoint(copy.deepcopy(net))
    for model in (fast, net):
        x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
        (s,) = torch.autograd.grad(model(x)[:, 0].sum(), x, create_graph=True)
        grads = torch.autograd.grad(s.pow(2).sum(), list(model.parameters()), allow_unused=True)
        bias_grad = grads[1]
        # the penalty does not reach the first bias at all (None) with the adjoint model,
        # while stock autograd sends explicit zeros back through the primal graph
        if model is fast:
            assert bias_grad is None
        else:
            assert bias_grad is not None and float(bias_grad.abs().sum()) == 0.0


def _node_names(t):
    names, stack, seen = [], [t.grad_fn], set()
    while stack:
        n = stack.pop()
        if n is None or n in seen:
            continue
        seen.add(n)
        names.append(n.name())
        stack.extend(m for m, _ in n.next_functions)
    return names


def test_double_backward_kernel_claim_holds_exactly_as_documented():
    """The library's penalties differentiate the input-gradient pass once: on a converted model
    that pass holds no ConvolutionBackwardBackward0 (stock's does). Differentiating a
    *parameter* gradient again (third order) does reach it: K^□ runs convolution_backward."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv1d(1, 3, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(3, 3, 3, padding=1),
        nn.Flatten(),
        nn.Linear(18, 2),
    ).double()
    stock = copy.deepcopy(net)
    fast = dbp.adjoint(net)
    found = {}
    for name, model in (("stock", stock), ("fast", fast)):
        x = torch.randn(4, 1, 12, dtype=torch.float64, requires_grad=True)
        (s,) = torch.autograd.grad(model(x)[:, 0].sum(), x, create_graph=True)
        params = list(model.parameters())
        grads = torch.autograd.grad(s.pow(2).sum(), params, create_graph=True, allow_unused=True)
        third = sum(g.sum() for g in grads if g is not None and g.requires_grad)
        found[name] = (_node_names(s), _node_names(third))
    assert "ConvolutionBackwardBackward0" in found["stock"][0]
    assert "ConvolutionBackwardBackward0" not in found["fast"][0]
    assert "ConvolutionBackwardBackward0" in found["fast"][1]


def test_converted_model_pickles_and_deepcopies(tmp_path):
    net = nn.Sequential(nn.Conv1d(1, 2, 3, padding="same"), nn.ReLU(), nn.Flatten())
    fast = dbp.adjoint(net)
    x = torch.randn(2, 1, 8)
    out = fast(x)  # builds the cached operator
    torch.save(fast, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
    assert torch.equal(loaded(x), out) and torch.equal(copy.deepcopy(fast)(x), out)
    fast[0].padding = (2,)  # type: ignore[assignment]  # a changed hyper-parameter: rebuilt
    stock = nn.Conv1d(1, 2, 3, padding=2)
    stock.load_state_dict(fast[0].state_dict())
    assert torch.equal(fast[0](x), stock(x))
