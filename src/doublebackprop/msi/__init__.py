"""Mass-spectrometry imaging: imzML data, preprocessing, a multi-lab simulator and the
tumour-typing experiment (IsotopeNet, Deep Relevance Regularization).

Subpackages: ``data`` (files to spectra tables) ← ``simulate`` (a virtual cohort written as
imzML) and ``models``/``training`` ← ``experiment`` (the inter-lab protocol and its report) ←
``diagnosis`` (train a calibrated typer once, type new slides) ← ``demo``.
"""

from doublebackprop.msi.diagnosis import TumourTyper, load_model, train_typer
from doublebackprop.msi.models import IsotopeNet, LinearBaseline, ResNet1d
from doublebackprop.msi.training import TrainConfig, TrainResult, predict_logits, train_model

__all__ = [
    "IsotopeNet",
    "LinearBaseline",
    "ResNet1d",
    "TrainConfig",
    "TrainResult",
    "TumourTyper",
    "load_model",
    "predict_logits",
    "train_model",
    "train_typer",
]
