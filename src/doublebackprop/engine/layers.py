"""Layers the library adds to ``torch.nn``."""

from __future__ import annotations

import math

import torch
from torch import nn

from doublebackprop.engine.operators import (
    BilinearOperator,
    locally_connected,
    locally_connected_operator,
)

__all__ = ["LocallyConnected1d"]


class LocallyConnected1d(nn.Module):
    """1-D locally connected layer: a convolution whose weights are not shared between positions.

    Output position ``l`` sees the input window ``x_pad[..., l*stride : l*stride + kernel_size]``
    (after zero-padding both sides by ``padding``) and has its own weight tensor
    ``weight[l]`` of shape ``(out_channels, in_channels, kernel_size)``. IsotopeNet uses it with one
    channel, width 5 and padding 2 so that each m/z position learns its own isotope filter.

    Parameters
    ----------
    in_channels, out_channels : int
    input_length : int
        Length ``L`` of the inputs this layer accepts (the weights are position specific).
    kernel_size : int
    padding : int, default 0
    stride : int, default 1
    bias : bool, default True
        A bias per output channel and position.

    Shapes
    ------
    input ``(N, in_channels, input_length)`` → output ``(N, out_channels, output_length)`` with
    ``output_length = (input_length + 2*padding - kernel_size) // stride + 1``.

    Examples
    --------
    >>> layer = LocallyConnected1d(1, 1, input_length=100, kernel_size=5, padding=2, bias=False)
    >>> layer(torch.randn(4, 1, 100)).shape
    torch.Size([4, 1, 100])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        input_length: int,
        kernel_size: int,
        *,
        padding: int = 0,
        stride: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("in_channels", in_channels, 1),
            ("out_channels", out_channels, 1),
            ("input_length", input_length, 1),
            ("kernel_size", kernel_size, 1),
            ("stride", stride, 1),
            ("padding", padding, 0),
        ):
            if not isinstance(value, int) or value < low:
                raise ValueError(
                    f"LocallyConnected1d: {name} must be an int >= {low}, got {value!r}"
                )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.input_length = input_length
        self.kernel_size = kernel_size
        self.padding = padding
        self.stride = stride
        self.output_length = (input_length + 2 * padding - kernel_size) // stride + 1
        if self.output_length < 1:
            raise ValueError(
                f"LocallyConnected1d: input_length {input_length} is too short for "
                f"kernel_size {kernel_size} with padding {padding}"
            )
        self.weight = nn.Parameter(
            torch.empty(self.output_length, out_channels, in_channels, kernel_size)
        )
        self.bias = nn.Parameter(torch.empty(out_channels, self.output_length)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform ``±1/√(C_in·k)`` initialisation of weights and bias, as ``nn.Conv1d``."""
        fan_in = self.in_channels * self.kernel_size
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] != self.in_channels or x.shape[2] != self.input_length:
            raise ValueError(
                f"LocallyConnected1d expects input of shape (N, {self.in_channels}, "
                f"{self.input_length}), got {tuple(x.shape)}"
            )
        out = locally_connected(self.weight, x, self.padding, self.stride)
        if self.bias is not None:
            out = out + self.bias
        return out

    def bilinear_operator(self) -> BilinearOperator:
        """``K``, ``K^T`` and ``K^□`` of this layer (used by the engines)."""
        return locally_connected_operator(self.padding, self.stride)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, input_length={self.input_length}, "
            f"kernel_size={self.kernel_size}, padding={self.padding}, stride={self.stride}, "
            f"bias={self.bias is not None}"
        )
