"""On-disk dataset store (HDF5) and a streaming :class:`torch.utils.data.Dataset`.

Why HDF5 (h5py) and not Zarr: h5py is already a dependency and installed everywhere this project
runs (Zarr is not); a store is one file that is easy to copy, checksum and attach to a paper;
chunked, compressed datasets give partial reads with a bounded chunk cache; attributes hold the
preprocessing JSON; and HDF5 is read natively by R (rhdf5), MATLAB and Julia, which the
pathology/proteomics users of MSI data work with. Zarr's advantages (concurrent writers, object
stores) do not matter for a dataset written once by ``doublebackprop msi convert``. h5py handles
must not cross ``fork``: :class:`SpectraDataset` opens the file lazily in each worker.

Layout: ``/mz`` (L,) float64; ``/intensities`` (N, L) float32, chunked by rows, gzip level 1;
``/x``, ``/y``, ``/z`` int64; ``/label``, ``/patient``, ``/lab``, ``/file``, ``/core``,
``/repaired`` (the repairs made to each spectrum, ``""`` for none) and ``/extra/<name>`` UTF-8
strings; attributes ``pipeline`` (JSON of the preprocessing steps), ``format``, ``classes``,
``notes`` (JSON list: annotation warnings, what the m/z range cut or padded per file) and
``ranges`` (JSON: each file's measured range, cut and padded parts).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from doublebackprop.msi.data.dataset import (
    LoadPlan,
    SpectraTable,
    iter_table_blocks,
    plan_notes,
    repaired_rows,
)

__all__ = ["SpectraDataset", "SpectraStore", "build_store", "open_store"]

logger = logging.getLogger(__name__)
FORMAT = "doublebackprop-msi-store/1"


def build_store(
    plan: LoadPlan,
    out: str | Path,
    *,
    chunk_rows: int = 64,
    block_size: int = 1024,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write every annotated spectrum of ``plan`` (see :func:`~.dataset.plan_loading`) to ``out``.

    Memory is bounded by ``block_size`` spectra, whatever the size of the images. The store is
    written to a temporary file in the same folder and renamed onto ``out`` only when complete:
    a failure leaves an existing ``out`` untouched and no partial file behind.

    Parameters
    ----------
    plan : LoadPlan
    out : str or Path
        The ``.h5`` store.
    chunk_rows : int, default 64
        HDF5 chunk height (spectra).
    block_size : int, default 1024
    progress : callable or None
        ``progress(n)`` after every block of ``n`` spectra.

    Examples
    --------
    >>> plan = plan_loading("cohort/annotations.csv", bin_width=0.5)  # doctest: +SKIP
    >>> build_store(plan, "cohort.h5")                                # doctest: +SKIP
    """
    out = Path(out)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _write(plan, tmp, chunk_rows=chunk_rows, block_size=block_size, progress=progress)
        os.replace(tmp, out)  # atomic: the old store stays intact until the new one is complete
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info("wrote %d spectra to %s", len(plan.annotations), out)
    return out


def _write(
    plan: LoadPlan,
    out: Path,
    *,
    chunk_rows: int,
    block_size: int,
    progress: Callable[[int], None] | None,
) -> None:
    import h5py

    ann = plan.annotations
    n = len(ann)
    str_t = h5py.string_dtype("utf-8")
    with h5py.File(out, "w") as h5:
        ds = None
        for rows, mz, block in iter_table_blocks(plan, block_size):
            if ds is None:
                h5.create_dataset("mz", data=mz.astype(np.float64))
                ds = h5.create_dataset(
                    "intensities",
                    shape=(n, len(mz)),
                    dtype=np.float32,
                    chunks=(min(chunk_rows, n), len(mz)),
                    compression="gzip",
                    compression_opts=1,
                )
            ds[int(rows[0]) : int(rows[-1]) + 1] = block  # rows of one block are consecutive
            if progress is not None:
                progress(len(rows))
        if ds is None:
            raise ValueError(f"{ann.source}: no annotated spectra to store")
        h5.create_dataset("x", data=ann.x)
        h5.create_dataset("y", data=ann.y)
        if ann.z is not None:
            h5.create_dataset("z", data=ann.z)
        repaired = repaired_rows(plan)
        for name, values in (
            ("label", ann.label),
            ("patient", ann.patient),
            ("lab", ann.lab),
            ("file", ann.file),
            ("repaired", repaired),
        ):
            h5.create_dataset(name, data=values.astype(object), dtype=str_t)
        if ann.core is not None:
            h5.create_dataset("core", data=ann.core.astype(object), dtype=str_t)
        for k, v in ann.extra.items():
            h5.create_dataset(f"extra/{k}", data=v.astype(object), dtype=str_t)
        h5.attrs["pipeline"] = plan.pipeline.to_json()
        h5.attrs["format"] = FORMAT
        h5.attrs["classes"] = json.dumps(sorted(set(ann.label.tolist())))
        h5.attrs["source"] = str(ann.source)
        h5.attrs["notes"] = json.dumps(list(plan_notes(plan)))
        h5.attrs["ranges"] = json.dumps([dataclasses.asdict(r) for r in plan.ranges])


