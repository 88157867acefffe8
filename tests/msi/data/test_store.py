"""HDF5 store: identical to load_table, metadata kept, streaming with bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from doublebackprop.msi.data.dataset import load_table, plan_loading
from doublebackprop.msi.data.preprocess import Pipeline
from doublebackprop.msi.data.store import SpectraDataset, build_store, open_store


def test_store_equals_table(tiny_cohort, tmp_path):
    plan = plan_loading(tiny_cohort.annotations, bin_width=0.5)
    out = build_store(plan, tmp_path / "s.h5", chunk_rows=5, block_size=4)
    table = load_table(tiny_cohort.annotations, bin_width=0.5)
    with open_store(out) as s:
        np.testing.assert_array_equal(s.read(slice(None)), table.intensities)
        np.testing.assert_array_equal(s.read(np.array([5, 1, 3])), table.intensities[[5, 1, 3]])
        t2 = s.to_table()
        assert Pipeline.from_json(s.pipeline) == Pipeline.from_json(table.pipeline)
        assert s.classes == table.classes
        assert set(s.extra) >= {"batch", "protocol"}
    for name in ("label", "patient", "lab", "file", "x", "y", "core"):
        np.testing.assert_array_equal(getattr(t2, name), getattr(table, name))
    np.testing.assert_array_equal(t2.mz, table.mz)


def test_dataset_items_and_pickling(tiny_cohort, tmp_path):
    import pickle

    import torch

    out = build_store(
        plan_loading(tiny_cohort.annotations, mz_range=(700, 2000), bin_width=1.0),
        tmp_path / "s.h5",
    )
    ds = SpectraDataset(out, indices=np.array([2, 0]))
    x, y = ds[0]
    assert x.dtype == torch.float32 and x.shape == (1300,) and y.dtype == torch.int64
    with open_store(out) as s:
        np.testing.assert_array_equal(x.numpy(), s.read(np.array([2]))[0])
        assert int(y) == s.classes.index(s.label[2])
    ds2 = pickle.loads(pickle.dumps(ds))
    assert torch.equal(ds2[1][0], ds[1][0])
    loader: torch.utils.data.DataLoader = torch.utils.data.DataLoader(ds, batch_size=2)
    xb, yb = next(iter(loader))
    assert xb.shape == (2, 1300)


def test_not_a_store(tmp_path):
    import h5py

    with h5py.File(tmp_path / "x.h5", "w") as h:
        h["a"] = 1
    with pytest.raises(ValueError, match="not a doublebackprop MSI store"):
        open_store(tmp_path / "x.h5")
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        open_store(tmp_path / "nope.h5")


_STREAM = textwrap.dedent("""
    import resource, sys, numpy as np, h5py, json
    path, limit_mb = sys.argv[1], int(sys.argv[2])
    from doublebackprop.msi.data.store import SpectraDataset
    ds = SpectraDataset(path, cache_bytes=2 << 20)
    ds[0]  # imports torch and opens the file before the limit is set
    vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + limit_mb * 2**20, resource.RLIM_INFINITY))
    total = 0.0
    for i in range(len(ds)):
        total += float(ds[i][0].sum())
    print(json.dumps({"n": len(ds), "sum": total}))
""")


def test_streaming_store_larger_than_allowed_memory(tmp_path):
    """Store of 256 MiB (uncompressed) read item by item under a 64 MiB address-space margin."""
    import h5py

    from doublebackprop.msi.data.store import FORMAT

    n, length = 16384, 4096
    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as h:
        h["mz"] = np.linspace(700, 2000, length)
        d = h.create_dataset(
            "intensities",
            (n, length),
            np.float32,
            chunks=(16, length),
            compression="gzip",
            compression_opts=1,
        )
        block = np.zeros((1024, length), np.float32)
        for s in range(0, n, 1024):
            block[:, 0] = np.arange(s, s + 1024)
            d[s : s + 1024] = block
        st = h5py.string_dtype()
        for k in ("label", "patient", "lab", "file"):
            h.create_dataset(k, data=np.array(["a", "b"] * (n // 2), dtype=object), dtype=st)
        h["x"] = np.zeros(n, np.int64)
        h["y"] = np.zeros(n, np.int64)
        h.attrs.update(format=FORMAT, pipeline="[]", classes=json.dumps(["a", "b"]))
    assert n * length * 4 == 256 * 2**20
    res = subprocess.run(
        [sys.executable, "-c", _STREAM, str(path), "64"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["n"] == n and out["sum"] == pytest.approx(n * (n - 1) / 2)
