"""Annotation tables: which pixels of which imzML file belong to which class, patient, core, lab.

A CSV or TSV file with one row per pixel (columns ``x``, ``y``) or per rectangular region
(columns ``x_min``, ``x_max``, ``y_min``, ``y_max``, inclusive, 1-based like imzML), plus
``label``, ``patient``, ``lab`` and optionally ``core`` and ``file``. Column names are
configurable through :class:`AnnotationColumns`; every other column is kept in ``extra``.
The ``file`` column names the imzML file relative to the folder of the annotation file.

Validation, every error naming the annotation file and the line (header = line 1):
missing columns, non-integer coordinates, empty labels/patients, one patient with two labels,
pixels annotated twice (also through overlapping regions), pixels or files not in the images.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

_REST = "\x00extra fields"
__all__ = [
    "AnnotationColumns",
    "AnnotationWarning",
    "Annotations",
    "locate_pixels",
    "read_annotations",
]


@dataclass(frozen=True)
class AnnotationColumns:
    """Column names of an annotation table (defaults are the simulator's names)."""

    file: str = "file"
    x: str = "x"
    y: str = "y"
    z: str = "z"
    label: str = "label"
    patient: str = "patient"
    lab: str = "lab"
    core: str = "core"
    x_min: str = "x_min"
    x_max: str = "x_max"
    y_min: str = "y_min"
    y_max: str = "y_max"


@dataclass(frozen=True)
class Annotations:
    """Validated annotation rows.

    Shapes
    ------
    All arrays have length R (rows). ``x``/``y`` are -1 for region rows, whose rectangle is in
    ``region`` (R, 4) as (x_min, x_max, y_min, y_max); pixel rows have region -1.
    ``line`` holds the line number in the source file for error messages.
    """

    source: Path
    base_dir: Path
    file: np.ndarray
    x: np.ndarray
    y: np.ndarray
    region: np.ndarray
    label: np.ndarray
    patient: np.ndarray
    lab: np.ndarray
    core: np.ndarray | None
    line: np.ndarray
    extra: Mapping[str, np.ndarray] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    z: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.label)

    def resolve(self, name: str) -> Path:
        """Absolute path of an imzML file named in the ``file`` column."""
        p = Path(name)
        return p if p.is_absolute() else self.base_dir / p

    def files(self) -> list[str]:
        """Distinct ``file`` entries in order of first appearance."""
        return list(dict.fromkeys(self.file.tolist()))

    def take(self, idx: np.ndarray) -> Annotations:
        """Rows ``idx``."""
        return replace(
            self,
            file=self.file[idx],
            x=self.x[idx],
            y=self.y[idx],
            region=self.region[idx],
            label=self.label[idx],
            patient=self.patient[idx],
            lab=self.lab[idx],
            core=None if self.core is None else self.core[idx],
            line=self.line[idx],
            extra={k: v[idx] for k, v in self.extra.items()},
            z=None if self.z is None else self.z[idx],
        )


def _sniff_delimiter(path: Path, head: str) -> str:
    if path.suffix.lower() in (".tsv", ".tab"):
        return "\t"
    try:
        return csv.Sniffer().sniff(head.splitlines()[0], delimiters=",;\t").delimiter
    except (csv.Error, IndexError):
        return ","


