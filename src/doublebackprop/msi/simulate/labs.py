"""The chemistry and the lab/batch profiles the simulator renders: matrix and contaminant peaks,
calibrants, and what differs between labs and between preparation batches."""

from __future__ import annotations

import logging
from dataclasses import dataclass

__all__ = ["BatchProtocol", "LabProfile"]

logger = logging.getLogger(__name__)

NA_SHIFT = 21.981943  # [M+Na]+ − [M+H]+
CHCA = 189.042593  # α-cyano-4-hydroxycinnamic acid, monoisotopic
PROTON, SODIUM, POTASSIUM = 1.007276, 22.989218, 38.963158
#: porcine trypsin autolysis [M+H]+ and common human keratin peptides (classic MALDI contaminants)
TRYPSIN_KERATIN = (
    (842.5100, 1.0),
    (1045.5642, 0.6),
    (1940.9354, 0.4),
    (1179.6010, 0.5),
    (1475.7497, 0.5),
    (1707.7727, 0.4),
    (1716.8517, 0.35),
    (1993.9772, 0.3),
)
#: calibrant peptides (bradykinin 1-7, angiotensin II/I, substance P, bombesin, ACTH 1-17)
CALIBRANTS = (
    (757.3992, 0.3),
    (1046.5418, 0.5),
    (1296.6848, 0.4),
    (1347.7354, 0.35),
    (1619.8223, 0.3),
    (2093.0862, 0.2),
)


@dataclass(frozen=True)
class LabProfile:
    """Instrument and laboratory artefacts of one lab (see the module docstring)."""

    name: str
    calibration_offset_ppm: float = 0.0
    calibration_drift_ppm: float = 0.0  # extra error at mz_max relative to mz_min
    spot_calibration_sd_ppm: float = 15.0
    fwhm_at_1000: float = 0.25  # Da; resolving power 1000/fwhm
    gain: float = 1.0  # detector gain × ion yield
    baseline_level: float = 120.0  # counts at mz_min
    baseline_decay: float = 350.0  # Da
    baseline_hump: float = 0.25  # broad chemical-noise hump, fraction of the level
    noise_sd: float = 3.0  # counts
    sodium_fraction: float = 0.08
    response_sd: float = 0.15  # lab-specific peptide ionisation differences (log scale)
    contaminants: tuple[tuple[float, float], ...] = ()  # (m/z, area relative to median peptide)


@dataclass(frozen=True)
class BatchProtocol:
    """Processing-batch artefacts (one per TMA slide), shared by all labs."""

    name: str
    calibration_shift_ppm: float = 0.0
    baseline_factor: float = 1.0
    baseline_tilt: float = 0.0  # relative baseline slope over the range (matrix layer, drying)
    matrix_factor: float = 1.0
    mass_bias: float = 0.0  # log peptide-yield ratio mz_max : mz_min (matrix layer, fluence)
    peg_intensity: float = 0.0  # area of the strongest PEG peak relative to the median peptide
    peg_presence: float = 0.85  # fraction of spots showing the PEG series
    contaminants: tuple[tuple[float, float], ...] = ()
    contaminant_scale: float = 0.0  # multiplies the relative areas of ``contaminants``


def _default_labs() -> tuple[LabProfile, ...]:
    return (
        LabProfile(
            "A",
            calibration_offset_ppm=10.0,
            calibration_drift_ppm=-20.0,
            fwhm_at_1000=0.25,
            gain=1.0,
            baseline_level=120.0,
            baseline_decay=350.0,
            baseline_hump=0.25,
            noise_sd=3.0,
            sodium_fraction=0.06,
            contaminants=CALIBRANTS,
        ),
        LabProfile(
            "B",
            calibration_offset_ppm=40.0,
            calibration_drift_ppm=30.0,
            spot_calibration_sd_ppm=20.0,
            fwhm_at_1000=0.3,
            gain=0.6,
            baseline_level=150.0,
            baseline_decay=450.0,
            baseline_hump=0.4,
            noise_sd=5.0,
            sodium_fraction=0.12,
            contaminants=((1001.60, 0.4), (1322.81, 0.3), (1523.44, 0.25)),
        ),
    )


def _default_protocols() -> tuple[BatchProtocol, ...]:
    return (
        BatchProtocol(
            "peg-detergent",
            calibration_shift_ppm=12.0,
            baseline_factor=1.2,
            baseline_tilt=0.5,
            matrix_factor=0.7,
            mass_bias=0.5,
            peg_intensity=0.6,
            peg_presence=0.55,
            contaminants=TRYPSIN_KERATIN,
            contaminant_scale=0.5,
        ),
        BatchProtocol(
            "digest-residue",
            calibration_shift_ppm=-12.0,
            baseline_factor=0.83,
            baseline_tilt=-0.5,
            matrix_factor=1.8,
            mass_bias=-0.5,
            peg_intensity=0.6,
            peg_presence=0.4,
            contaminants=TRYPSIN_KERATIN,
            contaminant_scale=0.8,
        ),
    )
