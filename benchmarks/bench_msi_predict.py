"""Throughput of ``msi predict`` (spectra per second) and its peak memory, on a simulated slide.

A tiny cohort is simulated and a typer trained on it for one epoch (throughput does not depend
on how well the model learned); a continuous-mode slide of ``--spectra`` spectra (default 100k)
on ``--points`` m/z points (default 5,000, i.e. 2 GB of float32 intensities) is written from the
simulator's spectra, Poisson-resampled per pixel; then
``predict_slides`` runs in a fresh process — reading, TIC, binning, IsotopeNet, temperature,
relevance, predictions.csv, maps, ion images, the report — and reports wall time and the peak
RSS of that process (``ru_maxrss``).

    .venv/bin/python benchmarks/bench_msi_predict.py --spectra 100000 --out results/bench
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _slide(path: Path, n: int, seed: int, points: int) -> Path:
    """A continuous-mode slide: templates from a simulated cohort on ``points`` m/z points,
    Poisson-resampled per pixel."""
    from doublebackprop.msi.data.imzml import ImzMLReader, ImzMLWriter
    from doublebackprop.msi.simulate.cohort import SimulationConfig, simulate_cohort

    cohort = simulate_cohort(path.parent / "cohort", SimulationConfig.preset("tiny", seed=seed))
    reader = ImzMLReader(next(iter(sorted(cohort.imzml_files))))
    native = reader.mz_axis()
    mz = np.linspace(native[0], native[-1], points)
    raw = reader.read_rows(np.arange(reader.n_spectra)).astype(np.float64)
    templates = np.stack([np.interp(mz, native, r) for r in raw])
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    with ImzMLWriter(path, mode="continuous", mz=mz, spectrum_type="profile") as w:
        for i in range(n):
            t = templates[rng.integers(len(templates))]
            w.add_spectrum(rng.poisson(t).astype(np.float32), (i % side + 1, i // side + 1, 1))
    return cohort.annotations


def _child(model: str, slide: str, out: str, block: int) -> None:
    from doublebackprop.msi.diagnosis.workflow import predict_slides

    t0 = time.perf_counter()
    summary = predict_slides(model, [slide], out, block_size=block)
    secs = time.perf_counter() - t0
    n = summary["slides"][0]["spectra"]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB → MiB on Linux
    print(
        json.dumps({"spectra": n, "seconds": secs, "spectra_per_s": n / secs, "peak_rss_mib": rss})
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spectra", type=int, default=100_000)
    ap.add_argument("--block", type=int, default=1024)
    ap.add_argument("--points", type=int, default=5000, help="m/z points per spectrum")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("results/bench"))
    ap.add_argument("--child", nargs=3, metavar=("MODEL", "SLIDE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        model, slide, out = args.child
        _child(model, slide, out, args.block)
        return
    from doublebackprop.cli import main as cli

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        t0 = time.perf_counter()
        ann = _slide(tmp_path / "slide.imzML", args.spectra, args.seed, args.points)
        print(f"wrote {args.spectra} spectra in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        assert (
            cli(
                [
                    "msi",
                    "train",
                    "--annotations",
                    str(ann),
                    "--out",
                    str(tmp_path / "model"),
                    "--epochs",
                    "1",
                    "--validation-folds",
                    "2",
                    "--mz-range",
                    "700",
                    "2000",
                    "--no-progress",
                ]
            )
            == 0
        )
        run = subprocess.run(
            [
                sys.executable,
                __file__,
                "--block",
                str(args.block),
                "--child",
                str(tmp_path / "model"),
                str(tmp_path / "slide.imzML"),
                str(tmp_path / "typed"),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(run.stdout.strip().splitlines()[-1])
    row["block"] = args.block
    row["points"] = args.points
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench-msi-predict.json").write_text(json.dumps(row, indent=1))
    print("| spectra | m/z points | block | seconds | spectra/s | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {row['spectra']} | {row['points']} | {row['block']} | {row['seconds']:.1f} | "
        f"{row['spectra_per_s']:.0f} | {row['peak_rss_mib']:.0f} |"
    )


if __name__ == "__main__":
    main()
