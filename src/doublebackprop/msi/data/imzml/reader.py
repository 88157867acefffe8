"""Reading imzML 1.1 (continuous and processed mode, 32/64-bit arrays).

Reading: the XML metadata (offsets, lengths, coordinates, precisions, mode, UUID) is parsed by
``pyimzML``; the binary data is read by memory-mapping the ``.ibd`` file. For continuous files
whose spectra lie at equally spaced offsets (what every writer produces) a block of spectra is a
single strided view of the map, so thousands of spectra are read with one copy instead of one seek
per spectrum. Bad input is reported with the file name and the spectrum index/pixel:

* a missing ``.ibd`` (:class:`FileNotFoundError`), a UUID that differs between ``.imzML`` and the
  first 16 bytes of the ``.ibd``, spectra whose data run past the end of a truncated ``.ibd``,
  a continuous file whose spectra do not share one m/z array (:class:`ValueError`);
* processed spectra whose m/z array is unsorted or whose m/z and intensity arrays differ in
  length, NaN or negative intensities: :class:`ValueError` by default; with ``repair=True``
  m/z arrays are sorted and NaN/negative intensities set to zero, and every repair is counted in
  :attr:`ImzMLReader.repairs` and logged (never a silent change);
* empty spectra are legal in imzML: they are counted (``repairs["empty"]``) and read as zero-length
  arrays; after resampling they become all-zero spectra, which TIC normalisation handles explicitly.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from doublebackprop.msi.data.imzml._common import _norm_uuid

__all__ = ["ImzMLReader", "open_imzml"]

logger = logging.getLogger(__name__)


def _ibd_path(imzml: Path) -> Path:
    for cand in (imzml.with_suffix(".ibd"), imzml.with_suffix(".IBD")):
        if cand.exists():
            return cand
    raise FileNotFoundError(f"{imzml}: binary file {imzml.with_suffix('.ibd').name} not found")


class ImzMLReader:
    """Memory-mapped reader of one imzML/ibd pair.

    Parameters
    ----------
    path : path of the ``.imzML`` file (the ``.ibd`` beside it has the same stem).
    repair : if true, sort unsorted m/z arrays and set NaN/negative intensities to zero, counting
        each repair in :attr:`repairs`; if false (default) such spectra raise :class:`ValueError`.

    Attributes
    ----------
    coordinates : (N, 3) int64 pixel coordinates (x, y, z), 1-based as in the file.
    mode : ``"continuous"`` or ``"processed"``.
    spectrum_type : ``"profile"``, ``"centroid"`` or ``"unknown"``.

    Examples
    --------
    >>> with open_imzml("image.imzML") as r:  # doctest: +SKIP
    ...     block = r.read_block(0, 1000)      # (1000, L) for a continuous file
    """

    def __init__(self, path: str | Path, *, repair: bool = False) -> None:
        from pyimzml.ImzMLParser import ImzMLParser

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: imzML file not found")
        self.ibd_path = _ibd_path(self.path)
        self.repair = repair
        self.repairs: Counter[str] = Counter()
        try:
            parser = ImzMLParser(str(self.path), ibd_file=None)
        except Exception as exc:  # pyimzML raises assorted types on malformed XML
            raise ValueError(f"{self.path}: cannot parse imzML metadata ({exc})") from exc
        fd = parser.metadata.file_description.param_by_name
        self.mode = "processed" if fd.get("processed") else "continuous"
        self.spectrum_type = parser.spectrum_mode or "unknown"
        self.uuid = _norm_uuid(fd.get("universally unique identifier", ""))
        if parser.mzPrecision is None or parser.intensityPrecision is None:
            raise ValueError(f"{self.path}: m/z or intensity array precision not declared")
        self.mz_dtype = np.dtype("<" + parser.mzPrecision)
        self.intensity_dtype = np.dtype("<" + parser.intensityPrecision)
        self.coordinates = np.asarray(parser.coordinates, dtype=np.int64).reshape(-1, 3)
        self._mz_off = np.asarray(parser.mzOffsets, dtype=np.int64)
        self._mz_len = np.asarray(parser.mzLengths, dtype=np.int64)
        self._int_off = np.asarray(parser.intensityOffsets, dtype=np.int64)
        self._int_len = np.asarray(parser.intensityLengths, dtype=np.int64)
        self.n_spectra = len(self.coordinates)
        self._check_ibd()
        self._map: np.memmap | None = None
        self._mz_axis: np.ndarray | None = None

    # ------------------------------------------------------------------ validation
    def _where(self, i: int) -> str:
        x, y, _ = self.coordinates[i]
        return f"{self.path}: spectrum {i} (pixel x={x}, y={y})"

    def _check_ibd(self) -> None:
        size = self.ibd_path.stat().st_size
        with open(self.ibd_path, "rb") as fh:
            head = fh.read(16)
        if self.uuid and len(head) == 16 and head.hex() != self.uuid:
            raise ValueError(
                f"{self.path}: UUID {self.uuid} does not match the UUID {head.hex()} in "
                f"{self.ibd_path.name}"
            )
        ends = np.maximum(
            self._mz_off + self._mz_len * self.mz_dtype.itemsize,
            self._int_off + self._int_len * self.intensity_dtype.itemsize,
        )
        bad = np.flatnonzero(ends > size)
        if bad.size:
            raise ValueError(
                f"{self._where(int(bad[0]))} ends at byte {int(ends[bad[0]])} but "
                f"{self.ibd_path.name} has only {size} bytes (truncated .ibd?); "
                f"{bad.size} spectra affected"
            )
        if self.mode == "continuous" and self.n_spectra:
            if np.any(self._mz_off != self._mz_off[0]) or np.any(self._mz_len != self._mz_len[0]):
                i = int(
                    np.flatnonzero(
                        (self._mz_off != self._mz_off[0]) | (self._mz_len != self._mz_len[0])
                    )[0]
                )
                raise ValueError(f"{self._where(i)}: continuous file but m/z array differs")
            if np.any(self._int_len != self._mz_len[0]):
                i = int(np.flatnonzero(self._int_len != self._mz_len[0])[0])
                raise ValueError(f"{self._where(i)}: intensity length differs from m/z length")

    @property
    def _mm(self) -> np.memmap:
        if self._map is None:
            self._map = np.memmap(self.ibd_path, dtype=np.uint8, mode="r")
        return self._map

    def close(self) -> None:
        """Release the memory map."""
        self._map = None

    def __enter__(self) -> ImzMLReader:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _check_values(self, values: np.ndarray, first: int) -> np.ndarray:
        """NaN/negative check of a (n, L) or (L,) block starting at spectrum ``first``."""
        if values.size == 0 or (np.isfinite(values.sum(dtype=np.float64)) and values.min() >= 0):
            return values  # fast path: two reductions, no temporaries
        bad = ~np.isfinite(values) | (values < 0)
        if not bad.any():
            return values
        rows = np.flatnonzero(bad.reshape(len(values), -1).any(axis=1)) if values.ndim == 2 else [0]
        if not self.repair:
            kind = "NaN/inf" if not np.isfinite(values).all() else "negative"
            raise ValueError(
                f"{self._where(first + int(rows[0]))}: {kind} intensities "
                f"({int(bad.sum())} values in {len(rows)} spectra of this block); "
                "pass repair=True to set them to zero"
            )
        values = np.where(bad, 0, values)
        self.repairs["invalid_intensity_values"] += int(bad.sum())
        self.repairs["spectra_with_invalid_intensities"] += len(rows)
        logger.warning("%s: set %d NaN/negative intensities to zero", self.path, int(bad.sum()))
        return values

    # ------------------------------------------------------------------ reading
    def mz_axis(self) -> np.ndarray:
        """The shared m/z axis of a continuous file, shape (L,), float64."""
        if self.mode != "continuous":
            raise ValueError(f"{self.path}: processed file has no shared m/z axis")
        if self._mz_axis is None:
            n = int(self._mz_len[0]) if self.n_spectra else 0
            off = int(self._mz_off[0]) if self.n_spectra else 0
            mz = np.frombuffer(self._mm, dtype=self.mz_dtype, count=n, offset=off).astype(
                np.float64
            )
            if n > 1 and not np.all(np.diff(mz) > 0):
                raise ValueError(f"{self.path}: continuous m/z axis is not strictly increasing")
            self._mz_axis = mz
        return self._mz_axis

    def read_block(self, start: int, stop: int) -> np.ndarray:
        """Intensities of spectra ``start:stop`` of a continuous file.

        Returns
        -------
        (stop - start, L) array in the file's intensity dtype (a copy).
        """
        if self.mode != "continuous":
            raise ValueError(f"{self.path}: read_block needs a continuous file (use spectrum())")
        start, stop = max(0, start), min(stop, self.n_spectra)
        n_rows, length = max(0, stop - start), int(self._mz_len[0]) if self.n_spectra else 0
        dt = self.intensity_dtype
        out = np.empty((n_rows, length), dtype=dt)
        if n_rows == 0:
            return out
        offs = self._int_off[start:stop]
        steps = np.diff(offs)
        if n_rows == 1 or (np.all(steps == steps[0]) and steps[0] > 0):
            step = int(steps[0]) if n_rows > 1 else length * dt.itemsize
            view = np.ndarray(
                (n_rows, length),
                dtype=dt,
                buffer=self._mm,
                offset=int(offs[0]),
                strides=(step, dt.itemsize),
            )
            out[...] = view
        else:  # irregular layout: one cheap view per row, still no file seeks
            for k, o in enumerate(offs):
                out[k] = np.frombuffer(self._mm, dtype=dt, count=length, offset=int(o))
        return self._check_values(out, start)

    def read_rows(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """Intensities of the spectra ``indices`` (any order) of a continuous file, (n, L)."""
        if self.mode != "continuous":
            raise ValueError(f"{self.path}: read_rows needs a continuous file (use spectrum())")
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_spectra):
            raise IndexError(f"{self.path}: spectrum index out of range 0..{self.n_spectra - 1}")
        length, dt = int(self._mz_len[0]) if self.n_spectra else 0, self.intensity_dtype
        steps = np.diff(self._int_off)
        if self.n_spectra and (self.n_spectra == 1 or (np.all(steps == steps[0]) and steps[0] > 0)):
            step = int(steps[0]) if self.n_spectra > 1 else length * dt.itemsize
            full = np.ndarray(
                (self.n_spectra, length),
                dtype=dt,
                buffer=self._mm,
                offset=int(self._int_off[0]),
                strides=(step, dt.itemsize),
            )
            out = full[idx]
        else:
            out = np.empty((idx.size, length), dtype=dt)
            for k, i in enumerate(idx.tolist()):
                out[k] = np.frombuffer(
                    self._mm, dtype=dt, count=length, offset=int(self._int_off[i])
                )
        if idx.size:
            bad = ~np.isfinite(out) | (out < 0)
            if bad.any():
                r = int(np.flatnonzero(bad.any(axis=1))[0])
                if not self.repair:
                    return self._check_values(out[r : r + 1], int(idx[r]))  # raises, naming it
                out = self._check_values(out, 0)
        return out

    def iter_blocks(self, block_size: int = 2048) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, block)`` for consecutive blocks of a continuous file."""
        for s in range(0, self.n_spectra, block_size):
            yield s, self.read_block(s, s + block_size)

    def spectrum(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """m/z (float64) and intensity arrays of spectrum ``i`` (any mode), validated."""
        if not 0 <= i < self.n_spectra:
            raise IndexError(
                f"{self.path}: spectrum index {i} out of range 0..{self.n_spectra - 1}"
            )
        if self._mz_len[i] != self._int_len[i]:
            raise ValueError(
                f"{self._where(i)}: m/z array has {self._mz_len[i]} values but the intensity "
                f"array has {self._int_len[i]}"
            )
        n = int(self._mz_len[i])
        if n == 0:
            self.repairs["empty"] += 1
            logger.info("%s: empty spectrum", self._where(i))
            return np.zeros(0), np.zeros(0, dtype=self.intensity_dtype)
        mz = np.frombuffer(self._mm, self.mz_dtype, n, int(self._mz_off[i])).astype(np.float64)
        it = np.frombuffer(self._mm, self.intensity_dtype, n, int(self._int_off[i])).copy()
        it = self._check_values(it, i)
        d = np.diff(mz)
        if np.any(d <= 0) or not np.all(np.isfinite(mz)):
            if not self.repair or not np.all(np.isfinite(mz)):
                raise ValueError(f"{self._where(i)}: m/z array is not strictly increasing")
            order = np.argsort(mz, kind="stable")
            mz, it = mz[order], it[order]
            self.repairs["sorted_mz"] += 1
            logger.warning("%s: sorted an unsorted m/z array", self._where(i))
        return mz, it

    def mz_extent(self) -> tuple[float, float]:
        """Smallest and largest m/z of the file (reads every processed m/z array once)."""
        if self.mode == "continuous":
            mz = self.mz_axis()
            return (float(mz[0]), float(mz[-1])) if mz.size else (np.inf, -np.inf)
        lo, hi = np.inf, -np.inf
        for i in range(self.n_spectra):
            n = int(self._mz_len[i])
            if n:
                mz = np.frombuffer(self._mm, self.mz_dtype, n, int(self._mz_off[i]))
                lo, hi = min(lo, float(mz.min())), max(hi, float(mz.max()))
        return lo, hi


def open_imzml(path: str | Path, *, repair: bool = False) -> ImzMLReader:
    """Open an imzML/ibd pair for reading; see :class:`ImzMLReader`."""
    return ImzMLReader(path, repair=repair)
