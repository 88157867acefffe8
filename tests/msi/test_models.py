"""IsotopeNet, ResNet1d and the linear baseline."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import doublebackprop as dbp
from doublebackprop.engine.layers import LocallyConnected1d
from doublebackprop.msi.models import (
    IsotopeNet,
    LinearBaseline,
    ResNet1d,
    isotopenet_output_length,
    roc_auc_per_feature,
)
from doublebackprop.msi.models.networks import PreActBlock1d, ScalarBatchNorm1d


@pytest.mark.parametrize("length", [1, 7, 15, 16, 100, 301])
def test_isotopenet_shapes_any_length(length):
    net = IsotopeNet(length, 3).eval()
    assert net(torch.rand(2, length)).shape == (2, 3)
    assert net(torch.rand(2, 1, length)).shape == (2, 3)
    assert net.reduced_length == isotopenet_output_length(length)
    assert net.reduced_length == math.ceil(math.ceil(length / 5) / 3)


def test_isotopenet_architecture_matches_design():
    net = IsotopeNet(600, 2)
    blocks = list(net.blocks)
    assert [b.conv1.out_channels for b in blocks] == [8, 8, 8, 1]
    assert [b.conv2.stride[0] for b in blocks] == [1, 5, 1, 3]
    assert all(b.conv1.kernel_size == (3,) and b.conv2.kernel_size == (3,) for b in blocks)
    assert all(m.bias is None for m in net.modules() if isinstance(m, nn.Conv1d))
    # 1x1 conv skips exactly where channels or stride change
    assert [type(b.skip) for b in blocks] == [nn.Conv1d, nn.Conv1d, nn.Identity, nn.Conv1d]
    assert all(b.skip.kernel_size == (1,) for b in blocks if isinstance(b.skip, nn.Conv1d))
    assert isinstance(net.dropout, nn.Dropout) and net.dropout.p == 0.3
    lc = net.isotope
    assert isinstance(lc, LocallyConnected1d)
    assert (lc.kernel_size, lc.padding, lc.out_channels, lc.bias) == (5, 2, 1, None)
    assert lc.weight.shape[0] == net.reduced_length == 40
    assert isinstance(net.bn, nn.BatchNorm1d) and net.bn.num_features == 1
    assert net.dense.in_features == 40 and net.dense.out_features == 2


def test_preact_block_has_no_activation_after_add():
    torch.manual_seed(0)
    block = PreActBlock1d(2, 2, stride=1).eval()
    x = torch.randn(3, 2, 20)
    out = block(x)
    main = block.bn2(block.conv2(block.relu2(block.bn1(block.conv1(torch.relu(x))))))
    torch.testing.assert_close(out, x + main)
    assert (out < 0).any()  # no ReLU after the addition


def test_tf_padding_matches_tensorflow_same():
    # TF 'same', k=3, stride 5, L=20: pads 0 left → windows start at 0, 5, 10, 15
    block = PreActBlock1d(1, 1, stride=5, padding="tf").eval()
    h = torch.randn(1, 1, 20)
    w = block.conv2.weight
    out = block.conv2(torch.nn.functional.pad(h, (0, 0)))
    assert out.shape[-1] == 4
    expected = torch.stack([(h[0, 0, s : s + 3] * w[0, 0]).sum() for s in (0, 5, 10, 15)])
    torch.testing.assert_close(out[0, 0], expected)
    net = IsotopeNet(100, 2, padding="tf").eval()
    assert net(torch.rand(2, 100)).shape == (2, 2)


def test_scalar_batch_norm_uses_one_statistic():
    bn = ScalarBatchNorm1d()
    x = torch.randn(5, 8, 11) * torch.arange(1, 9).view(1, 8, 1) + 3
    out = bn.train()(x)
    assert bn.bn.running_mean.shape == (1,)
    ref = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-5)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # the per-channel default normalises each channel separately
    per_channel = IsotopeNet(50, 2).blocks[0].bn1
    assert isinstance(per_channel, nn.BatchNorm1d) and per_channel.num_features == 8
    scalar = IsotopeNet(50, 2, batch_norm="scalar")
    assert all(m.num_features == 1 for m in scalar.modules() if isinstance(m, nn.BatchNorm1d))


def test_models_convert_without_warnings_and_forward_identical():
    torch.manual_seed(0)
    for net in (
        IsotopeNet(120, 2),
        IsotopeNet(120, 2, batch_norm="scalar"),
        ResNet1d(120, 3, base_width=4, max_width=8, final_width=8),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fast = dbp.adjoint(net)
        x = torch.rand(6, 120)
        net.eval(), fast.eval()
        torch.testing.assert_close(fast(x), net(x), rtol=0, atol=0)


@pytest.mark.parametrize("batch_norm", ["channel", "scalar"])
def test_drr_gradient_adjoint_matches_autograd_train_mode(batch_norm):
    """DRR in train mode (batch-stat BN, dropout): adjoint engine == stock autograd, float64."""
    torch.manual_seed(1)
    net = IsotopeNet(45, 2, batch_norm=batch_norm).double().train()
    fast = dbp.adjoint(net)
    x, y = torch.rand(8, 45, dtype=torch.float64), torch.tensor([0, 1] * 4)
    w = torch.rand(8, dtype=torch.float64)
    pen = dbp.RelevancePenalty(l1=0.1, l2=0.1)
    grads = []
    for model, engine in ((fast, "adjoint"), (net, "autograd")):
        net.zero_grad()
        with torch.random.fork_rng():
            torch.manual_seed(5)  # same dropout mask
            res = dbp.objective(model, x, y, penalty=pen, engine=engine, sample_weight=w)
        res.total.backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    assert res.penalty.item() > 0
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_resnet_depth_follows_length():
    short = ResNet1d(30, 2, base_width=4, max_width=8, final_width=8)
    long = ResNet1d(2000, 2, base_width=4, max_width=8, final_width=8)
    assert len(long.blocks) > len(short.blocks) == 1
    widths = [b.conv1.out_channels for b in long.blocks]
    assert widths[0] == 4 and max(widths[:-1]) == 8 and widths[-1] == 8


@pytest.mark.parametrize(
    "bad", [dict(input_length=0, num_classes=2), dict(input_length=10, num_classes=1)]
)
def test_bad_sizes(bad):
    with pytest.raises(ValueError, match="input_length|num_classes"):
        IsotopeNet(**bad)
    with pytest.raises(ValueError):
        IsotopeNet(20, 2, batch_norm="layer")  # type: ignore[arg-type]


def test_roc_auc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 7))
    x[:, 3] = np.round(x[:, 3])  # ties
    y = rng.integers(0, 3, 60)
    auc = roc_auc_per_feature(x, y)
    for c in range(3):
        for j in range(7):
            assert auc[c, j] == pytest.approx(roc_auc_score(y == c, x[:, j]))


def test_linear_baseline_picks_informative_bins_and_n_on_validation():
    rng = np.random.default_rng(0)
    n, length = 200, 50
    y = np.repeat([0, 1], n // 2)
    x = rng.normal(size=(n, length))
    x[:, 7] += 2.0 * y
    x[:, 21] -= 1.5 * y
    fit = LinearBaseline(grid=(2, 10, 40)).fit(x[::2], y[::2], x[1::2], y[1::2])
    assert {7, 21} <= set(fit.features.tolist())
    assert set(fit.validation_scores) == {2, 10, 40}
    assert fit.n_features == max(fit.validation_scores, key=fit.validation_scores.get)
    assert (fit.predict(x[1::2]) == y[1::2]).mean() > 0.8  # Bayes rate ≈ 0.89
    coef = fit.coefficients(length)
    assert coef.shape == (2, length) and np.count_nonzero(coef[1]) == fit.n_features
    # relevance = x * w_y and the two-class scores are antisymmetric
    r = fit.relevance(x[:4], y[:4])
    np.testing.assert_allclose(r, x[:4] * coef[y[:4]])
    s = fit.decision_function(x[:4])
    np.testing.assert_allclose(s[:, 0], -s[:, 1])


def test_linear_baseline_uniform_priors():
    rng = np.random.default_rng(1)
    y = np.array([0] * 90 + [1] * 10)
    x = rng.normal(size=(100, 5))
    fit = LinearBaseline(grid=(5,)).fit(x, y)
    np.testing.assert_allclose(fit.lda.priors_, [0.5, 0.5])
    with pytest.raises(ValueError, match="single class"):
        LinearBaseline(grid=(5,)).fit(x, np.zeros(100, int))
