"""Reference networks for tests, benchmarks and demos (plain ``torch.nn``, no torchvision)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "mlp",
    "cnn2d",
    "resnet18_like",
    "spectra_cnn1d",
    "dcgan_discriminator",
    "isotopenet",
    "BasicBlock",
]


def mlp(
    in_features: int, hidden: int, depth: int, classes: int, act: type[nn.Module] = nn.ReLU
) -> nn.Sequential:
    """``in → hidden^depth → classes`` with ``act`` between layers.

    Parameters
    ----------
    in_features, hidden, depth, classes : int
    act : type of nn.Module
    """
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), act()]
        width = hidden
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


def cnn2d(
    in_channels: int = 1,
    size: int = 28,
    classes: int = 10,
    widths: tuple[int, ...] = (32, 64),
    act: type[nn.Module] = nn.ReLU,
    pool: type[nn.Module] = nn.MaxPool2d,
) -> nn.Sequential:
    """A small 2-D CNN: [conv3×3 → act → pool2] per width, then a dense head.

    Parameters
    ----------
    in_channels, size, classes : int
    widths : tuple of int
    act, pool : type of nn.Module
    """
    layers: list[nn.Module] = []
    c = in_channels
    for w in widths:
        layers += [nn.Conv2d(c, w, 3, padding=1), act(), pool(2)]
        c, size = w, size // 2
    layers += [nn.Flatten(), nn.Linear(c * size * size, 128), act(), nn.Linear(128, classes)]
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """ResNet basic block: conv-BN-ReLU-conv-BN plus (projected) identity, ReLU after the add."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.skip(x))


def resnet18_like(
    in_channels: int = 3, classes: int = 10, width: int = 64, blocks: tuple[int, ...] = (2, 2, 2, 2)
) -> nn.Sequential:
    """ResNet-18 layout for 32×32 inputs (3×3 stem, no max-pool), widths ``width·2^k``.

    Parameters
    ----------
    in_channels, classes, width : int
    blocks : tuple of int
        Basic blocks per stage.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
    ]
    c = width
    for stage, n in enumerate(blocks):
        cout = width * 2**stage
        for i in range(n):
            layers.append(BasicBlock(c, cout, 2 if (i == 0 and stage > 0) else 1))
            c = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, classes)]
    return nn.Sequential(*layers)


def spectra_cnn1d(
    classes: int = 2,
    stages: tuple[tuple[int, int], ...] = ((32, 1), (32, 2), (64, 2), (64, 2), (128, 2), (128, 2)),
    kernel_size: int = 9,
    act: type[nn.Module] = nn.ReLU,
) -> nn.Sequential:
    """A 1-D CNN for spectra: strided conv stages, adaptive average pooling, dense head.

    Parameters
    ----------
    classes : int
    stages : tuple of (channels, stride)
    kernel_size : int
    act : type of nn.Module
    """
    layers: list[nn.Module] = []
    c = 1
    for cout, stride in stages:
        layers += [nn.Conv1d(c, cout, kernel_size, stride, kernel_size // 2), act()]
        c = cout
    layers += [nn.AdaptiveAvgPool1d(16), nn.Flatten(), nn.Linear(c * 16, classes)]
    return nn.Sequential(*layers)


def isotopenet(length: int, classes: int = 2, **kwargs: object) -> nn.Module:
    """The MSI application's IsotopeNet (:class:`doublebackprop.msi.models.IsotopeNet`), the
    spectra network the engine is benchmarked and tested on. ``tools`` is the top layer, so the
    engine's reference nets may reach the application here and nowhere lower."""
    from doublebackprop.msi.models import IsotopeNet

    return IsotopeNet(length, classes, **kwargs)  # type: ignore[arg-type]


def dcgan_discriminator(in_channels: int = 3, width: int = 64) -> nn.Sequential:
    """DCGAN's 64×64 discriminator (Radford et al.): four stride-2 4×4 convs with LeakyReLU(0.2),
    BatchNorm after all but the first, a 4×4 conv to one score; returns ``(N, 1)``."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, 2, 1, bias=False)]
    layers.append(nn.LeakyReLU(0.2))
    c = width
    for _ in range(3):
        layers += [nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * c)]
        layers.append(nn.LeakyReLU(0.2))
        c *= 2
    layers += [nn.Conv2d(c, 1, 4, 1, 0, bias=False), nn.Flatten()]
    return nn.Sequential(*layers)
