"""MSI data: imzML input/output, annotation tables, preprocessing, spectra tables and HDF5
stores, patient-grouped splits and the real fiedler2009subset spectra."""

from doublebackprop.msi.data.annotations import Annotations, read_annotations
from doublebackprop.msi.data.dataset import LoadPlan, SpectraTable, load_table, plan_loading
from doublebackprop.msi.data.imzml import ImzMLReader, ImzMLWriter, open_imzml, write_imzml
from doublebackprop.msi.data.preprocess import Bin, Crop, Pipeline, Step, TICNormalize
from doublebackprop.msi.data.splits import grouped_stratified_kfold, lab_split
from doublebackprop.msi.data.store import SpectraDataset, SpectraStore, build_store, open_store

__all__ = [
    "Annotations",
    "Bin",
    "Crop",
    "ImzMLReader",
    "ImzMLWriter",
    "LoadPlan",
    "Pipeline",
    "SpectraDataset",
    "SpectraStore",
    "SpectraTable",
    "Step",
    "TICNormalize",
    "build_store",
    "grouped_stratified_kfold",
    "lab_split",
    "load_table",
    "open_imzml",
    "open_store",
    "plan_loading",
    "read_annotations",
    "write_imzml",
]