def read_annotations(
    path: str | Path,
    *,
    columns: AnnotationColumns | None = None,
    default_file: str | None = None,
    default_lab: str | None = None,
) -> Annotations:
    """Read and validate a CSV/TSV annotation table.

    Parameters
    ----------
    path : the table.
    columns : column names; :class:`AnnotationColumns` defaults if omitted.
    default_file : imzML file for tables without a ``file`` column.
    default_lab : lab for tables without a ``lab`` column.

    Examples
    --------
    >>> ann = read_annotations("cohort/annotations.csv")  # doctest: +SKIP
    >>> ann.label[:3], ann.files()                        # doctest: +SKIP
    """
    c = columns or AnnotationColumns()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: annotation file not found")
    text = path.read_text(encoding="utf-8-sig")
    delimiter = _sniff_delimiter(path, text)
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter, restkey=_REST)
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    has_px = c.x in header and c.y in header
    has_region = all(k in header for k in (c.x_min, c.x_max, c.y_min, c.y_max))
    missing = [k for k in (c.label, c.patient) if k not in header]
    if not (has_px or has_region):
        missing.append(f"{c.x}/{c.y} or {c.x_min}/{c.x_max}/{c.y_min}/{c.y_max}")
    if c.file not in header and default_file is None:
        missing.append(c.file)
    if c.lab not in header and default_lab is None:
        missing.append(c.lab)
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; found {header}")
    known = {
        c.file,
        c.x,
        c.y,
        c.z,
        c.label,
        c.patient,
        c.lab,
        c.core,
        c.x_min,
        c.x_max,
        c.y_min,
        c.y_max,
    }
    extra_cols = [h for h in header if h not in known]
    rows: dict[str, list] = {
        k: [] for k in ("file", "x", "y", "z", "region", "label", "patient", "lab", "core", "line")
    }
    extra: dict[str, list[str]] = {k: [] for k in extra_cols}

    def as_int(row: dict, key: str, line: int) -> int:
        v = (row.get(key) or "").strip()
        try:
            return int(float(v)) if float(v).is_integer() else int(v)
        except ValueError:
            raise ValueError(
                f"{path}: line {line}: column {key!r} must be an integer, got {v!r}"
            ) from None

    for row in reader:
        line = reader.line_num
        if _REST in row or None in row.values():
            n = len(header) + len(row.get(_REST, [])) - sum(v is None for v in row.values())
            if not any(isinstance(v, str) and v.strip() for v in row.values()):
                continue
            raise ValueError(
                f"{path}: line {line}: {n} fields but the header has {len(header)}; "
                f"a value holding the delimiter {delimiter!r} (such as 'breast, ductal') must "
                "be quoted"
            )
        if not any((v or "").strip() for v in row.values()):
            continue
        for key in (c.label, c.patient):
            if not (row.get(key) or "").strip():
                raise ValueError(f"{path}: line {line}: empty {key!r}")
        use_px = has_px and (row.get(c.x) or "").strip() != ""
        if use_px:
            rows["x"].append(as_int(row, c.x, line))
            rows["y"].append(as_int(row, c.y, line))
            rows["region"].append((-1, -1, -1, -1))
        elif has_region:
            r = tuple(as_int(row, key, line) for key in (c.x_min, c.x_max, c.y_min, c.y_max))
            if r[0] > r[1] or r[2] > r[3]:
                raise ValueError(f"{path}: line {line}: empty region {r}")
            rows["x"].append(-1)
            rows["y"].append(-1)
            rows["region"].append(r)
        else:
            raise ValueError(f"{path}: line {line}: neither pixel nor region coordinates")
        if c.z in header:
            rows["z"].append(as_int(row, c.z, line))
        rows["file"].append((row.get(c.file) or default_file or "").strip())
        if not rows["file"][-1]:
            raise ValueError(f"{path}: line {line}: empty {c.file!r}")
        rows["label"].append(row[c.label].strip())
        rows["patient"].append(row[c.patient].strip())
        rows["lab"].append((row.get(c.lab) or default_lab or "").strip())
        rows["core"].append((row.get(c.core) or "").strip())
        rows["line"].append(line)
        for key in extra_cols:
            extra[key].append((row.get(key) or "").strip())
    if not rows["label"]:
        raise ValueError(f"{path}: no annotation rows")
    ann = Annotations(
        source=path,
        base_dir=path.parent.resolve(),
        file=np.asarray(rows["file"], dtype=str),
        x=np.asarray(rows["x"], dtype=np.int64),
        y=np.asarray(rows["y"], dtype=np.int64),
        region=np.asarray(rows["region"], dtype=np.int64).reshape(-1, 4),
        label=np.asarray(rows["label"], dtype=str),
        patient=np.asarray(rows["patient"], dtype=str),
        lab=np.asarray(rows["lab"], dtype=str),
        core=np.asarray(rows["core"], dtype=str) if c.core in header else None,
        line=np.asarray(rows["line"], dtype=np.int64),
        extra={k: np.asarray(v, dtype=str) for k, v in extra.items()},
        z=np.asarray(rows["z"], dtype=np.int64) if c.z in header else None,
    )
    _check_patient_labels(ann)
    return replace(ann, notes=_notes(ann))


class AnnotationWarning(UserWarning):
    """Annotations that are legal but probably not meant (recorded in :attr:`Annotations.notes`)."""


def _notes(ann: Annotations) -> tuple[str, ...]:
    """Labels that differ only in case or whitespace; patients annotated in two labs."""
    notes: list[str] = []
    by_key: dict[str, dict[str, int]] = {}
    for lab, line in zip(ann.label.tolist(), ann.line.tolist()):
        by_key.setdefault(" ".join(lab.split()).casefold(), {}).setdefault(lab, line)
    for variants in by_key.values():
        if len(variants) > 1:
            listing = ", ".join(f"{v!r} (line {n})" for v, n in variants.items())
            notes.append(
                f"labels {listing} differ only in case or whitespace; they are kept as "
                "distinct classes"
            )
    labs: dict[str, dict[str, int]] = {}
    for p, lab, line in zip(ann.patient.tolist(), ann.lab.tolist(), ann.line.tolist()):
        labs.setdefault(p, {}).setdefault(lab, line)
    for p, where in labs.items():
        if len(where) > 1:
            listing = ", ".join(f"{lab!r} (line {n})" for lab, n in where.items())
            notes.append(f"patient {p!r} appears in several labs: {listing}")
    for n in notes:
        warnings.warn(f"{ann.source}: {n}", AnnotationWarning, stacklevel=3)
    return tuple(notes)


