"""The model bundle: everything needed to type new slides exactly as the model was trained.

A bundle is a folder::

    bundle.json      format and version, architecture, classes, the m/z axis, the exact
                     preprocessing pipeline, the temperature, validation and calibration metrics,
                     provenance (input files with UUID/SHA-1, settings, package versions) and the
                     SHA-256 of the weights
    weights.pt       the state dict, loaded with ``torch.load(weights_only=True)``
    reliability.png  the reliability diagram before and after temperature scaling (written by
                     :mod:`.train`)

It is written to a temporary folder beside the target and renamed into place, so a failed write
leaves an existing bundle as it was.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from doublebackprop.common.files import atomic_directory, file_digest
from doublebackprop.msi.data.preprocess import Pipeline
from doublebackprop.msi.models import IsotopeNet, LinearFit, ResNet1d

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "ARCHITECTURES",
    "Bundle",
    "LinearScores",
    "ModelConfig",
    "build_network",
    "load_bundle",
    "save_bundle",
]

BUNDLE_FORMAT = "doublebackprop-msi-model"
BUNDLE_VERSION = 1
ARCHITECTURES = ("isotopenet", "resnet1d", "linear")
_WEIGHTS = "weights.pt"
_META = "bundle.json"


class LinearScores(nn.Module):
    """The linear baseline as a module: class scores ``x W^T + b`` over the whole spectrum.

    Built from a fitted :class:`~doublebackprop.msi.models.LinearFit` (its LDA on the selected
    bins; the other bins get weight 0), so a bundle holds no pickled scikit-learn object and its
    relevance ``x ⊙ ∇_x z_y = x ⊙ w_y`` comes from the same gradient path as the networks'.

    Shapes
    ------
    ``(N, L)`` → ``(N, K)``.
    """

    def __init__(self, input_length: int, num_classes: int) -> None:
        super().__init__()
        self.input_length, self.num_classes = input_length, num_classes
        self.linear = nn.Linear(input_length, num_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    @classmethod
    def from_fit(cls, fit: LinearFit, input_length: int, num_classes: int) -> LinearScores:
        """The module whose scores equal ``fit.decision_function``."""
        module = cls(input_length, num_classes)
        lda: Any = fit.lda
        intercept = np.asarray(lda.intercept_, dtype=np.float64)
        if intercept.shape[0] == 1:  # binary LDA: one score s, the classes get [-s/2, s/2]
            intercept = np.concatenate([-intercept / 2, intercept / 2])
        with torch.no_grad():
            module.linear.weight.copy_(torch.from_numpy(fit.coefficients(input_length)))
            module.linear.bias.copy_(torch.from_numpy(intercept))
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.reshape(x.shape[0], -1))


@dataclass(frozen=True)
class ModelConfig:
    """How to rebuild the network: architecture name, input length, classes, keyword options."""

    architecture: str
    input_length: int
    num_classes: int
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"model architecture must be one of {', '.join(ARCHITECTURES)}, "
                f"got {self.architecture!r}"
            )


def build_network(config: ModelConfig) -> nn.Module:
    """A freshly initialised network for ``config`` (the caller seeds the generator)."""
    if config.architecture == "isotopenet":
        return IsotopeNet(config.input_length, config.num_classes, **config.options)
    if config.architecture == "resnet1d":
        return ResNet1d(config.input_length, config.num_classes, **config.options)
    return LinearScores(config.input_length, config.num_classes)


@dataclass(frozen=True, eq=False)
class Bundle:
    """A trained, calibrated tumour-typing model with its preprocessing.

    ``mz`` ``(L,)`` is the model's input axis (the centres of the pipeline's bins); ``classes``
    the class names in logit order; ``temperature`` divides the logits before the softmax.
    """

    config: ModelConfig
    state: dict[str, torch.Tensor]
    pipeline: Pipeline
    mz: np.ndarray
    classes: tuple[str, ...]
    temperature: float
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def network(self) -> nn.Module:
        """The network with the bundle's weights, in eval mode."""
        net = build_network(self.config)
        net.load_state_dict(self.state)
        return net.eval()


def save_bundle(
    bundle: Bundle, directory: str | Path, *, extra_files: dict[str, Path] | None = None
) -> Path:
    """Write ``bundle`` to ``directory`` atomically (see the module docstring).

    ``extra_files`` (name → existing file) are copied into the bundle, e.g. the reliability diagram.
    """
    from doublebackprop import __version__

    target = Path(directory)
    with atomic_directory(target) as tmp:
        torch.save({k: v.detach().cpu() for k, v in bundle.state.items()}, tmp / _WEIGHTS)
        meta = {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "package_version": __version__,
            "model": {
                "architecture": bundle.config.architecture,
                "input_length": bundle.config.input_length,
                "num_classes": bundle.config.num_classes,
                "options": bundle.config.options,
            },
            "classes": list(bundle.classes),
            "mz": [float(v) for v in bundle.mz],
            "preprocessing": json.loads(bundle.pipeline.to_json()),
            "temperature": float(bundle.temperature),
            "metrics": bundle.metrics,
            "provenance": bundle.provenance,
            "weights_sha256": file_digest(tmp / _WEIGHTS),
        }
        (tmp / _META).write_text(json.dumps(meta, indent=1, default=_json_default))
        for name, src in (extra_files or {}).items():
            shutil.copyfile(src, tmp / name)
    return target


def _json_default(o: object) -> object:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def load_bundle(directory: str | Path) -> Bundle:
    """Read a bundle written by :func:`save_bundle`, refusing corrupt or incompatible ones.

    Raises
    ------
    FileNotFoundError
        The folder, ``bundle.json`` or ``weights.pt`` is missing.
    ValueError
        Not a bundle, a bundle of another format version, weights whose checksum does not match
        (a corrupted or replaced file), or weights that do not fit the architecture.
    """
    d = Path(directory)
    meta_path, weights = d / _META, d / _WEIGHTS
    for p in (d, meta_path, weights):
        if not p.exists():
            raise FileNotFoundError(f"{p}: not found (is {d} a model bundle from `msi train`?)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{meta_path}: corrupt bundle metadata ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"{meta_path}: not a doublebackprop MSI model bundle")
    if meta.get("version") != BUNDLE_VERSION:
        raise ValueError(
            f"{meta_path}: bundle format version {meta.get('version')!r} (written by "
            f"doublebackprop {meta.get('package_version', '?')}); this version reads "
            f"version {BUNDLE_VERSION}: retrain with `msi train`"
        )
    if file_digest(weights) != meta.get("weights_sha256"):
        raise ValueError(f"{weights}: checksum mismatch: the weights file is corrupt or replaced")
    from doublebackprop.common.training import load_checkpoint

    state = load_checkpoint(weights)
    m = meta["model"]
    config = ModelConfig(
        m["architecture"], int(m["input_length"]), int(m["num_classes"]), m["options"]
    )
    bundle = Bundle(
        config=config,
        state=state,
        pipeline=Pipeline.from_json(json.dumps(meta["preprocessing"])),
        mz=np.asarray(meta["mz"], dtype=np.float64),
        classes=tuple(meta["classes"]),
        temperature=float(meta["temperature"]),
        metrics=meta.get("metrics", {}),
        provenance=meta.get("provenance", {}),
    )
    if len(bundle.mz) != config.input_length or len(bundle.classes) != config.num_classes:
        raise ValueError(f"{meta_path}: axis or classes do not match the model configuration")
    try:
        bundle.network()
    except RuntimeError as exc:
        raise ValueError(
            f"{weights}: weights do not fit the {config.architecture} model: {exc}"
        ) from exc
    return bundle
