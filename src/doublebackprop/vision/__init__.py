"""The image study: robust models have interpretable saliency maps (Etmann et al., ICML 2019).

Image data (Fashion-MNIST, MNIST, scikit-learn digits), small CNNs, plain / gradient-norm /
PGD-adversarial training, and the study with its report (``doublebackprop robustness``).
"""

from doublebackprop.vision.datasets import DATASETS, ImageData, load_dataset
from doublebackprop.vision.models import MODELS, SmallCNN, SmallResNet, build_model
from doublebackprop.vision.study import StudyConfig, evaluate_model, quick_config, run_study
from doublebackprop.vision.training import TrainConfig, TrainSummary, train_model

__all__ = [
    "DATASETS",
    "MODELS",
    "ImageData",
    "SmallCNN",
    "SmallResNet",
    "StudyConfig",
    "TrainConfig",
    "TrainSummary",
    "build_model",
    "evaluate_model",
    "load_dataset",
    "quick_config",
    "run_study",
    "train_model",
]