def _check_patient_labels(ann: Annotations) -> None:
    first: dict[str, tuple[str, int]] = {}
    for p, lab, line in zip(ann.patient.tolist(), ann.label.tolist(), ann.line.tolist()):
        if p in first and first[p][0] != lab:
            raise ValueError(
                f"{ann.source}: line {line}: patient {p!r} labelled {lab!r} but {first[p][0]!r} "
                f"on line {first[p][1]} (conflicting labels for one patient)"
            )
        first.setdefault(p, (lab, line))


def locate_pixels(
    ann: Annotations, coordinates: Mapping[str, np.ndarray]
) -> tuple[Annotations, np.ndarray]:
    """Match annotation rows to spectra; expand region rows to their pixels.

    Parameters
    ----------
    ann : validated annotations.
    coordinates : for every ``file`` entry, the (N_f, 2 or 3) pixel coordinates of that image
        (z is 1 when absent). Rows with a ``z`` match that plane; rows without one match the
        only plane holding (x, y), and are an error if several do.

    Returns
    -------
    (pixel-level annotations, spectrum index within its file) — both of length P; rows are
    grouped by file in the order of :meth:`Annotations.files`.
    """
    keep: list[int] = []
    found: list[tuple[int, int, int]] = []
    idx: list[int] = []
    for fname in ann.files():
        if fname not in coordinates:
            raise ValueError(f"{ann.source}: file {fname!r} has no image")
        c = np.asarray(coordinates[fname]).astype(np.int64)
        xyz = np.column_stack([c[:, :2], c[:, 2] if c.shape[1] > 2 else np.ones(len(c), np.int64)])
        lookup = {(int(a), int(b), int(d)): i for i, (a, b, d) in enumerate(xyz)}
        planes: dict[tuple[int, int], list[int]] = {}
        for a, b, d in xyz.tolist():
            planes.setdefault((a, b), []).append(d)
        seen: dict[tuple[int, int, int], int] = {}
        for r in np.flatnonzero(ann.file == fname):
            line = int(ann.line[r])
            z = None if ann.z is None else int(ann.z[r])
            if ann.x[r] >= 0:
                x, y = int(ann.x[r]), int(ann.y[r])
                zs = planes.get((x, y), [])
                if z is None and len(zs) > 1:
                    raise ValueError(
                        f"{ann.source}: line {line}: pixel x={x}, y={y} of {fname} exists in "
                        f"several z planes {sorted(zs)}; give the plane in a 'z' column"
                    )
                pix = [(x, y, z if z is not None else (zs[0] if zs else 1))]
                if pix[0] not in lookup:
                    where = "" if z is None else f", z={z}"
                    raise ValueError(
                        f"{ann.source}: line {line}: pixel x={x}, y={y}{where} is not in {fname}"
                    )
            else:
                x0, x1, y0, y1 = (int(v) for v in ann.region[r])
                sel = (xyz[:, 0] >= x0) & (xyz[:, 0] <= x1) & (xyz[:, 1] >= y0) & (xyz[:, 1] <= y1)
                if z is not None:
                    sel &= xyz[:, 2] == z
                pix = [(int(a), int(b), int(d)) for a, b, d in xyz[sel]]
                if not pix:
                    raise ValueError(f"{ann.source}: line {line}: region holds no pixel of {fname}")
            for p in pix:
                if p in seen:
                    raise ValueError(
                        f"{ann.source}: line {line}: pixel x={p[0]}, y={p[1]} (z={p[2]}) of "
                        f"{fname} is already annotated on line {seen[p]} (duplicate pixel)"
                    )
                seen[p] = line
                keep.append(int(r))
                found.append(p)
                idx.append(lookup[p])
    rows = np.asarray(keep, dtype=np.int64)
    pts = np.asarray(found, dtype=np.int64).reshape(-1, 3)
    out = replace(
        ann.take(rows),
        x=pts[:, 0].copy(),
        y=pts[:, 1].copy(),
        z=pts[:, 2].copy(),
        region=np.full((len(rows), 4), -1, dtype=np.int64),
    )
    return out, np.asarray(idx, dtype=np.int64)
