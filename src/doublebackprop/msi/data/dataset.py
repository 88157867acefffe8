"""Annotated spectra as arrays: :class:`SpectraTable` and :func:`load_table`.

``load_table(annotations.csv)`` reads every annotated pixel of the imzML files named in the
table and preprocesses each spectrum on its own points, in the order docs/papers.md fixes:

1. the common m/z range (:mod:`~doublebackprop.msi.data.axis`): the intersection of all files'
   ranges by default, or a requested range checked against every file (error naming the file,
   or explicit zero padding), with a per-file report of what was cut;
2. optional user steps (``preprocessing``: baseline, smoothing, recalibration …);
3. TIC normalisation over each spectrum's *full measured range* (mean intensity 1);
4. with ``bin_width``: bins over the common range, each spectrum binned exactly from its own
   points (:mod:`~doublebackprop.msi.data.binning`: profile integral or centroid sum), so the
   same spectrum gives the same features in continuous and processed mode; without it, a crop
   of the native axis, which all files must then share.

The same block-wise engine (:func:`iter_table_blocks`) feeds the on-disk store
(:mod:`doublebackprop.msi.data.store`), so both give identical numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from doublebackprop.common.prefetch import prefetch
from doublebackprop.msi.data.annotations import (
    AnnotationColumns,
    Annotations,
    locate_pixels,
    read_annotations,
)
from doublebackprop.msi.data.axis import FileRange, common_range
from doublebackprop.msi.data.imzml import ImzMLReader
from doublebackprop.msi.data.preprocess import (
    Bin,
    Crop,
    Pipeline,
    Step,
    TICNormalize,
    inner_edges,
    uniform_edges,
)

__all__ = [
    "LoadPlan",
    "SpectraTable",
    "iter_table_blocks",
    "load_table",
    "plan_loading",
    "plan_notes",
    "repaired_rows",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpectraTable:
    """Preprocessed, annotated spectra held in memory.

    Shapes
    ------
    ``mz`` (L,) float64; ``intensities`` (N, L) float32; ``label``, ``patient``, ``lab``,
    ``file`` (N,) str; ``x``, ``y``, ``z`` (N,) int64; ``core`` (N,) str or None; ``extra`` maps
    other annotation columns to (N,) str arrays. ``pipeline`` is the JSON of the steps applied
    (see :class:`~doublebackprop.msi.data.preprocess.Pipeline`); ``repaired`` (N,) str names the
    repairs made to each spectrum (``""``: none; ``"sorted_mz;invalid_intensities"``); ``notes``
    are the warnings about the annotations and the m/z range of each file.
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
    z: np.ndarray | None = None
    repaired: np.ndarray | None = None
    notes: tuple[str, ...] = ()

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
            z=None if self.z is None else self.z[idx],
            repaired=None if self.repaired is None else self.repaired[idx],
        )


@dataclass(frozen=True)
class LoadPlan:
    """Everything needed to read annotated spectra identically again.

    ``mz_range`` is the common range (see :func:`~doublebackprop.msi.data.axis.common_range`),
    ``ranges`` what it does to each file, ``kind`` the binning rule (``"profile"`` or
    ``"centroid"``), ``notes`` the warnings about the annotations.
    """

    annotations: Annotations
    spectrum_index: np.ndarray
    readers: Mapping[str, ImzMLReader]
    pipeline: Pipeline
    mz_range: tuple[float, float]
    ranges: tuple[FileRange, ...] = ()
    kind: str = "profile"
    notes: tuple[str, ...] = ()


def _kind(readers: Mapping[str, ImzMLReader]) -> str:
    kinds = {
        f: "centroid" if r.spectrum_type == "centroid" else "profile" for f, r in readers.items()
    }
    if len(set(kinds.values())) > 1:
        listing = ", ".join(f"{f} ({k})" for f, k in kinds.items())
        raise ValueError(
            f"the imzML files mix profile and centroid spectra, which bin differently: {listing}"
        )
    return next(iter(kinds.values()))


