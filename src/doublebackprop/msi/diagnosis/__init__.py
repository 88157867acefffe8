"""From annotated tissue to typed slides: train a calibrated tumour typer once
(:func:`train_typer`, ``msi train``), save it as a bundle, load it (:func:`load_model`) and type
new, unannotated slides (:meth:`TumourTyper.predict`, ``msi predict``)."""

from doublebackprop.msi.diagnosis.bundle import Bundle, ModelConfig, load_bundle, save_bundle
from doublebackprop.msi.diagnosis.calibration import (
    expected_calibration_error,
    fit_temperature,
    reliability_curve,
)
from doublebackprop.msi.diagnosis.train import TrainedTyper, TyperSettings, train_typer
from doublebackprop.msi.diagnosis.typer import Prediction, TumourTyper, load_model

__all__ = [
    "Bundle",
    "ModelConfig",
    "Prediction",
    "TrainedTyper",
    "TumourTyper",
    "TyperSettings",
    "expected_calibration_error",
    "fit_temperature",
    "load_bundle",
    "load_model",
    "reliability_curve",
    "save_bundle",
    "train_typer",
]
