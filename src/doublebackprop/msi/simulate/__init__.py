"""A virtual two-lab MALDI imaging cohort with known biomarkers and lab/batch artefacts."""

from doublebackprop.msi.simulate.cohort import SimulatedCohort, simulate_cohort
from doublebackprop.msi.simulate.config import SimulationConfig
from doublebackprop.msi.simulate.labs import NA_SHIFT, BatchProtocol, LabProfile
from doublebackprop.msi.simulate.peptides import (
    Peptide,
    digest,
    embedded_proteome,
    isotope_envelope,
    read_fasta,
)
from doublebackprop.msi.simulate.spectra import mz_axis

__all__ = [
    "NA_SHIFT",
    "BatchProtocol",
    "LabProfile",
    "Peptide",
    "SimulatedCohort",
    "SimulationConfig",
    "digest",
    "embedded_proteome",
    "isotope_envelope",
    "mz_axis",
    "read_fasta",
    "simulate_cohort",
]
