"""A virtual multi-lab MALDI-TOF imaging cohort of tissue microarrays (TMAs).

It reproduces the *structure* of the Deep Relevance Regularization study (DESIGN §1, §5): two
labs measure TMA cores of patients with two tumour types; the biology is a small, sparse set of
peptides whose abundance differs between the types and is the same in every lab; everything else a
flexible model could learn from — calibration, peak shape, baseline, contaminants — depends on
the lab and on the processing batch, and inside each lab the tumour types are unevenly spread
over batches, in opposite directions in the two labs. A model that learns batch artefacts in one
lab is therefore *wrong* in the other; a model that uses the true peptides transfers.

Spectrum model (counts per m/z sample, positive-ion reflector MALDI-TOF, m/z 600–2100):

* **Peptides** — tryptic digests (≤ 1 missed cleavage) of real human proteins (an embedded list of
  abundant tissue proteins, or the human entries of a UniProt FASTA), monoisotopic [M+H]+ from
  pyteomics, coarse isotope envelopes from the elemental composition. Base abundance: protein prior
  × log-normal ionisation efficiency × the arginine effect (Arg-terminated peptides ionise
  ~2.5× better in MALDI).
* **Biology** — per patient, core and spot, every peptide's log-abundance gets independent normal
  deviations (patient > core > spot, i.e. inter-patient heterogeneity dominates, as in real TMAs);
  ``n_biomarkers`` peptides differ by ±``biomarker_log_fold_change``/2 between the classes (half
  higher in each class; default 1.4, i.e. a 4-fold difference, a typical size for the peptide
  markers that separate carcinoma types in MALDI imaging), somewhat larger than the patient
  variability: clear per patient, but not error-free spot by spot. Biomarkers are drawn from
  the stronger peptide peaks (``biomarker_abundance`` quantiles 0.75–0.99): reported MALDI
  markers are peaks that survive peak picking in most spectra. Each spot also gets a global
  yield factor (crystal/laser variation).
* **Instrument** — Gaussian peaks of constant resolving power (FWHM ∝ m/z, as for a TOF at
  fixed time resolution); sampling uniform in √(m/z) (a TOF digitiser samples uniformly in time,
  t ∝ √(m/z)); ion counts are Poisson, plus Gaussian electronic noise.
* **Matrix** — CHCA cluster ions [nM+H]+, [nM+Na]+, [nM+K]+ (n = 3, 4, 5) and a chemical-noise
  background decaying from low mass, plus a broad hump.

Lab artefacts (:class:`LabProfile`), each a documented difference between real instruments:
calibration offset and linear drift (ppm; calibrant and temperature), spot-to-spot calibration
jitter (sample height on the target), resolving power (instrument model/tuning), detector gain
(intensity scale and thus TIC), baseline level/decay/hump (matrix type and thickness), electronic
noise, sodium-adduct fraction (salt in the washing buffers), and lab-specific contaminant peaks
(calibrant peptides carried over on the target).

Batch artefacts (:class:`BatchProtocol`, shared by the labs): each TMA slide (= one imzML file) is
processed in one batch, and a batch leaves *diffuse* marks that touch hundreds of m/z bins:
chemical-background level and tilt (matrix amount and drying), strength of the matrix cluster
ions (matrix layer thickness), a smooth mass-dependent peptide yield (``mass_bias``: thick matrix
layers and high laser fluence favour small peptides, thin layers larger ones) and a calibration
shift. The spot-to-spot background level varies with ``spot_baseline_sd`` (matrix crystals are
heterogeneous). Sharp contaminant series are *not* batch-exclusive: trypsin autolysis and
keratin peaks occur in every on-tissue digest (somewhat more in the "digest-residue" batch), and
the poly(ethylene glycol) [M+Na]+ series (44.026 Da spacing; detergent/plastics) is patchy in both
batches (present in 55 % vs 40 % of spots) — so inside a lab they are at most weak class markers,
as in real data where such contaminants come and go between spots. Confounder: in lab ``j`` a
fraction ``confounding`` of the patients of class ``c`` is placed in batch ``(c + j) mod
n_batches`` (a lab processes the slides of one tumour type together), so with two labs the
class↔batch association flips. A model that uses all bins can separate the classes inside a
lab from the summed diffuse batch marks and fails in the other lab; a model with sparse relevance
is best served by the few biomarker peaks, the strongest *single-bin* class signal in both labs.

Everything is deterministic by ``seed`` (independent :class:`numpy.random.Generator` streams per
lab/patient/core, so changing the cohort size does not re-draw the others).
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .io import ImzMLWriter
from .peptides import ISOTOPE_SPACING, Peptide, digest, embedded_proteome, human_entries

__all__ = ["BatchProtocol", "LabProfile", "SimulatedCohort", "SimulationConfig", "simulate_cohort"]

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


@dataclass(frozen=True)
class SimulatedCohort:
    """Paths written by :func:`simulate_cohort`."""

    out_dir: Path
    annotations: Path
    biomarkers: Path
    ground_truth: Path
    imzml_files: tuple[Path, ...]
    n_spectra: int


def mz_axis(cfg: SimulationConfig) -> np.ndarray:
    """The instrument's sampling axis: uniform in √(m/z) (uniform in flight time)."""
    s = np.linspace(np.sqrt(cfg.mz_min), np.sqrt(cfg.mz_max), cfg.n_points)
    return s * s