def plan_loading(
    annotations: str | Path | Annotations,
    *,
    mz_range: tuple[float, float] | None = None,
    bin_width: float | None = None,
    preprocessing: Pipeline | tuple[Step, ...] | None = None,
    columns: AnnotationColumns | None = None,
    repair: bool = False,
    pad: bool = False,
) -> LoadPlan:
    """Validate annotations against the images and fix the range, the bins and the pipeline.

    Parameters
    ----------
    annotations : annotation CSV/TSV or validated :class:`Annotations`.
    mz_range : the range to keep; None (default) takes the files' common range (the
        intersection of their measured ranges). A range some file does not cover is an error
        naming the file, unless ``pad``.
    bin_width : uniform bins (Da) over the range, every spectrum binned from its own points
        (:mod:`~doublebackprop.msi.data.binning`); None keeps the native axis, which needs all
        files to be continuous on one shared axis.
    preprocessing : extra steps applied on each spectrum's full range before TIC normalisation.
    columns : annotation column names.
    repair : see :class:`~doublebackprop.msi.data.imzml.ImzMLReader`.
    pad : let a requested range exceed a file's range; the missing part is zero and reported in
        :attr:`LoadPlan.ranges` (needs ``bin_width``).
    """
    ann = (
        annotations
        if isinstance(annotations, Annotations)
        else read_annotations(annotations, columns=columns)
    )
    if bin_width is not None and not bin_width > 0:
        raise ValueError(f"bin_width must be > 0, got {bin_width}")
    if pad and bin_width is None:
        raise ValueError("pad=True needs bin_width (zeros are padded into bins)")
    readers: dict[str, ImzMLReader] = {}
    for fname in ann.files():
        path = ann.resolve(fname)
        if not path.is_file():
            raise FileNotFoundError(f"{ann.source}: imzML file {fname!r} ({path}) not found")
        readers[fname] = ImzMLReader(path, repair=repair)
    pix, spec = locate_pixels(ann, {f: r.coordinates for f, r in readers.items()})
    kind = _kind(readers)
    extents = {f: r.mz_extent() for f, r in readers.items()}
    edges = None
    if bin_width is not None and mz_range is not None:
        edges = uniform_edges(float(mz_range[0]), float(mz_range[1]), float(bin_width))
        mz_range = (float(edges[0]), max(float(mz_range[1]), float(edges[-1])))
    (lo, hi), ranges = common_range(extents, requested=mz_range, pad=pad)
    user = (
        preprocessing.steps if isinstance(preprocessing, Pipeline) else tuple(preprocessing or ())
    )
    steps: list[Step] = [*user, TICNormalize()]
    if bin_width is None:
        axes = [r.mz_axis() for r in readers.values() if r.mode == "continuous"]
        if len(axes) < len(readers) or not all(np.array_equal(a, axes[0]) for a in axes):
            listing = ", ".join(f"{f} ({r.mode})" for f, r in readers.items())
            raise ValueError(
                f"the spectra are not on one shared m/z axis ({listing}); pass a bin width "
                "(bin_width=, --bin-width) to bin every spectrum from its own points"
            )
        steps.append(Crop(lo, hi))
    else:
        if edges is None:  # the common range: profile bins inside it, centroid bins over it
            fit = uniform_edges if kind == "centroid" else inner_edges
            edges = fit(lo, hi, float(bin_width))
        steps.append(Bin(tuple(edges.tolist()), kind, pad=pad))
    for r in ranges:
        if r.cut or r.padded:
            logger.info("%s", r.describe())
    return LoadPlan(
        annotations=pix,
        spectrum_index=spec,
        readers=readers,
        pipeline=Pipeline(tuple(steps)),
        mz_range=(lo, hi),
        ranges=ranges,
        kind=kind,
        notes=ann.notes,
    )


def _processed_block(plan: LoadPlan, reader: ImzMLReader, idx: np.ndarray) -> np.ndarray:
    """Spectra of a processed file, each through the pipeline on its own points."""
    *pre, last = plan.pipeline.steps
    if not isinstance(last, Bin):  # plan_loading never builds this
        raise ValueError(f"{reader.path}: processed spectra need a bin width")
    head = Pipeline(tuple(pre))
    out = np.zeros((len(idx), len(last.edges) - 1))
    for k, i in enumerate(idx.tolist()):
        m, v = reader.spectrum(i)
        if len(m) == 0:
            continue  # an empty spectrum: all zeros (counted by the reader)
        m2, v2 = head(m, np.asarray(v, dtype=np.float64)[None, :])
        out[k] = last.bin_one(m2, v2[0])
    return out


