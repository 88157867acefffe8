"""The parameters of a simulated cohort."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from doublebackprop.msi.simulate.labs import (
    BatchProtocol,
    LabProfile,
    _default_labs,
    _default_protocols,
)

__all__ = ["SimulationConfig"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimulationConfig:
    """Parameters of the virtual cohort; defaults give ~2,400 spectra in well under a minute.

    Cohort: ``patients_per_lab`` (split evenly over ``classes``) × ``cores_per_patient`` ×
    ``spots_per_core``; one imzML per (lab, batch). Axis: ``n_points`` samples uniform in
    √(m/z) over ``mz_min``–``mz_max`` (≈0.11 Da at m/z 1000; cropping to 700–2000 and binning at
    0.5 Da gives 2,600 bins). Biology: ``n_biomarkers`` peptides with class log-fold change
    ``biomarker_log_fold_change`` (natural log), variability ``patient_sd`` > ``core_sd`` >
    ``spot_sd`` (log scale) and a per-spot yield factor ``spot_yield_sd``; ``spot_baseline_sd``
    is the spot-to-spot log-sd of the chemical background. ``confounding`` is the fraction of a
    class's patients put in "its" batch. ``counts_scale``: apex counts of a
    median-abundance monoisotopic peak in lab A. ``proteome``: ``"embedded"`` or a FASTA path
    (human entries are used when it is a UniProt sample). ``mode``: imzML mode of the output.

    Examples
    --------
    >>> cfg = SimulationConfig(seed=1)
    >>> big = SimulationConfig.preset("large", seed=1)
    """

    seed: int = 0
    classes: tuple[str, str] = ("breast", "ovarian")
    labs: tuple[LabProfile, ...] = field(default_factory=_default_labs)
    protocols: tuple[BatchProtocol, ...] = field(default_factory=_default_protocols)
    patients_per_lab: int = 20
    cores_per_patient: int = 3
    spots_per_core: int = 20
    confounding: float = 0.9
    mz_min: float = 600.0
    mz_max: float = 2100.0
    n_points: int = 12000
    n_biomarkers: int = 6
    biomarker_log_fold_change: float = 1.4
    biomarker_abundance: tuple[float, float] = (0.75, 0.99)
    patient_sd: float = 0.45
    core_sd: float = 0.2
    spot_sd: float = 0.25
    spot_yield_sd: float = 0.35
    spot_baseline_sd: float = 0.3
    counts_scale: float = 300.0
    proteome: str = "embedded"
    mode: str = "continuous"
    pixel_size_um: float = 50.0

    def __post_init__(self) -> None:
        if len(self.classes) != 2 or self.classes[0] == self.classes[1]:
            raise ValueError(f"classes must be two distinct names, got {self.classes}")
        if len({lab.name for lab in self.labs}) != len(self.labs) or not self.labs:
            raise ValueError("labs must have distinct names")
        if not self.protocols:
            raise ValueError("at least one batch protocol is needed")
        if self.patients_per_lab < 2 or self.cores_per_patient < 1 or self.spots_per_core < 1:
            raise ValueError("patients_per_lab >= 2, cores_per_patient >= 1, spots_per_core >= 1")
        lo, hi = self.biomarker_abundance
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(
                f"biomarker_abundance must be quantiles 0 <= lo < hi <= 1, got {(lo, hi)}"
            )
        if not 0.0 <= self.confounding <= 1.0:
            raise ValueError(f"confounding must be in [0, 1], got {self.confounding}")
        if not 0 < self.mz_min < self.mz_max or self.n_points < 100:
            raise ValueError("need 0 < mz_min < mz_max and n_points >= 100")
        if self.mode not in ("continuous", "processed"):
            raise ValueError(f"mode must be 'continuous' or 'processed', got {self.mode!r}")

    @classmethod
    def preset(cls, size: str, **overrides: Any) -> SimulationConfig:
        """``"tiny"`` (tests: 2×4 patients, 2 spots/core, 3,000 points), ``"default"``, or
        ``"large"`` (2×60 patients × 4 cores × 40 spots = 19,200 spectra, ~0.9 GB)."""
        sizes = {
            "tiny": dict(patients_per_lab=4, cores_per_patient=1, spots_per_core=3, n_points=3000),
            "default": {},
            "large": dict(patients_per_lab=60, cores_per_patient=4, spots_per_core=40),
        }
        if size not in sizes:
            raise ValueError(f"size must be one of {sorted(sizes)}, got {size!r}")
        return cls(**{**sizes[size], **overrides})