def _core_layout(n_spots: int) -> np.ndarray:
    """Offsets (n_spots, 2) of the spots of one circular core, centre first."""
    r = int(np.ceil(np.sqrt(n_spots / np.pi))) + 1
    g = np.stack(np.meshgrid(np.arange(-r, r + 1), np.arange(-r, r + 1), indexing="xy"), -1)
    g = g.reshape(-1, 2)
    d = (g**2).sum(1) + 1e-3 * (g[:, 1] * (2 * r + 1) + g[:, 0])  # deterministic ties
    return g[np.argsort(d)[:n_spots]]


def _choose_biomarkers(
    peps: list[Peptide], cfg: SimulationConfig, rng: np.random.Generator, avoid: np.ndarray
) -> list[int]:
    ab = np.array([p.abundance for p in peps])
    mz = np.array([p.mz for p in peps])
    lo, hi = np.quantile(ab, cfg.biomarker_abundance)
    ok = (mz > 850) & (mz < 1950) & (ab >= lo) & (ab <= hi)
    ok &= np.array([np.min(np.abs(avoid - m)) > 3.0 if avoid.size else True for m in mz])
    cand = [i for i in np.flatnonzero(ok)]
    cand = [cand[i] for i in rng.permutation(len(cand))]
    chosen: list[int] = []
    proteins: set[str] = set()
    for i in cand:  # distinct proteins, well separated masses
        if peps[i].protein in proteins or any(abs(mz[i] - mz[j]) < 5 for j in chosen):
            continue
        chosen.append(int(i))
        proteins.add(peps[i].protein)
        if len(chosen) == cfg.n_biomarkers:
            break
    if len(chosen) < cfg.n_biomarkers:
        raise ValueError(f"only {len(chosen)} suitable biomarker peptides; lower n_biomarkers")
    return sorted(chosen, key=lambda i: mz[i])


def _render(
    axis: np.ndarray,
    dm: np.ndarray,
    mu: np.ndarray,
    area: np.ndarray,
    sigma: np.ndarray,
    half: int = 7,
) -> np.ndarray:
    """Sum of Gaussian peaks (S, P) of given area onto ``axis``; returns (S, L) counts."""
    s_n, _ = mu.shape
    length = len(axis)
    centre = np.searchsorted(axis, mu)
    idx = np.clip(centre[..., None] + np.arange(-half, half + 1), 0, length - 1)
    z = ((axis[idx] - mu[..., None]) / sigma[..., None]).astype(np.float32)
    amp = (area / (sigma * np.sqrt(2 * np.pi))).astype(np.float32)
    val = amp[..., None] * np.exp(-0.5 * z * z) * dm[idx].astype(np.float32)
    flat = (np.arange(s_n)[:, None, None] * length + idx).ravel()
    return np.bincount(flat, weights=val.ravel(), minlength=s_n * length).reshape(s_n, length)


