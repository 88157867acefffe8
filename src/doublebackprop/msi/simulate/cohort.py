"""A virtual multi-lab MALDI-TOF imaging cohort of tissue microarrays (TMAs).

It reproduces the *structure* of the Deep Relevance Regularization study (docs/papers.md): two
labs measure TMA cores of patients with two tumour types; the biology is a small, sparse set of
peptides whose abundance differs between the types and is the same in every lab; everything else a
flexible model could learn from — calibration, peak shape, baseline, contaminants — depends on
the lab and on the processing batch, and inside each lab the tumour types are unevenly spread
over batches, in opposite directions in the two labs. A model that learns batch artefacts in one
lab is therefore *wrong* in the other; a model that uses the true peptides transfers.

The spectrum model is described in :mod:`doublebackprop.msi.simulate.spectra`.

Everything is deterministic by ``seed`` (independent :class:`numpy.random.Generator` streams per
lab/patient/core, so changing the cohort size does not re-draw the others).
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from doublebackprop.msi.data.imzml import ImzMLWriter
from doublebackprop.msi.simulate.config import SimulationConfig
from doublebackprop.msi.simulate.labs import (
    NA_SHIFT,
    BatchProtocol,
    LabProfile,
)
from doublebackprop.msi.simulate.peptides import (
    ISOTOPE_SPACING,
)
from doublebackprop.msi.simulate.spectra import _Cohort, _core_layout, mz_axis

__all__ = ["BatchProtocol", "LabProfile", "SimulatedCohort", "SimulationConfig", "simulate_cohort"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimulatedCohort:
    """Paths written by :func:`simulate_cohort`."""

    out_dir: Path
    annotations: Path
    biomarkers: Path
    ground_truth: Path
    imzml_files: tuple[Path, ...]
    n_spectra: int


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
