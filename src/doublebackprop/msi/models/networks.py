"""Tumour-typing networks for mass spectra: IsotopeNet and a deeper 1-D ResNet.

All networks take spectra of shape ``(N, L)`` (or ``(N, 1, L)``) and return logits ``(N, K)``;
they are built only from modules :func:`doublebackprop.engine.adjoint` has rules for (Conv1d, ReLU,
BatchNorm1d, AdaptiveAvgPool1d) plus stock-safe ones (Dropout, LocallyConnected1d, Linear), so
``dbp.adjoint(model)`` converts them without warnings.

IsotopeNet follows Behrmann et al. (2018) as docs/papers.md fixes it: four pre-activation residual
blocks (channels 8, 8, 8, 1; strides 1, 5, 1, 3; kernel 3; bias-free convolutions; 1×1 conv skips
when channels or stride change; no activation after the add), then ReLU → dropout 0.3 → a
locally connected layer (width 5, one filter, zero pad 2, no bias) → BN → ReLU → dense.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from doublebackprop.engine.layers import LocallyConnected1d

__all__ = [
    "IsotopeNet",
    "ResNet1d",
    "isotopenet_output_length",
]

Tensor = torch.Tensor
BatchNormKind = Literal["channel", "scalar"]
Padding = Literal["symmetric", "tf"]


class ScalarBatchNorm1d(nn.Module):
    """BatchNorm with one mean/variance/γ/β over all channels and positions.

    This is what the authors' Keras port of IsotopeNet computed (``BatchNormalization()`` with the
    default ``axis=-1`` on channels-first tensors whose last axis has size 1).

    Shapes
    ------
    ``(N, C, L)`` → ``(N, C, L)``.
    """

    def __init__(self, *, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(1, eps=eps, momentum=momentum)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(x.reshape(x.shape[0], 1, -1)).reshape(x.shape)


def _batch_norm(kind: BatchNormKind, channels: int, eps: float, momentum: float) -> nn.Module:
    if kind == "channel":
        return nn.BatchNorm1d(channels, eps=eps, momentum=momentum)
    if kind == "scalar":
        return ScalarBatchNorm1d(eps=eps, momentum=momentum)
    raise ValueError(f"batch_norm must be 'channel' or 'scalar', got {kind!r}")


def _tf_same_pad(length: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """TensorFlow's asymmetric 'same' padding (left, right) for a strided convolution."""
    out = -(-length // stride)
    total = max((out - 1) * stride + kernel_size - length, 0)
    return total // 2, total - total // 2


class PreActBlock1d(nn.Module):
    """Pre-activation residual block: ReLU → conv → BN → ReLU → conv(stride) → BN, plus skip.

    The skip is the identity, or a bias-free 1×1 convolution with the block's stride when the
    channel count or the stride changes. There is no activation after the addition.

    Shapes
    ------
    ``(N, C_in, L)`` → ``(N, C_out, ceil(L / stride))``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        kernel_size: int = 3,
        batch_norm: BatchNormKind = "channel",
        padding: Padding = "symmetric",
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        if padding not in ("symmetric", "tf"):
            raise ValueError(f"padding must be 'symmetric' or 'tf', got {padding!r}")
        half = kernel_size // 2
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv1d(in_channels, out_channels, kernel_size, padding=half, bias=False)
        self.bn1 = _batch_norm(batch_norm, out_channels, bn_eps, bn_momentum)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv1d(
            out_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=half if padding == "symmetric" else 0,
            bias=False,
        )
        self.bn2 = _batch_norm(batch_norm, out_channels, bn_eps, bn_momentum)
        self.skip: nn.Module
        if in_channels != out_channels or stride != 1:
            self.skip = nn.Conv1d(in_channels, out_channels, 1, stride=stride, bias=False)
        else:
            self.skip = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.relu2(self.bn1(self.conv1(self.relu1(x))))
        if self.padding == "tf":
            h = F.pad(h, _tf_same_pad(h.shape[-1], self.kernel_size, self.stride))
        return self.skip(x) + self.bn2(self.conv2(h))


def _as_channels(x: Tensor, length: int, where: str) -> Tensor:
    if x.dim() == 2:
        x = x.unsqueeze(1)
    if x.dim() != 3 or x.shape[1] != 1 or x.shape[2] != length:
        raise ValueError(
            f"{where} expects spectra of shape (N, {length}) or (N, 1, {length}), got "
            f"{tuple(x.shape)}"
        )
    return x


def isotopenet_output_length(input_length: int) -> int:
    """Length ``L2 = ceil(ceil(L / 5) / 3)`` after IsotopeNet's residual blocks."""
    return math.ceil(math.ceil(input_length / 5) / 3)


def _he_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv1d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")


class IsotopeNet(nn.Module):
    """IsotopeNet (Behrmann et al. 2018) for spectra of a fixed length.

    Parameters
    ----------
    input_length : int
        Number of m/z bins ``L`` (the locally connected and dense layers are position specific).
    num_classes : int
    batch_norm : {"channel", "scalar"}, default "channel"
        ``"channel"``: per-channel BN (the original Lasagne model); ``"scalar"``: one statistic over
        all channels and positions (the DRR Keras port's behaviour).
    dropout : float, default 0.3
    padding : {"symmetric", "tf"}, default "symmetric"
        Padding of the strided convolutions: symmetric ``k // 2``, or TensorFlow's asymmetric
        'same' padding (which for k=3, stride 5 pads nothing), to match the Keras port exactly.
    bn_eps, bn_momentum : float
        BatchNorm settings (PyTorch defaults; the Keras port used ``eps=1e-3, momentum=0.01``).

    Shapes
    ------
    ``(N, L)`` or ``(N, 1, L)`` → logits ``(N, num_classes)``.

    Examples
    --------
    >>> net = IsotopeNet(input_length=600, num_classes=2)
    >>> net(torch.rand(4, 600)).shape
    torch.Size([4, 2])
    """

    def __init__(
        self,
        input_length: int,
        num_classes: int,
        *,
        batch_norm: BatchNormKind = "channel",
        dropout: float = 0.3,
        padding: Padding = "symmetric",
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        _check_sizes("IsotopeNet", input_length, num_classes, min_length=1)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"IsotopeNet: dropout must be in [0, 1), got {dropout!r}")
        self.input_length, self.num_classes = input_length, num_classes
        kw: dict[str, Any] = {
            "batch_norm": batch_norm,
            "padding": padding,
            "bn_eps": bn_eps,
            "bn_momentum": bn_momentum,
        }
        self.blocks = nn.Sequential(
            PreActBlock1d(1, 8, stride=1, **kw),
            PreActBlock1d(8, 8, stride=5, **kw),
            PreActBlock1d(8, 8, stride=1, **kw),
            PreActBlock1d(8, 1, stride=3, **kw),
        )
        self.reduced_length = isotopenet_output_length(input_length)
        self.relu1 = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.isotope = LocallyConnected1d(
            1, 1, input_length=self.reduced_length, kernel_size=5, padding=2, bias=False
        )
        self.bn = _batch_norm(batch_norm, 1, bn_eps, bn_momentum)
        self.relu2 = nn.ReLU()
        self.flatten = nn.Flatten()
        self.dense = nn.Linear(self.reduced_length, num_classes)
        _he_init(self)
        nn.init.xavier_uniform_(self.dense.weight)
        nn.init.zeros_(self.dense.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.blocks(_as_channels(x, self.input_length, "IsotopeNet"))
        h = self.isotope(self.dropout(self.relu1(h)))
        return self.dense(self.flatten(self.relu2(self.bn(h))))


class ResNet1d(nn.Module):
    """A deeper pre-activation 1-D ResNet for comparison with IsotopeNet.

    A stem convolution, then residual blocks (kernel ``kernel_size``, stride ``stride``) whose
    width doubles from ``base_width`` up to ``max_width`` until the length is at most
    ``min_length``, one last block of ``final_width`` channels, ReLU, global average pooling and a
    dense layer (the layout of the authors' ``NNResidualArchitecture``).

    Parameters
    ----------
    input_length : int
    num_classes : int
    base_width, max_width, final_width : int
        Channels of the first blocks, the cap while doubling, and of the last block.
    kernel_size, stride : int
        Of every block's strided convolution.
    min_length : int
        Stop adding blocks once the length is at most this.
    dropout : float
        Before the dense layer.
    batch_norm : {"channel", "scalar"}
        Per-channel BatchNorm, or the Keras port's one-scalar normalisation.

    Shapes
    ------
    ``(N, L)`` or ``(N, 1, L)`` → logits ``(N, num_classes)``.

    Examples
    --------
    >>> net = ResNet1d(input_length=600, num_classes=2, base_width=4, max_width=8, final_width=8)
    >>> net(torch.rand(3, 600)).shape
    torch.Size([3, 2])
    """

    def __init__(
        self,
        input_length: int,
        num_classes: int,
        *,
        base_width: int = 16,
        max_width: int = 128,
        final_width: int = 256,
        kernel_size: int = 5,
        stride: int = 3,
        min_length: int = 30,
        dropout: float = 0.0,
        batch_norm: BatchNormKind = "channel",
    ) -> None:
        super().__init__()
        _check_sizes("ResNet1d", input_length, num_classes, min_length=stride)
        for name, v in (
            ("base_width", base_width),
            ("max_width", max_width),
            ("final_width", final_width),
            ("kernel_size", kernel_size),
            ("stride", stride),
            ("min_length", min_length),
        ):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"ResNet1d: {name} must be an int >= 1, got {v!r}")
        self.input_length, self.num_classes = input_length, num_classes
        half = kernel_size // 2
        self.stem = nn.Conv1d(1, base_width, kernel_size, padding=half, bias=False)
        blocks: list[nn.Module] = []
        width, length = base_width, input_length
        while length > min_length:
            out = min(width * 2, max_width) if blocks else width
            blocks.append(
                PreActBlock1d(
                    width, out, stride=stride, kernel_size=kernel_size, batch_norm=batch_norm
                )
            )
            width, length = out, -(-length // stride)
        blocks.append(
            PreActBlock1d(
                width, final_width, stride=stride, kernel_size=kernel_size, batch_norm=batch_norm
            )
        )
        self.blocks = nn.Sequential(*blocks)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(final_width, num_classes)
        _he_init(self)

    def forward(self, x: Tensor) -> Tensor:
        h = self.blocks(self.stem(_as_channels(x, self.input_length, "ResNet1d")))
        return self.dense(self.dropout(self.flatten(self.pool(self.relu(h)))))


def _check_sizes(owner: str, input_length: int, num_classes: int, *, min_length: int) -> None:
    if not isinstance(input_length, int) or input_length < min_length:
        raise ValueError(
            f"{owner}: input_length must be an int >= {min_length}, got {input_length!r}"
        )
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"{owner}: num_classes must be an int >= 2, got {num_classes!r}")
