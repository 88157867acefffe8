"""Annotated spectra as arrays: :class:`SpectraTable` and :func:`load_table`.

``load_table(annotations.csv)`` reads every annotated pixel of the imzML files named in the
table, brings all spectra onto one m/z axis, and preprocesses them in the order docs/papers.md fixes:

1. common axis — continuous files sharing one m/z array are used as they are; otherwise every
   spectrum is resampled onto a reference axis (the first continuous file's, else a uniform grid
   over the union of the m/z ranges with the first spectrum's median spacing, or a quarter of
   ``bin_width``): linear interpolation for profile data, nearest-point summation for centroids;
2. optional user steps (``preprocessing``: baseline, smoothing, recalibration …) on that range;
3. TIC normalisation over the *full loaded range* (mean intensity 1 per spectrum);
4. crop to ``mz_range``; 5. optional binning to ``bin_width`` (mean for profile, sum for centroid).

The same block-wise engine (:func:`iter_table_blocks`) feeds the on-disk store
(:mod:`doublebackprop.msi.data.store`), so both give identical numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from doublebackprop.msi.data.annotations import (
    AnnotationColumns,
    Annotations,
    locate_pixels,
    read_annotations,
)
from doublebackprop.msi.data.imzml import ImzMLReader
from doublebackprop.msi.data.preprocess import (
    Bin,
    Crop,
    Pipeline,
    Step,
    TICNormalize,
    resample_spectrum,
    uniform_edges,
)

__all__ = ["LoadPlan", "SpectraTable", "iter_table_blocks", "load_table", "plan_loading"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpectraTable:
    """Preprocessed, annotated spectra held in memory.

    Shapes
    ------
    ``mz`` (L,) float64; ``intensities`` (N, L) float32; ``label``, ``patient``, ``lab``,
    ``file`` (N,) str; ``x``, ``y`` (N,) int64; ``core`` (N,) str or None; ``extra`` maps other
    annotation columns to (N,) str arrays. ``pipeline`` is the JSON of the steps applied after
    the common axis (see :class:`~doublebackprop.msi.data.preprocess.Pipeline`).
    """

    mz: np.ndarray
    intensities: np.ndarray
    label: np.ndarray
    patient: np.ndarray
    lab: np.ndarray
    file: np.ndarray
    x: np.ndarray
    y: np.ndarray
    core: np.ndarray | None = None
    extra: Mapping[str, np.ndarray] = field(default_factory=dict)
    pipeline: str = "[]"

    def __post_init__(self) -> None:
        n = self.intensities.shape[0]
        if self.intensities.ndim != 2 or self.intensities.shape[1] != self.mz.shape[0]:
            raise ValueError(
                f"intensities {self.intensities.shape} do not match mz {self.mz.shape}"
            )
        for name in ("label", "patient", "lab", "file", "x", "y"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries, expected {n}")

    def __len__(self) -> int:
        return int(self.intensities.shape[0])

    @property
    def classes(self) -> tuple[str, ...]:
        """Sorted distinct labels."""
        return tuple(sorted(set(self.label.tolist())))

    def label_index(self) -> np.ndarray:
        """(N,) int64 index of each label in :attr:`classes`."""
        return np.searchsorted(np.asarray(self.classes), self.label).astype(np.int64)

    def take(self, idx: np.ndarray) -> SpectraTable:
        """Rows ``idx`` (indices or boolean mask)."""
        idx = np.asarray(idx)
        return replace(
            self,
            intensities=self.intensities[idx],
            label=self.label[idx],
            patient=self.patient[idx],
            lab=self.lab[idx],
            file=self.file[idx],
            x=self.x[idx],
            y=self.y[idx],
            core=None if self.core is None else self.core[idx],
            extra={k: v[idx] for k, v in self.extra.items()},
        )


@dataclass(frozen=True)
class LoadPlan:
    """Everything needed to read annotated spectra identically again."""

    annotations: Annotations
    spectrum_index: np.ndarray
    readers: Mapping[str, ImzMLReader]
    grid: np.ndarray | None  # None: all files continuous on one shared axis
    resample_method: str
    pipeline: Pipeline


def _reference_grid(readers: Mapping[str, ImzMLReader], bin_width: float | None) -> np.ndarray:
    for r in readers.values():
        if r.mode == "continuous":
            return r.mz_axis()
    lo, hi, spacing = np.inf, -np.inf, None
    for r in readers.values():
        a, b = r.mz_extent()
        lo, hi = min(lo, a), max(hi, b)
        for i in range(r.n_spectra if spacing is None else 0):
            mz, _ = r.spectrum(i)
            if len(mz) > 1:
                spacing = float(np.median(np.diff(mz)))
                break
    if not np.isfinite(lo) or spacing is None:
        raise ValueError("processed files hold no non-empty spectrum; cannot build an m/z grid")
    step = bin_width / 4 if bin_width else spacing
    return lo + step * np.arange(int(np.floor((hi - lo) / step)) + 1)


def plan_loading(
    annotations: str | Path | Annotations,
    *,
    mz_range: tuple[float, float] | None = (700.0, 2000.0),
    bin_width: float | None = None,
    preprocessing: Pipeline | tuple[Step, ...] | None = None,
    columns: AnnotationColumns | None = None,
    repair: bool = False,
) -> LoadPlan:
    """Validate annotations against the images and fix the axis and the pipeline."""
    ann = (
        annotations
        if isinstance(annotations, Annotations)
        else read_annotations(annotations, columns=columns)
    )
    readers: dict[str, ImzMLReader] = {}
    for fname in ann.files():
        path = ann.resolve(fname)
        if not path.is_file():
            raise FileNotFoundError(f"{ann.source}: imzML file {fname!r} ({path}) not found")
        readers[fname] = ImzMLReader(path, repair=repair)
    pix, spec = locate_pixels(ann, {f: r.coordinates for f, r in readers.items()})
    axes = [r.mz_axis() for r in readers.values() if r.mode == "continuous"]
    shared = len(axes) == len(readers) and all(np.array_equal(a, axes[0]) for a in axes)
    grid = None if shared else _reference_grid(readers, bin_width)
    centroid = any(r.spectrum_type == "centroid" for r in readers.values())
    if grid is not None:
        logger.info(
            "resampling onto a common grid of %d points (%.2f–%.2f)", len(grid), grid[0], grid[-1]
        )
    user = (
        preprocessing.steps if isinstance(preprocessing, Pipeline) else tuple(preprocessing or ())
    )
    steps: list[Step] = [*user, TICNormalize()]
    axis = grid if grid is not None else axes[0]
    lo, hi = (float(axis[0]), float(axis[-1])) if mz_range is None else mz_range
    if mz_range is not None:
        steps.append(Crop(float(lo), float(hi)))
    if bin_width is not None:
        edges = uniform_edges(float(lo), float(hi), float(bin_width))
        steps.append(Bin(tuple(edges.tolist()), "sum" if centroid else "mean"))
    return LoadPlan(
        annotations=pix,
        spectrum_index=spec,
        readers=readers,
        grid=grid,
        resample_method="sum" if centroid else "linear",
        pipeline=Pipeline(tuple(steps)),
    )


def iter_table_blocks(
    plan: LoadPlan, block_size: int = 1024
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(rows, mz, block)``: row indices into ``plan.annotations``, the output axis and
    the (len(rows), L) float32 preprocessed spectra. Memory is bounded by ``block_size``."""
    ann = plan.annotations
    for fname, reader in plan.readers.items():
        rows_f = np.flatnonzero(ann.file == fname)
        for s in range(0, len(rows_f), block_size):
            rows = rows_f[s : s + block_size]
            idx = plan.spectrum_index[rows]
            if plan.grid is None:
                mz, block = reader.mz_axis(), reader.read_rows(idx).astype(np.float64)
            else:
                mz = plan.grid
                block = np.empty((len(idx), len(mz)))
                for k, i in enumerate(idx.tolist()):
                    if reader.mode == "continuous":
                        m, v = reader.mz_axis(), reader.read_rows([i])[0]
                    else:
                        m, v = reader.spectrum(i)
                    block[k] = resample_spectrum(m, v, mz, method=plan.resample_method)
            out_mz, out = plan.pipeline(mz, block)
            yield rows, out_mz, out.astype(np.float32)