def iter_table_blocks(
    plan: LoadPlan, block_size: int = 1024
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(rows, mz, block)``: row indices into ``plan.annotations``, the output axis and
    the (len(rows), L) float32 preprocessed spectra. Memory is bounded by ``block_size``.

    Continuous files go through the pipeline a block at a time (the next block is read in a
    background thread meanwhile: at most three blocks of a file in memory); processed spectra
    each on its own points. Both apply the same rule, so a spectrum gives the same features
    whichever mode stores it."""
    ann = plan.annotations
    last = plan.pipeline.steps[-1]
    for fname, reader in plan.readers.items():
        rows_f = np.flatnonzero(ann.file == fname)
        parts = [rows_f[s : s + block_size] for s in range(0, len(rows_f), block_size)]
        if reader.mode == "continuous":  # the next block is read while this one is processed
            mz = reader.mz_axis()
            reads = ((rows, reader.read_rows(plan.spectrum_index[rows])) for rows in parts)
            for rows, block in prefetch(reads):
                if not np.issubdtype(block.dtype, np.floating):
                    block = block.astype(np.float64)
                out_mz, out = plan.pipeline(mz, block)
                yield rows, out_mz, out.astype(np.float32)
        else:
            assert isinstance(last, Bin)
            for rows in parts:
                out = _processed_block(plan, reader, plan.spectrum_index[rows])
                yield rows, last.centers(), out.astype(np.float32)


def load_table(
    annotations_csv: str | Path | Annotations,
    *,
    mz_range: tuple[float, float] | None = None,
    bin_width: float | None = None,
    preprocessing: Pipeline | tuple[Step, ...] | None = None,
    columns: AnnotationColumns | None = None,
    repair: bool = False,
    pad: bool = False,
) -> SpectraTable:
    """Load all annotated spectra into a :class:`SpectraTable`.

    Parameters
    ----------
    annotations_csv : annotation CSV/TSV (its ``file`` column is relative to its folder).
    mz_range : range kept after TIC normalisation over each spectrum's full range; None
        (default) the files' common range. See :func:`plan_loading`.
    bin_width : uniform bins (Da) over the range; None keeps the native shared axis.
    preprocessing : extra steps applied on the full range *before* TIC normalisation.
    columns : annotation column names.
    repair : see :class:`~doublebackprop.msi.data.imzml.ImzMLReader`.
    pad : zero-pad a requested range beyond a file's range instead of failing (reported).

    Examples
    --------
    >>> t = load_table("cohort/annotations.csv", mz_range=(700, 2000), bin_width=0.5)  # doctest: +SKIP
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
        pad=pad,
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
        z=ann.z,
        repaired=repaired_rows(plan),
        notes=plan_notes(plan),
    )


def repaired_rows(plan: LoadPlan) -> np.ndarray:
    """(P,) str: the repairs made to each annotated spectrum, ``;``-separated (``""``: none).
    Complete once every block of ``plan`` has been read."""
    ann = plan.annotations
    out = np.full(len(ann), "", dtype=object)
    for fname, reader in plan.readers.items():
        if reader.repairs:
            logger.warning("%s: repairs %s", reader.path, dict(reader.repairs))
        if not reader.repaired:
            continue
        for r in np.flatnonzero(ann.file == fname):
            kinds = reader.repaired.get(int(plan.spectrum_index[r]))
            if kinds:
                out[r] = ";".join(sorted(kinds))
    return out.astype(str)


def plan_notes(plan: LoadPlan) -> tuple[str, ...]:
    """The notes about the annotations and what the common m/z range cut or padded."""
    ranges = tuple(r.describe() for r in plan.ranges if r.cut or r.padded)
    return tuple(plan.notes) + ranges
