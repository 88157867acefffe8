"""Peptide chemistry for the simulator: proteomes, tryptic digests, [M+H]+ masses and isotope
envelopes (pyteomics for cleavage, masses and elemental compositions; the coarse isotope
distribution is the convolution of the elements' isotope distributions from pyteomics' NIST
table)."""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["Peptide", "digest", "isotope_envelope", "read_fasta", "embedded_proteome"]

#: spacing of the isotope peaks of peptides (average of 13C, 15N, 2H ... shifts), Da
ISOTOPE_SPACING = 1.002355


@dataclass(frozen=True)
class Peptide:
    """A tryptic peptide observed as [M+H]+ (``mz`` monoisotopic) with its isotope envelope."""

    sequence: str
    protein: str
    mz: float
    envelope: tuple[float, ...]
    abundance: float  # relative base abundance in tissue (protein prior × ionisation)
    missed_cleavages: int


def read_fasta(path: str | Path) -> list[tuple[str, str, float]]:
    """``(name, sequence, abundance prior)`` of every entry of a (gzipped) FASTA file.

    The prior is read from ``abundance=<x>`` in the header when present, else 1.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
        return _parse_fasta(fh.read())


def _parse_fasta(text: str) -> list[tuple[str, str, float]]:
    out: list[tuple[str, str, float]] = []
    name: str | None = None
    seq: list[str] = []
    prior = 1.0
    for line in text.splitlines() + [">"]:
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith(">"):
            if name is not None and seq:
                out.append((name, "".join(seq), prior))
            head = line[1:]
            parts = head.split("|")
            name = parts[2].split()[0] if len(parts) >= 3 else head.split()[0] if head else ""
            m = re.search(r"abundance=([0-9.]+)", head)
            prior = float(m.group(1)) if m else 1.0
            seq = []
        else:
            seq.append(re.sub(r"[^A-Z]", "", line.upper()))
    return out


def embedded_proteome() -> list[tuple[str, str, float]]:
    """The small curated list of abundant human tissue proteins shipped with the package."""
    text = (
        resources.files("doublebackprop.msi.simulate").joinpath("human_proteins.fasta").read_text()
    )
    return _parse_fasta(text)


def human_entries(path: str | Path) -> list[tuple[str, str, float]]:
    """Human entries (``OS=Homo sapiens`` or ``_HUMAN``) of a UniProt FASTA (e.g. the
    mmseqs2-examples sample fetched to ``$DATA/proteins/DB.fasta.gz``)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    keep, out = False, []
    with opener(path, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
        for line in fh:
            if line.startswith(">"):
                keep = "_HUMAN" in line or "OS=Homo sapiens" in line
            if keep:
                out.append(line)
    return _parse_fasta("".join(out))


def _power(p: np.ndarray, n: int) -> np.ndarray:
    """``p`` convolved with itself ``n`` times, truncated to ``len(p)`` (square-and-multiply)."""
    out = np.zeros_like(p)
    out[0] = 1.0
    while n:
        if n & 1:
            out = np.convolve(out, p)[: len(p)]
        p = np.convolve(p, p)[: len(p)]
        n >>= 1
    return out


def isotope_envelope(sequence: str, n_peaks: int = 6) -> np.ndarray:
    """Relative abundances (sum 1) of the first ``n_peaks`` nominal isotope peaks of [M+H]+."""
    from pyteomics import mass

    comp = dict(mass.Composition(sequence=sequence))
    comp["H"] = comp.get("H", 0) + 1  # protonated
    dist = np.zeros(n_peaks)
    dist[0] = 1.0
    for elem, count in comp.items():
        iso = {
            round(m - mass.nist_mass[elem][0][0]): ab
            for k, (m, ab) in mass.nist_mass[elem].items()
            if k != 0 and ab > 0
        }
        base = min(iso)
        p = np.zeros(n_peaks)
        for shift, ab in iso.items():
            if shift - base < n_peaks:
                p[shift - base] += ab
        dist = np.convolve(dist, _power(p, int(count)))[:n_peaks]
    return dist / dist.sum()


def digest(
    proteome: list[tuple[str, str, float]],
    *,
    mz_min: float,
    mz_max: float,
    missed_cleavages: int = 1,
    min_length: int = 5,
    rng: np.random.Generator,
    n_isotopes: int = 6,
) -> list[Peptide]:
    """Tryptic peptides of ``proteome`` with monoisotopic [M+H]+ in ``[mz_min, mz_max]``.

    Base abundance = protein prior × a log-normal ionisation factor (sd 0.8) × 2.5 for
    C-terminal arginine (the MALDI "arginine effect") × 0.3 per missed cleavage. Peptides with
    the same sequence from several proteins are merged. Deterministic given ``rng``.

    Parameters
    ----------
    proteome : list of (accession, sequence, prior abundance)
    mz_min, mz_max : float
        The m/z window of the [M+H]+ ions.
    missed_cleavages : int, default 1
    min_length : int, default 5
    rng : numpy.random.Generator
    n_isotopes : int, default 6
        Isotope peaks per envelope.
    """
    from pyteomics import mass, parser

    rule = parser.expasy_rules["trypsin"]
    seen: dict[str, Peptide] = {}
    for name, seq, prior in proteome:
        peps = sorted(parser.cleave(seq, rule, missed_cleavages=missed_cleavages))
        for pep in peps:
            if len(pep) < min_length or any(c not in "ACDEFGHIKLMNPQRSTVWY" for c in pep):
                continue
            mz = mass.calculate_mass(sequence=pep, ion_type="M", charge=1)
            if not mz_min <= mz <= mz_max:
                continue
            mc = sum(1 for i, c in enumerate(pep[:-1]) if c in "KR" and pep[i + 1] != "P")
            ab = prior * float(np.exp(rng.normal(0.0, 0.8))) * (2.5 if pep[-1] == "R" else 1.0)
            ab *= 0.3**mc
            if pep in seen:
                old = seen[pep]
                seen[pep] = Peptide(
                    pep, old.protein, old.mz, old.envelope, old.abundance + ab, old.missed_cleavages
                )
                continue
            env = tuple(float(v) for v in isotope_envelope(pep, n_isotopes))
            seen[pep] = Peptide(pep, name, float(mz), env, ab, mc)
    return sorted(seen.values(), key=lambda p: p.mz)
