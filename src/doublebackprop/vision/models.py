"""The ICML 2019 paper's small CNN and a small ResNet with BatchNorm."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SmallCNN", "SmallResNet", "build_model", "MODELS"]


class SmallCNN(nn.Sequential):
    """conv3×3-32 → pool → conv3×3-64 → pool → conv3×3-128 → pool → dense-128 → dropout → dense.

    ReLU activations, biases everywhere, no BatchNorm (the paper's MNIST ``SmallNet``).
    ``width`` scales the channel counts (``width=0.25``: 8-16-32, dense 32) for quick runs.

    Shapes: input ``(N, in_channels, H, W)`` with ``H, W`` divisible by 8 after flooring → logits
    ``(N, classes)``.

    Parameters
    ----------
    in_channels, classes : int
    size : int
        Image side (28 for MNIST).
    width : float
        Channel-width multiplier.
    dropout : float
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        classes: int = 10,
        size: int = 28,
        width: float = 1.0,
        dropout: float = 0.5,
    ) -> None:
        c1, c2, c3, d = (max(1, round(c * width)) for c in (32, 64, 128, 128))
        side = size // 2 // 2 // 2
        super().__init__(
            nn.Conv2d(in_channels, c1, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(c3 * side * side, d),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(d, classes),
        )
        self.in_channels = in_channels


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.skip = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


class SmallResNet(nn.Module):
    """A three-stage ResNet (basic blocks, BatchNorm), widths ``16·w, 32·w, 64·w``.

    Shapes: ``(N, in_channels, H, W)`` → ``(N, classes)``.

    Parameters
    ----------
    in_channels, classes : int
    width : float
        Channel-width multiplier.
    blocks : int
        Basic blocks per stage.
    """

    def __init__(
        self, *, in_channels: int = 1, classes: int = 10, width: float = 1.0, blocks: int = 1
    ) -> None:
        super().__init__()
        w = [max(1, round(c * width)) for c in (16, 32, 64)]
        self.in_channels = in_channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, w[0], 3, 1, 1, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU()
        )
        layers: list[nn.Module] = []
        cin = w[0]
        for i, c in enumerate(w):
            for b in range(blocks):
                layers.append(_Block(cin, c, 2 if (i > 0 and b == 0) else 1))
                cin = c
        self.stages = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


MODELS = ("small-cnn", "resnet")


def build_model(
    name: str, *, in_channels: int = 1, classes: int = 10, width: float = 1.0
) -> nn.Module:
    """The CLI's registry: ``"small-cnn"`` or ``"resnet"``.

    Parameters
    ----------
    name : {"small-cnn", "resnet"}
    in_channels : int
    classes : int
    width : float
        Channel-width multiplier.
    """
    if name == "small-cnn":
        return SmallCNN(in_channels=in_channels, classes=classes, width=width)
    if name == "resnet":
        return SmallResNet(in_channels=in_channels, classes=classes, width=width)
    raise ValueError(f"model must be one of {MODELS}, got {name!r}")
