"""``doublebackprop msi simulate | convert | info`` (registered by :mod:`doublebackprop.cli`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

__all__ = ["add_repair_argument", "register"]


def add_repair_argument(p: argparse.ArgumentParser) -> None:
    """``--repair``, the same for every command that reads imzML files."""
    p.add_argument(
        "--repair",
        action="store_true",
        help="set NaN/negative intensities to 0 and sort unsorted m/z arrays instead of "
        "failing; every repaired spectrum is recorded (store /repaired, results.json)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the MSI data commands to the ``msi`` sub-command group."""
    p = subparsers.add_parser(
        "simulate", help="simulate a virtual two-lab MALDI imaging TMA cohort (imzML + CSV)"
    )
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--seed", type=int, default=0, help="seed of the cohort")
    p.add_argument(
        "--size", choices=("tiny", "default", "large"), default="default", help="cohort preset"
    )
    p.add_argument("--patients-per-lab", type=int, help="override the preset")
    p.add_argument("--cores-per-patient", type=int, help="override the preset")
    p.add_argument("--spots-per-core", type=int, help="override the preset")
    p.add_argument("--confounding", type=float, help="fraction of a class in 'its' batch")
    p.add_argument(
        "--mode", choices=("continuous", "processed"), help="imzML storage mode (default: preset)"
    )
    p.add_argument("--proteome", help="FASTA(.gz) of proteins (default: embedded list)")
    p.set_defaults(func=_simulate)

    c = subparsers.add_parser("convert", help="imzML files + annotation CSV -> HDF5 store")
    c.add_argument("imzml", nargs="+", type=Path, help="imzML files named in the annotations")
    c.add_argument("--annotations", required=True, type=Path, help="annotation CSV/TSV")
    c.add_argument("--out", required=True, type=Path, help="output store (.h5)")
    c.add_argument(
        "--mz-min", type=float, help="lower end of the m/z range (default: the files' common range)"
    )
    c.add_argument(
        "--mz-max", type=float, help="upper end of the m/z range (default: the files' common range)"
    )
    c.add_argument("--bin-width", type=float, help="uniform bins (Da); default: native axis")
    c.add_argument(
        "--pad",
        action="store_true",
        help="allow a range beyond a file's m/z range: zeros there, reported per file",
    )
    add_repair_argument(c)
    c.set_defaults(func=_convert)

    i = subparsers.add_parser("info", help="summarise an imzML file or a store")
    i.add_argument("path", type=Path, help="an .imzML file or an .h5 store")
    i.set_defaults(func=_info)


def _simulate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from doublebackprop.msi.simulate.cohort import SimulationConfig, simulate_cohort

    over = {
        k: v
        for k, v in (
            ("patients_per_lab", args.patients_per_lab),
            ("cores_per_patient", args.cores_per_patient),
            ("spots_per_core", args.spots_per_core),
            ("confounding", args.confounding),
            ("mode", args.mode),
            ("proteome", args.proteome),
        )
        if v is not None
    }
    cfg = SimulationConfig.preset(args.size, seed=args.seed, **over)
    total = len(cfg.labs) * cfg.patients_per_lab * cfg.cores_per_patient * cfg.spots_per_core
    with tqdm(total=total, unit="spectra", desc="simulate") as bar:
        res = simulate_cohort(args.out, cfg, progress=bar.update)
    print(
        f"wrote {res.n_spectra} spectra in {len(res.imzml_files)} imzML files, "
        f"{res.annotations}, {res.biomarkers}"
    )
    return 0


def _convert(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from doublebackprop.msi.data.annotations import read_annotations
    from doublebackprop.msi.data.dataset import plan_loading
    from doublebackprop.msi.data.store import build_store

    for f in args.imzml:
        if not f.is_file():
            raise FileNotFoundError(f"{f}: imzML file not found")
    ann = read_annotations(args.annotations)
    given = {f.resolve() for f in args.imzml}
    named = {ann.resolve(n).resolve(): n for n in ann.files()}
    missing = [n for p, n in named.items() if p not in given]
    if missing:
        raise ValueError(
            f"{args.annotations}: annotations name imzML file(s) not given on the "
            f"command line: {', '.join(missing)}"
        )
    unused = [str(f) for f in args.imzml if f.resolve() not in named]
    if unused:
        raise ValueError(f"{unused[0]}: no annotation in {args.annotations} refers to this file")
    if (args.mz_min is None) != (args.mz_max is None):
        raise ValueError("--mz-min and --mz-max go together (neither: the files' common range)")
    mz_range = None if args.mz_min is None else (args.mz_min, args.mz_max)
    plan = plan_loading(
        ann, mz_range=mz_range, bin_width=args.bin_width, repair=args.repair, pad=args.pad
    )
    for fname, reader in plan.readers.items():
        n = int((plan.annotations.file == fname).sum())
        print(f"{fname}: {n} of {reader.n_spectra} spectra annotated")
    lo, hi = plan.mz_range
    print(f"m/z range {lo:.4f}–{hi:.4f}")
    for r in plan.ranges:
        if r.cut or r.padded:
            print(r.describe())
    with tqdm(total=len(plan.annotations), unit="spectra", desc="convert") as bar:
        out = build_store(plan, args.out, progress=bar.update)
    repaired = sum(len(r.repaired) for r in plan.readers.values())
    print(
        f"wrote {len(plan.annotations)} spectra to {out}"
        + (f" ({repaired} repaired)" if repaired else "")
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    path: Path = args.path
    if path.suffix.lower() == ".imzml":
        from doublebackprop.msi.data.imzml import open_imzml

        with open_imzml(path) as r:
            lo, hi = r.mz_extent()
            d = {
                "file": str(path),
                "mode": r.mode,
                "spectrum_type": r.spectrum_type,
                "spectra": r.n_spectra,
                "mz_range": [lo, hi],
                "mz_dtype": str(r.mz_dtype),
                "intensity_dtype": str(r.intensity_dtype),
                "uuid": r.uuid,
                "compression": r.compression,
                "intensity_values": r.value_counts(),
            }
        bad = {k: v for k, v in d["intensity_values"].items() if k in ("nan", "inf", "negative")}
        if any(bad.values()):
            import sys

            listing = ", ".join(f"{v} {k}" for k, v in bad.items() if v)
            print(
                f"{path}: invalid intensities: {listing} (convert needs --repair)", file=sys.stderr
            )
    else:
        from doublebackprop.msi.data.store import open_store

        with open_store(path) as s:
            d = {
                "store": str(path),
                "spectra": len(s),
                "bins": int(s.shape[1]),
                "mz_range": [float(s.mz[0]), float(s.mz[-1])],
                "classes": list(s.classes),
                "labs": sorted(set(s.lab.tolist())),
                "patients": len(set(s.patient.tolist())),
                "pipeline": json.loads(s.pipeline),
                "repaired_spectra": 0 if s.repaired is None else int((s.repaired != "").sum()),
                "notes": list(s.notes),
            }
    print(json.dumps(d, indent=1, default=lambda o: dataclasses.asdict(o)))
    return 0