class SpectraStore:
    """Read access to a store: metadata in memory, intensities on demand.

    Examples
    --------
    >>> store = open_store("cohort.h5")    # doctest: +SKIP
    >>> x = store.read(np.arange(10))      # (10, L)
    """

    def __init__(self, path: str | Path, *, cache_bytes: int = 8 << 20) -> None:
        import h5py

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: store not found")
        self._h5: Any = h5py.File(self.path, "r", rdcc_nbytes=cache_bytes)
        if self._h5.attrs.get("format") != FORMAT:
            raise ValueError(f"{self.path}: not a doublebackprop MSI store")
        h = self._h5
        self.mz = h["mz"][()]
        self.shape = h["intensities"].shape
        self.label = h["label"].asstr()[()]
        self.patient = h["patient"].asstr()[()]
        self.lab = h["lab"].asstr()[()]
        self.file = h["file"].asstr()[()]
        self.core = h["core"].asstr()[()] if "core" in h else None
        self.x, self.y = h["x"][()], h["y"][()]
        self.z = h["z"][()] if "z" in h else None
        self.repaired = h["repaired"].asstr()[()] if "repaired" in h else None
        self.notes = tuple(json.loads(h.attrs.get("notes", "[]")))
        self.extra = {k: h["extra"][k].asstr()[()] for k in h["extra"]} if "extra" in h else {}
        self.pipeline = str(h.attrs["pipeline"])
        self.classes = tuple(json.loads(h.attrs["classes"]))

    def __len__(self) -> int:
        return int(self.shape[0])

    def read(self, idx: np.ndarray | slice) -> np.ndarray:
        """Intensities of rows ``idx`` (sorted reads are fastest)."""
        ds = self._h5["intensities"]
        if isinstance(idx, slice):
            return ds[idx]
        idx = np.asarray(idx, dtype=np.int64)
        order = np.argsort(idx)
        out = np.empty((len(idx), self.shape[1]), dtype=np.float32)
        if len(idx):
            out[order] = (
                ds[idx[order]]
                if np.all(np.diff(idx[order]) > 0)
                else np.stack([ds[int(i)] for i in idx[order]])
            )
        return out

    def to_table(self) -> SpectraTable:
        """Everything in memory as a :class:`~.dataset.SpectraTable`."""
        return SpectraTable(
            mz=self.mz,
            intensities=self._h5["intensities"][()],
            label=self.label,
            patient=self.patient,
            lab=self.lab,
            file=self.file,
            x=self.x,
            y=self.y,
            core=self.core,
            extra=dict(self.extra),
            pipeline=self.pipeline,
            z=self.z,
            repaired=self.repaired,
            notes=self.notes,
        )

    def close(self) -> None:
        """Close the HDF5 file."""
        self._h5.close()

    def __enter__(self) -> SpectraStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_store(path: str | Path) -> SpectraStore:
    """Open a store written by :func:`build_store`."""
    return SpectraStore(path)


class SpectraDataset:
    """``torch.utils.data.Dataset`` streaming spectra from a store with bounded memory.

    Items are ``(x, y)``: ``x`` a float32 tensor (L,), ``y`` the int64 index of the label in
    the store's sorted classes. Only metadata lives in memory; intensities are read per item
    through an HDF5 chunk cache of ``cache_bytes``. The file is opened lazily, so DataLoader
    workers each get their own handle.

    Examples
    --------
    >>> ds = SpectraDataset("cohort.h5", indices=train_idx)          # doctest: +SKIP
    >>> loader = torch.utils.data.DataLoader(ds, batch_size=150)     # doctest: +SKIP
    """

    def __init__(
        self, path: str | Path, *, indices: np.ndarray | None = None, cache_bytes: int = 8 << 20
    ) -> None:
        self.path = Path(path)
        self.cache_bytes = cache_bytes
        with SpectraStore(self.path, cache_bytes=cache_bytes) as s:
            self.classes = s.classes
            labels = s.label
            self.n_features = int(s.shape[1])
        self.indices = np.arange(len(labels)) if indices is None else np.asarray(indices)
        self.targets = np.searchsorted(np.asarray(self.classes), labels[self.indices])
        self._store: SpectraStore | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        import torch

        if self._store is None:
            self._store = SpectraStore(self.path, cache_bytes=self.cache_bytes)
        row = self._store._h5["intensities"][int(self.indices[i])]
        return torch.from_numpy(np.asarray(row, dtype=np.float32)), torch.tensor(
            int(self.targets[i]), dtype=torch.int64
        )

    def __getstate__(self) -> dict[str, Any]:  # never pickle an open h5py handle
        d = dict(self.__dict__)
        d["_store"] = None
        return d
