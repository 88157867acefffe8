"""The spectrum model of the simulated cohort.

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
"""

from __future__ import annotations

import numpy as np

from doublebackprop.msi.simulate.config import SimulationConfig
from doublebackprop.msi.simulate.labs import (
    CHCA,
    NA_SHIFT,
    POTASSIUM,
    PROTON,
    SODIUM,
    BatchProtocol,
    LabProfile,
)
from doublebackprop.msi.simulate.peptides import (
    ISOTOPE_SPACING,
    Peptide,
    digest,
    embedded_proteome,
    human_entries,
)

__all__ = ["mz_axis"]


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
