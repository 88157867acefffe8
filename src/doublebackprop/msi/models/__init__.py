"""Tumour-typing models: IsotopeNet, a deeper 1-D ResNet and the linear baseline."""

from doublebackprop.msi.models.linear import LinearBaseline, LinearFit, roc_auc_per_feature
from doublebackprop.msi.models.networks import IsotopeNet, ResNet1d, isotopenet_output_length

__all__ = [
    "IsotopeNet",
    "LinearBaseline",
    "LinearFit",
    "ResNet1d",
    "isotopenet_output_length",
    "roc_auc_per_feature",
]