def load_table(
    annotations_csv: str | Path | Annotations,
    *,
    mz_range: tuple[float, float] | None = (700.0, 2000.0),
    bin_width: float | None = None,
    preprocessing: Pipeline | tuple[Step, ...] | None = None,
    columns: AnnotationColumns | None = None,
    repair: bool = False,
) -> SpectraTable:
    """Load all annotated spectra into a :class:`SpectraTable`.

    Parameters
    ----------
    annotations_csv : annotation CSV/TSV (its ``file`` column is relative to its folder).
    mz_range : crop applied after TIC normalisation over the full loaded range; None keeps all.
    bin_width : uniform bins (Da) over ``mz_range``; None keeps the native/common axis.
    preprocessing : extra steps applied on the full range *before* TIC normalisation.
    columns : annotation column names. repair : see :class:`~doublebackprop.msi.data.imzml.ImzMLReader`.

    Examples
    --------
    >>> t = load_table("cohort/annotations.csv", bin_width=0.5)   # doctest: +SKIP
    >>> t.intensities.shape, t.classes                            # doctest: +SKIP
    ((2880, 2600), ('breast', 'ovarian'))
    """
    plan = plan_loading(
        annotations_csv,
        mz_range=mz_range,
        bin_width=bin_width,
        preprocessing=preprocessing,
        columns=columns,
        repair=repair,
    )
    return table_from_plan(plan)


def table_from_plan(plan: LoadPlan, block_size: int = 1024) -> SpectraTable:
    """Read every block of ``plan`` into memory (see :func:`iter_table_blocks`)."""
    ann = plan.annotations
    parts: list[np.ndarray] = []
    order: list[np.ndarray] = []
    axes: list[np.ndarray] = []
    for rows, out_mz, block in iter_table_blocks(plan, block_size):
        parts.append(block)
        order.append(rows)
        axes.append(out_mz)
    if not order:
        raise ValueError(f"{ann.source}: no annotated spectra")
    mz = axes[0]
    rows = np.concatenate(order)
    x = np.concatenate(parts)
    if not np.array_equal(rows, np.arange(len(rows))):
        x = x[np.argsort(rows)]
    for r in plan.readers.values():
        if r.repairs:
            logger.warning("%s: repairs %s", r.path, dict(r.repairs))
    return SpectraTable(
        mz=np.asarray(mz, dtype=np.float64),
        intensities=x,
        label=ann.label,
        patient=ann.patient,
        lab=ann.lab,
        file=ann.file,
        x=ann.x,
        y=ann.y,
        core=ann.core,
        extra=dict(ann.extra),
        pipeline=plan.pipeline.to_json(),
    )