class _Cohort:
    """Internal state: peptides, biomarker effects, lab/batch plan."""

    def __init__(self, cfg: SimulationConfig) -> None:
        self.cfg = cfg
        rng = np.random.default_rng([cfg.seed, 0])
        prot = embedded_proteome() if cfg.proteome == "embedded" else human_entries(cfg.proteome)
        if not prot:
            raise ValueError(f"proteome {cfg.proteome!r} holds no (human) protein")
        self.peptides = digest(prot, mz_min=cfg.mz_min + 2, mz_max=cfg.mz_max - 8, rng=rng)
        ab = np.array([p.abundance for p in self.peptides])
        self.log_ab = np.log(ab / np.median(ab))
        self.env = np.array([p.envelope for p in self.peptides])  # (P, K)
        self.mono = np.array([p.mz for p in self.peptides])
        k = self.env.shape[1]
        self.iso_mz = (self.mono[:, None] + ISOTOPE_SPACING * np.arange(k)).ravel()
        self.iso_keep = self.env.ravel() >= 0.01
        self.iso_na = self.env.ravel() >= 0.08
        contam = [m for lab in cfg.labs for m, _ in lab.contaminants]
        contam += [m for pr in cfg.protocols for m, _ in pr.contaminants]
        contam += list(self.peg_mz())
        self.biomarkers = _choose_biomarkers(self.peptides, cfg, rng, np.asarray(contam))
        self.effect = np.zeros(len(self.peptides))  # + for class 1, − for class 0 (log scale)
        for k, i in enumerate(self.biomarkers):
            self.effect[i] = (-0.5 if k % 2 == 0 else 0.5) * cfg.biomarker_log_fold_change
        self.lab_response = {
            lab.name: np.random.default_rng([cfg.seed, 1, j]).normal(
                0, lab.response_sd, len(self.peptides)
            )
            for j, lab in enumerate(cfg.labs)
        }

    def peg_mz(self) -> np.ndarray:
        n = np.arange(12, 48)
        m = 18.010565 + 44.026215 * n + SODIUM
        return m[(m > self.cfg.mz_min) & (m < self.cfg.mz_max)]

    def batch_of_patients(self, j: int, labels: np.ndarray) -> np.ndarray:
        """Batch index of each patient of lab ``j`` (exact proportions, then shuffled)."""
        nb = len(self.cfg.protocols)
        rng = np.random.default_rng([self.cfg.seed, 2, j])
        out = np.zeros(len(labels), dtype=np.int64)
        for c in (0, 1):
            members = rng.permutation(np.flatnonzero(labels == c))
            pref = (c + j) % nb
            n_pref = (
                int(np.floor(self.cfg.confounding * len(members) + 0.5)) if nb > 1 else len(members)
            )
            others = [b for b in range(nb) if b != pref] or [pref]
            for k, p in enumerate(members):
                out[p] = pref if k < n_pref else others[k % len(others)]
        return out

    def spectra(
        self,
        lab: LabProfile,
        j: int,
        proto: BatchProtocol,
        label: int,
        patient_dev: np.ndarray,
        rng: np.random.Generator,
        n: int,
        axis: np.ndarray,
        dm: np.ndarray,
    ) -> np.ndarray:
        """(n, L) float32 counts for the spots of one core."""
        cfg = self.cfg
        core_dev = rng.normal(0, cfg.core_sd, len(self.peptides))
        log_a = (
            self.log_ab
            + self.lab_response[lab.name]
            + patient_dev
            + core_dev
            + (self.effect if label == 1 else -self.effect)
            + rng.normal(0, cfg.spot_sd, (n, len(self.peptides)))
        )
        yield_ = np.exp(rng.normal(0, cfg.spot_yield_sd, (n, 1)))
        a = np.exp(log_a) * yield_  # (n, P)
        keep, na = self.iso_keep, self.iso_na  # isotope peaks worth rendering (static masks)
        area = (a[:, :, None] * self.env[None]).reshape(n, -1)
        mus = [
            np.broadcast_to(self.iso_mz[keep], (n, int(keep.sum()))),
            np.broadcast_to(self.iso_mz[na] + NA_SHIFT, (n, int(na.sum()))),
        ]
        areas = [area[:, keep] * (1 - lab.sodium_fraction), area[:, na] * lab.sodium_fraction]
        if proto.mass_bias:  # smooth mass-dependent peptide yield of the batch
            for k in (0, 1):
                rel = (mus[k] - 0.5 * (cfg.mz_min + cfg.mz_max)) / (cfg.mz_max - cfg.mz_min)
                areas[k] = areas[k] * np.exp(proto.mass_bias * rel)
        # matrix clusters
        mc = [
            (i * CHCA + ion, np.exp(-1.1 * (i - 3)))
            for i in (3, 4, 5)
            for ion in (PROTON, SODIUM, POTASSIUM)
        ]
        mc_mz = np.array([m for m, _ in mc])
        mc_area = np.array([w for _, w in mc]) * 6.0 * proto.matrix_factor
        mus.append(np.broadcast_to(mc_mz, (n, mc_mz.size)))
        areas.append(mc_area * np.exp(rng.normal(0, 0.3, (n, mc_mz.size))))
        extra = [(m, w) for m, w in lab.contaminants]
        extra += [(m, w * proto.contaminant_scale) for m, w in proto.contaminants]
        if extra:
            em = np.array([m for m, _ in extra])
            mus.append(np.broadcast_to(em, (n, em.size)))
            areas.append(np.array([w for _, w in extra]) * np.exp(rng.normal(0, 0.5, (n, em.size))))
        if proto.peg_intensity > 0:
            pm = self.peg_mz()
            env = proto.peg_intensity * np.exp(-0.5 * ((pm - 1250.0) / 300.0) ** 2)
            present = rng.random((n, 1)) < proto.peg_presence
            mus.append(np.broadcast_to(pm, (n, pm.size)))
            areas.append(env * present * np.exp(rng.normal(0, 0.5, (n, 1))))
        mu_all = np.concatenate(mus, axis=1)
        area_all = np.concatenate(areas, axis=1)
        # calibration: lab offset + drift + batch shift + spot jitter (ppm)
        frac = (mu_all - cfg.mz_min) / (cfg.mz_max - cfg.mz_min)
        ppm = (
            lab.calibration_offset_ppm
            + lab.calibration_drift_ppm * frac
            + proto.calibration_shift_ppm
            + rng.normal(0, lab.spot_calibration_sd_ppm, (n, 1))
        )
        mu_obs = mu_all * (1 + 1e-6 * ppm)
        sigma = lab.fwhm_at_1000 * (mu_obs / 1000.0) / 2.3548
        # apex of a median monoisotopic peak at m/z 1000 (σ√(2π)/Δm ≈ 2.4, envelope[0] ≈ 0.55)
        scale = cfg.counts_scale * lab.gain * 2.4 / 0.55
        lam = _render(axis, dm, mu_obs, area_all * scale, sigma)
        x = axis - cfg.mz_min
        base = np.exp(-x / lab.baseline_decay) + lab.baseline_hump * np.exp(
            -0.5 * ((axis - 1100.0) / 350.0) ** 2
        )
        tilt = 1 + proto.baseline_tilt * ((axis - cfg.mz_min) / (cfg.mz_max - cfg.mz_min) - 0.5)
        base = lab.baseline_level * lab.gain * proto.baseline_factor * base * tilt
        lam += base[None] * np.exp(rng.normal(0, cfg.spot_baseline_sd, (n, 1)))
        counts = rng.poisson(np.maximum(lam, 0)).astype(np.float64)
        counts += rng.normal(0, lab.noise_sd, counts.shape)
        return np.maximum(counts, 0).astype(np.float32)


