"""Reading benchmark: imzML -> TIC -> 1 Da bins over 700-2000, ours vs a pyImzML loop running
the *same* numpy pipeline.

Writes ``--spectra`` × ``--points`` float32 spectra (m/z 600-2100) once in continuous and once
in processed mode, then, each in a fresh subprocess (so that peak RSS belongs to one pass):

* ``ours``: :class:`ImzMLReader` — continuous files in blocks of ``--block`` spectra
  (bounded-window reads into reused buffers, the next block read in a background thread:
  ``prefetch=True``) through ``Pipeline((TICNormalize(), Bin(edges, "profile")))``, which runs
  fused: one compiled pass per block gives the bins and the TIC (:class:`BlockBinner`; the
  kernel is compiled or loaded from numba's cache once per process before the timed pass, and
  its time and memory are reported apart); processed files spectrum by spectrum through the
  same steps on each spectrum's own points;
* ``loop``: ``ImzMLParser.getspectrum(i)`` for every spectrum, then the same operator applied
  the natural per-spectrum way: for a continuous file the same fused operator (the sparse bin
  matrix with a row of ones, built once; one mat-vec gives the bins and the TIC, then the bins
  are scaled by ``L / TIC`` — faster per spectrum than a separate sum and scaling), for a
  processed one the same TIC and :func:`bin_spectrum` per spectrum.

The floor of a continuous file is measured too: reading its intensity bytes alone into one
reused buffer (``os.preadv``), and the fused product alone on an in-memory block.

Both parse the XML with pyImzML (timed separately). Each case runs ``--repeat`` times,
interleaved, and the fastest pass counts (the machine may be shared). Reported: spectra per
second, speed-up,
peak RSS of the pass (``VmHWM``: resident memory, not only the Python heap) above the RSS after
imports, with a warm page cache (file just read) and a cold one (the file's pages dropped with
``posix_fadvise(DONTNEED)`` before the pass). Usage::

    python benchmarks/bench_msi_io.py --spectra 2000 --points 20000 --out results/bench_msi_io.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse

from doublebackprop.msi.data.binning import bin_operator, bin_spectrum
from doublebackprop.msi.data.blockbin import BlockBinner
from doublebackprop.msi.data.imzml import ImzMLWriter, open_imzml
from doublebackprop.msi.data.preprocess import Bin, Pipeline, TICNormalize, uniform_edges

EDGES = uniform_edges(700.0, 2000.0, 1.0)


def write_file(path: Path, n: int, length: int, mode: str, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    mz = np.linspace(600.0, 2100.0, length)
    side = int(np.ceil(np.sqrt(n)))
    kw = {"mz": mz} if mode == "continuous" else {}
    with ImzMLWriter(path, mode=mode, intensity_dtype=np.float32, **kw) as w:
        for s in range(0, n, 256):
            block = rng.gamma(2.0, 1.0, (min(256, n - s), length)).astype(np.float32)
            for k, row in enumerate(block):
                i = s + k
                extra = {} if mode == "continuous" else {"mz": mz}
                w.add_spectrum(row, (i % side + 1, i // side + 1), **extra)


def _rss_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(text.split(field + ":")[1].split()[0])


def _drop_cache(path: Path) -> None:
    for p in (path, path.with_suffix(".ibd")):
        fd = os.open(p, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def run_ours(path: Path, block: int) -> tuple[int, float, float]:
    t0 = time.perf_counter()
    r = open_imzml(path)
    t_parse = time.perf_counter() - t0
    pipe = Pipeline((TICNormalize(), Bin(tuple(EDGES), "profile")))
    check = 0.0
    t0 = time.perf_counter()
    with r:
        if r.mode == "continuous":
            mz = r.mz_axis()
            for _, x in r.iter_blocks(block, prefetch=True):
                _, y = pipe(mz, x)  # TIC fused into the one bin product of the block
                check += float(y.sum())
        else:
            tic, last = Pipeline(pipe.steps[:-1]), pipe.steps[-1]
            assert isinstance(last, Bin)
            for i in range(r.n_spectra):
                m, v = r.spectrum(i)
                m2, v2 = tic(m, np.asarray(v, dtype=np.float64)[None, :])
                check += float(last.bin_one(m2, v2[0]).sum())
    return r.n_spectra, time.perf_counter() - t0, t_parse


def run_loop(path: Path) -> tuple[int, float, float]:
    from pyimzml.ImzMLParser import ImzMLParser

    t0 = time.perf_counter()
    p = ImzMLParser(str(path))
    t_parse = time.perf_counter() - t0
    processed = bool(p.metadata.file_description.param_by_name.get("processed"))
    op = None
    check = 0.0
    n = len(p.coordinates)
    t0 = time.perf_counter()
    for i in range(n):
        mz, it = p.getspectrum(i)
        v = it.astype(np.float64)
        if processed:
            v = v * (len(v) / v.sum())  # TICNormalize: mean 1
            m = np.asarray(mz, dtype=np.float64)
            check += float(bin_spectrum(m, v, EDGES, "profile").sum())
        else:
            if op is None:  # the bins and a row of ones (the TIC): the fused operator
                w = bin_operator(np.asarray(mz, dtype=np.float64), EDGES, "profile")
                op = scipy.sparse.vstack([w.T, np.ones((1, len(v)))]).tocsr()
            y = op @ v
            check += float((y[:-1] * (len(v) / y[-1])).sum())
    return n, time.perf_counter() - t0, t_parse


def run_floor(path: Path, block: int, what: str) -> tuple[int, float, float]:
    """The floor of a reader: only reading the intensity bytes into one reused buffer
    (``read``), or only the fused product on one in-memory block (``product``)."""
    r = open_imzml(path)
    n, length = r.n_spectra, len(r.mz_axis())
    nbytes = length * r.intensity_dtype.itemsize
    t0 = time.perf_counter()
    if what == "read":
        buf = np.empty(block * nbytes, dtype=np.uint8)
        fd = os.open(r.ibd_path, os.O_RDONLY)
        off = int(r._int_off[0])  # the writer stores the spectra back to back
        for s in range(0, n, block):
            got = os.preadv(fd, [memoryview(buf)[: min(block, n - s) * nbytes]], off)
            off += got
        os.close(fd)
    else:
        x = r.read_block(0, block)
        op = BlockBinner(r.mz_axis(), EDGES, "profile")
        t0 = time.perf_counter()
        for s in range(0, n, block):
            op(x[: min(block, n - s)])
    r.close()
    return n, time.perf_counter() - t0, 0.0


def _load_kernel() -> float:
    """Compile the binning kernel, or load it from numba's cache: once per process, before the
    timed pass (its time and memory are reported on their own)."""
    t0 = time.perf_counter()
    for dt in (np.float32, np.float64):
        BlockBinner(np.linspace(0.0, 1.0, 9), np.linspace(0.0, 1.0, 3), "profile")(
            np.ones((9, 9), dt)
        )
    return time.perf_counter() - t0


def child(args: argparse.Namespace) -> None:
    if args.cold:
        _drop_cache(args.path)
    before = _rss_kib("VmRSS")
    load_s = _load_kernel() if args.who in ("ours", "product") else 0.0
    base = _rss_kib("VmRSS")
    if args.who == "ours":
        n, dt, t_parse = run_ours(args.path, args.block)
    elif args.who == "loop":
        n, dt, t_parse = run_loop(args.path)
    else:
        n, dt, t_parse = run_floor(args.path, args.block, args.who)
    peak = _rss_kib("VmHWM")
    kernel = {"kernel_load_s": load_s, "kernel_rss_mib": (base - before) / 1024}
    print(
        json.dumps(
            {"n": n, "seconds": dt, "parse_s": t_parse, "rss_mib": (peak - base) / 1024} | kernel
        )
    )


def measure(path: Path, who: str, block: int, cold: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", who, "--path", str(path), "--block", str(block)]
    out = subprocess.run(cmd + (["--cold"] if cold else []), capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spectra", type=int, default=4000)
    ap.add_argument("--points", type=int, default=20000)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3, help="passes per case (fastest counts)")
    ap.add_argument("--out", type=Path, default=Path("results/bench_msi_io.json"))
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--modes", default="continuous,processed", help="comma-separated file modes")
    ap.add_argument(
        "--child", choices=("ours", "loop", "read", "product"), default=None, help=argparse.SUPPRESS
    )
    ap.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--cold", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.who = args.child
        child(args)
        return
    rows = []
    floor: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for mode in args.modes.split(","):
            path = Path(tmp) / f"{mode}.imzML"
            write_file(path, args.spectra, args.points, mode)
            size = path.with_suffix(".ibd").stat().st_size
            for cache in ("cold", "warm"):
                res: dict[str, dict] = {}
                for _ in range(args.repeat):  # interleaved; the fastest pass of each counts
                    for who in ("ours", "loop"):
                        if cache == "warm":
                            measure(path, who, args.block, cold=False)  # fill the page cache
                        r = measure(path, who, args.block, cold=cache == "cold")
                        if who not in res or r["seconds"] < res[who]["seconds"]:
                            res[who] = r
                rate = {w: r["n"] / r["seconds"] for w, r in res.items()}
                rows.append(
                    {
                        "mode": mode,
                        "cache": cache,
                        "spectra": args.spectra,
                        "points": args.points,
                        "ibd_mib": round(size / 2**20),
                        "ours_spectra_per_s": round(rate["ours"]),
                        "loop_spectra_per_s": round(rate["loop"]),
                        "speedup": round(rate["ours"] / rate["loop"], 2),
                        "ours_rss_mib": round(res["ours"]["rss_mib"], 1),
                        "loop_rss_mib": round(res["loop"]["rss_mib"], 1),
                        "parse_s": round(res["ours"]["parse_s"], 2),
                        "kernel_load_s": round(res["ours"]["kernel_load_s"], 2),
                        "kernel_rss_mib": round(res["ours"]["kernel_rss_mib"], 1),
                    }
                )
            if mode == "continuous":  # the floor: the bytes alone, the product alone (warm)
                for who in ("read", "product"):
                    best = min(
                        (measure(path, who, args.block, cold=False) for _ in range(args.repeat)),
                        key=lambda r: r["seconds"],
                    )
                    floor[who] = best["n"] / best["seconds"]
            path.unlink()
            path.with_suffix(".ibd").unlink()
    head = "| mode | cache | ours spectra/s | pyImzML loop spectra/s | speed-up | ours peak RSS | loop peak RSS |"
    print(head)
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['cache']} | {r['ours_spectra_per_s']} | "
            f"{r['loop_spectra_per_s']} | {r['speedup']}× | {r['ours_rss_mib']} MiB | "
            f"{r['loop_rss_mib']} MiB |"
        )
    if floor:
        print(
            f"\nfloor (continuous, warm, blocks of {args.block}): reading the .ibd bytes alone "
            f"into one reused buffer {floor['read']:.0f} spectra/s; the fused TIC + bin product "
            f"alone on an in-memory block {floor['product']:.0f} spectra/s"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "floor_spectra_per_s": floor}, indent=1))


if __name__ == "__main__":
    main()
