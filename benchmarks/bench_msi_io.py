"""Reading benchmark: continuous imzML -> TIC -> crop -> binning, ours vs a pyimzML loop.

Writes a synthetic continuous imzML of ``--spectra`` × ``--bins`` float32 values, then measures

* ``doublebackprop``: memory-mapped block reads (:meth:`ImzMLReader.read_block`) followed by the
  vectorised pipeline TICNormalize -> Crop(700, 2000) -> Bin(0.5 Da), block by block;
  (the XML parse, done by pyimzML in both cases, is timed separately);
* ``pyimzML loop``: ``ImzMLParser.getspectrum(i)`` for each spectrum and the same three steps on
  that one spectrum (the usual user code), on the first ``--pyimzml-spectra`` spectra.

Reports spectra per second, the speed-up, and the peak Python heap (tracemalloc) of our pass,
which is bounded by the block size, not the file size. Usage::

    python benchmarks/bench_msi_io.py --spectra 20000 --bins 20000 --out results/bench_msi_io.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from doublebackprop.msi.data.imzml import ImzMLWriter, open_imzml
from doublebackprop.msi.data.preprocess import (
    Bin,
    Crop,
    Pipeline,
    TICNormalize,
    bin_matrix,
    uniform_edges,
)


def write_file(path: Path, n: int, length: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    mz = np.linspace(600.0, 2100.0, length)
    with ImzMLWriter(path, mz=mz, intensity_dtype=np.float32) as w:
        side = int(np.ceil(np.sqrt(n)))
        for s in range(0, n, 256):
            block = rng.gamma(2.0, 1.0, (min(256, n - s), length)).astype(np.float32)
            for k, row in enumerate(block):
                i = s + k
                w.add_spectrum(row, (i % side + 1, i // side + 1))


def ours(path: Path, block: int) -> tuple[float, int, int, float]:
    edges = uniform_edges(700.0, 2000.0, 0.5)
    pipe = Pipeline((TICNormalize(), Crop(700.0, 2000.0), Bin(tuple(edges), "mean")))
    t0 = time.perf_counter()
    r = open_imzml(path)  # XML metadata through pyimzML: timed separately, as for the loop
    t_parse = time.perf_counter() - t0
    tracemalloc.start()
    t0 = time.perf_counter()
    with r:
        mz = r.mz_axis()
        checksum = 0.0
        for _, x in r.iter_blocks(block):
            _, y = pipe(mz, x)
            checksum += float(y[:, 0].sum())
        n = r.n_spectra
    dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return n / dt, peak, n, t_parse


def pyimzml_loop(path: Path, n_max: int) -> float:
    from pyimzml.ImzMLParser import ImzMLParser

    t0 = time.perf_counter()
    p = ImzMLParser(str(path))
    t_parse = time.perf_counter() - t0
    edges = uniform_edges(700.0, 2000.0, 0.5)
    m = None
    n = min(n_max, len(p.coordinates))
    t0 = time.perf_counter()
    for i in range(n):
        mz, it = p.getspectrum(i)
        it = it.astype(np.float64)
        it = it * len(it) / it.sum()
        keep = (mz >= 700) & (mz <= 2000)
        if m is None:
            m = bin_matrix(mz[keep].astype(np.float64), edges, "mean").T.tocsr()
        _ = m @ it[keep]
    return n / (time.perf_counter() - t0), t_parse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spectra", type=int, default=20000)
    ap.add_argument("--bins", type=int, default=20000)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--pyimzml-spectra", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=Path("results/bench_msi_io.json"))
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        path = Path(tmp) / "bench.imzML"
        t0 = time.perf_counter()
        write_file(path, args.spectra, args.bins)
        t_write = time.perf_counter() - t0
        size = path.with_suffix(".ibd").stat().st_size
        rate_ours, peak, n, t_parse_ours = ours(path, args.block)
        rate_ref, t_parse = pyimzml_loop(path, args.pyimzml_spectra)
    res = {
        "spectra": n,
        "bins": args.bins,
        "ibd_bytes": size,
        "block": args.block,
        "write_s": round(t_write, 2),
        "ours_parse_s": round(t_parse_ours, 2),
        "ours_spectra_per_s": round(rate_ours, 1),
        "pyimzml_spectra_per_s": round(rate_ref, 1),
        "pyimzml_parse_s": round(t_parse, 2),
        "speedup": round(rate_ours / rate_ref, 2),
        "ours_peak_heap_mb": round(peak / 2**20, 1),
        "block_bytes_mb": round(args.block * args.bins * 8 / 2**20, 1),
    }
    print(f"{'file':<26}{n} spectra x {args.bins} bins, {size / 2**30:.2f} GiB")
    print(
        f"{'doublebackprop':<26}{rate_ours:>10.0f} spectra/s  (+{t_parse_ours:.1f} s XML parse)"
        f"  peak heap {peak / 2**20:.0f} MiB"
    )
    print(
        f"{'pyimzML getspectrum loop':<26}{rate_ref:>10.0f} spectra/s  (+{t_parse:.1f} s XML parse)"
    )
    print(f"{'speed-up':<26}{rate_ours / rate_ref:>10.1f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