def simulate_cohort(
    out_dir: str | Path,
    config: SimulationConfig | None = None,
    *,
    progress: Callable[[int], None] | None = None,
) -> SimulatedCohort:
    """Simulate the cohort of ``config`` into ``out_dir``.

    Writes one ``lab<L>_batch<b>.imzML``/``.ibd`` per lab and batch, ``annotations.csv``
    (file, x, y, label, patient, lab, core, batch, protocol), ``biomarkers.csv`` (mz = true
    monoisotopic [M+H]+ of the class-dependent peptides, before any lab calibration error) and
    ``ground_truth.json`` (config, biomarkers, contaminants, batch plan). ``progress`` is called
    with the number of spectra written after every core (the CLI passes a tqdm update).

    Examples
    --------
    >>> paths = simulate_cohort("cohort", SimulationConfig(seed=0))  # doctest: +SKIP
    >>> paths.annotations.name
    'annotations.csv'
    """
    cfg = config or SimulationConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model = _Cohort(cfg)
    axis = mz_axis(cfg)
    dm = np.gradient(axis)
    layout = _core_layout(cfg.spots_per_core)
    span = int(2 * np.abs(layout).max() + 3)
    rows: list[list[Any]] = []
    files: list[Path] = []
    plan: dict[str, Any] = {}
    n_written = 0
    for j, lab in enumerate(cfg.labs):
        labels = np.arange(cfg.patients_per_lab) % 2
        batches = model.batch_of_patients(j, labels)
        for b, proto in enumerate(cfg.protocols):
            members = np.flatnonzero(batches == b)
            if members.size == 0:
                continue
            name = f"lab{lab.name}_batch{b + 1}.imzML"
            files.append(out / name)
            uid = np.random.default_rng([cfg.seed, 3, j, b]).bytes(16).hex()
            grid_w = int(np.ceil(np.sqrt(members.size * cfg.cores_per_patient)))
            writer = ImzMLWriter(
                out / name,
                mode=cfg.mode,
                mz=axis if cfg.mode == "continuous" else None,
                pixel_size_um=cfg.pixel_size_um,
                uuid=uid,
            )
            with writer:
                slot = 0
                for p in members.tolist():
                    pid = f"{lab.name}-P{p + 1:02d}"
                    prng = np.random.default_rng([cfg.seed, 4, j, p])
                    pdev = prng.normal(0, cfg.patient_sd, len(model.peptides))
                    plan[pid] = {
                        "lab": lab.name,
                        "label": cfg.classes[labels[p]],
                        "batch": b + 1,
                        "protocol": proto.name,
                    }
                    for c in range(cfg.cores_per_patient):
                        crng = np.random.default_rng([cfg.seed, 5, j, p, c])
                        spec = model.spectra(
                            lab, j, proto, int(labels[p]), pdev, crng, cfg.spots_per_core, axis, dm
                        )
                        cx, cy = slot % grid_w, slot // grid_w
                        slot += 1
                        core = f"{lab.name}-b{b + 1}-{cx + 1}{chr(65 + cy % 26)}"
                        for s, (ox, oy) in enumerate(layout.tolist()):
                            x = cx * span + span // 2 + ox + 1
                            y = cy * span + span // 2 + oy + 1
                            if cfg.mode == "continuous":
                                writer.add_spectrum(spec[s], (x, y))
                            else:  # processed profile: each spectrum carries its own m/z array
                                writer.add_spectrum(spec[s], (x, y), mz=axis)
                            rows.append(
                                [
                                    name,
                                    x,
                                    y,
                                    cfg.classes[labels[p]],
                                    pid,
                                    lab.name,
                                    core,
                                    b + 1,
                                    proto.name,
                                ]
                            )
                        n_written += cfg.spots_per_core
                        if progress is not None:
                            progress(cfg.spots_per_core)
    ann = out / "annotations.csv"
    with open(ann, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "x", "y", "label", "patient", "lab", "core", "batch", "protocol"])
        w.writerows(rows)
    bio = out / "biomarkers.csv"
    bm_rows = []
    for i in model.biomarkers:
        pep = model.peptides[i]
        env = np.asarray(pep.envelope)
        iso = [pep.mz + ISOTOPE_SPACING * k for k in range(len(env)) if env[k] >= 0.05]
        # the sodium adduct is rendered for isotopes with envelope >= 0.08 (``_Cohort.iso_na``)
        na = [pep.mz + NA_SHIFT + ISOTOPE_SPACING * k for k in range(len(env)) if env[k] >= 0.08]
        higher = cfg.classes[1] if model.effect[i] > 0 else cfg.classes[0]
        bm_rows.append(
            {
                "mz": round(pep.mz, 4),
                "mz_most_abundant": round(pep.mz + ISOTOPE_SPACING * int(env.argmax()), 4),
                "isotope_mz": ";".join(f"{m:.4f}" for m in iso),
                "adduct_mz": ";".join(f"{m:.4f}" for m in na),
                "peptide": pep.sequence,
                "protein": pep.protein,
                "higher_in": higher,
                "log_fold_change": cfg.biomarker_log_fold_change,
            }
        )
    with open(bio, "w", newline="") as fh:
        dw = csv.DictWriter(fh, fieldnames=list(bm_rows[0]))
        dw.writeheader()
        dw.writerows(bm_rows)
    truth = out / "ground_truth.json"
    cfg_d = asdict(replace(cfg))
    truth.write_text(
        json.dumps(
            {
                "config": cfg_d,
                "biomarkers": bm_rows,
                "patients": plan,
                "peg_mz": [round(float(m), 4) for m in model.peg_mz()],
                "n_peptides": len(model.peptides),
                "peptides": [
                    {
                        "sequence": p.sequence,
                        "protein": p.protein,
                        "mz": round(p.mz, 4),
                        "abundance": round(p.abundance, 4),
                    }
                    for p in model.peptides
                ],
            },
            indent=1,
        )
    )
    logger.info("simulated %d spectra in %.1f s into %s", n_written, time.perf_counter() - t0, out)
    return SimulatedCohort(
        out_dir=out,
        annotations=ann,
        biomarkers=bio,
        ground_truth=truth,
        imzml_files=tuple(files),
        n_spectra=n_written,
    )
