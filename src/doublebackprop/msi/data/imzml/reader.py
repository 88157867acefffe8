"""Reading imzML 1.1 (continuous and processed mode, 32/64-bit arrays).

Reading: the XML metadata (offsets, lengths, coordinates, precisions, mode, UUID) is parsed by
``pyimzML``; the binary data is read from the ``.ibd`` file in bounded windows (one positioned
read of at most ``window_bytes``), never by mapping the whole file, so a file larger than the
address space left to the process is read as well as a small one. For continuous files whose
spectra lie at equally spaced offsets (what every writer produces) the spectra of a window are one
strided view of that read. zlib-compressed arrays (legal in imzML) are decompressed per spectrum;
other compressions are refused with an error naming them. Bad input is reported with the file
name and the spectrum index/pixel:

* a missing ``.ibd`` (:class:`FileNotFoundError`), a UUID that differs between ``.imzML`` and the
  first 16 bytes of the ``.ibd``, spectra whose data run past the end of a truncated ``.ibd``,
  a continuous file whose spectra do not share one m/z array (:class:`ValueError`);
* processed spectra whose m/z array is unsorted or whose m/z and intensity arrays differ in
  length, NaN or negative intensities: :class:`ValueError` by default; with ``repair=True``
  m/z arrays are sorted and NaN/negative intensities set to zero, and every repair is counted in
  :attr:`ImzMLReader.repairs` and logged (never a silent change);
* two spectra at the same (x, y, z) pixel (:class:`ValueError` naming both);
* empty spectra are legal in imzML: they are counted (``repairs["empty"]``) and read as zero-length
  arrays; after resampling they become all-zero spectra, which TIC normalisation handles explicitly.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from doublebackprop.common.buffers import BufferPool
from doublebackprop.common.prefetch import prefetch as _prefetch
from doublebackprop.msi.data.imzml._common import (
    _finite_nonnegative,
    _norm_uuid,
    check_unique_pixels,
)
from doublebackprop.msi.data.imzml._compression import compression, encoded_lengths

__all__ = ["ImzMLReader", "open_imzml"]

logger = logging.getLogger(__name__)


def _ibd_path(imzml: Path) -> Path:
    for cand in (imzml.with_suffix(".ibd"), imzml.with_suffix(".IBD")):
        if cand.exists():
            return cand
    raise FileNotFoundError(f"{imzml}: binary file {imzml.with_suffix('.ibd').name} not found")


class ImzMLReader:
    """Reader of one imzML/ibd pair (bounded-window reads of the ``.ibd``).

    Parameters
    ----------
    path : path of the ``.imzML`` file (the ``.ibd`` beside it has the same stem).
    repair : if true, sort unsorted m/z arrays and set NaN/negative intensities to zero, counting
        each repair in :attr:`repairs` and :attr:`repaired` (per spectrum); if false (default)
        such spectra raise :class:`ValueError`.
    window_bytes : the most bytes of the ``.ibd`` read at once (bounds the memory of a read).

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

    def __init__(
        self, path: str | Path, *, repair: bool = False, window_bytes: int = 64 << 20
    ) -> None:
        from pyimzml.ImzMLParser import ImzMLParser

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: imzML file not found")
        self.ibd_path = _ibd_path(self.path)
        self.repair = repair
        self.window_bytes = int(window_bytes)
        if self.window_bytes < 1:
            raise ValueError(f"window_bytes must be >= 1, got {window_bytes}")
        self.repairs: Counter[str] = Counter()
        #: spectrum index -> the repairs made to it (sorted m/z, invalid intensities)
        self.repaired: dict[int, set[str]] = {}
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
        self.compression = compression(self.path, parser)
        self._mz_enc = self._mz_len * self.mz_dtype.itemsize
        self._int_enc = self._int_len * self.intensity_dtype.itemsize
        if self.compression == "zlib":
            self._mz_enc, self._int_enc = encoded_lengths(
                self.path, self.n_spectra, parser.mzGroupId
            )
        check_unique_pixels(self.path, self.coordinates)
        self._check_ibd()
        self._fd: int | None = None
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
        ends = np.maximum(self._mz_off + self._mz_enc, self._int_off + self._int_enc)
        bad = np.flatnonzero(ends > size)
        if bad.size:
            raise ValueError(
                f"{self._where(int(bad[0]))} ends at byte {int(ends[bad[0]])} but "
                f"{self.ibd_path.name} has only {size} bytes (truncated .ibd?); "
                f"{bad.size} spectra affected"
            )
        if self.mode == "continuous" and self.n_spectra:
            differs = (self._mz_off != self._mz_off[0]) | (self._mz_enc != self._mz_enc[0])
            if differs.any():
                i = int(np.flatnonzero(differs)[0])
                raise ValueError(f"{self._where(i)}: continuous file but m/z array differs")
            if np.any(self._int_len != self._mz_len[0]):
                i = int(np.flatnonzero(self._int_len != self._mz_len[0])[0])
                raise ValueError(f"{self._where(i)}: intensity length differs from m/z length")

    def _read(self, offset: int, nbytes: int, pool: BufferPool | None = None) -> np.ndarray:
        """``nbytes`` bytes of the ``.ibd`` from ``offset`` (one positioned read), as uint8 (in
        a buffer of ``pool`` if given)."""
        if self._fd is None:
            try:
                self._fd = os.open(self.ibd_path, os.O_RDONLY)
            except OSError as exc:
                raise OSError(f"{self.ibd_path}: cannot open ({exc.strerror})") from exc
        try:
            buf = pool.take(nbytes) if pool else np.empty(nbytes, dtype=np.uint8)  # writable
            got = os.preadv(self._fd, [memoryview(buf)], offset)
        except (OSError, MemoryError) as exc:
            raise OSError(
                f"{self.ibd_path}: cannot read {nbytes} bytes at offset {offset} ({exc}); "
                "a smaller window_bytes or block size needs less memory"
            ) from exc
        if got != nbytes:
            raise ValueError(f"{self.ibd_path}: short read at offset {offset} (truncated .ibd?)")
        return buf

    def _array(self, offset: int, n: int, nbytes: int, dtype: np.dtype, i: int) -> np.ndarray:
        """One array of spectrum ``i``: ``n`` values of ``dtype`` stored in ``nbytes`` bytes."""
        raw = self._read(offset, nbytes)
        if self.compression == "zlib":
            try:
                raw = np.frombuffer(bytearray(zlib.decompress(raw)), dtype=np.uint8)
            except zlib.error as exc:
                raise ValueError(f"{self._where(i)}: cannot decompress zlib data ({exc})") from exc
        if raw.size != n * dtype.itemsize:
            raise ValueError(
                f"{self._where(i)}: {raw.size} bytes of data for {n} values of {dtype}"
            )
        return raw.view(dtype)

    def close(self) -> None:
        """Close the ``.ibd`` file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def __enter__(self) -> ImzMLReader:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _check_values(self, values: np.ndarray, first: int | np.ndarray) -> np.ndarray:
        """NaN/negative check of a (n, L) or (L,) block of spectra ``first``, ``first + 1``, …
        (or of the spectrum indices ``first``)."""
        if values.size == 0 or _finite_nonnegative(values):
            return values  # fast path: one reduction over the bit patterns, no temporaries
        bad = ~np.isfinite(values) | (values < 0)
        if not bad.any():
            return values
        rows = np.flatnonzero(bad.reshape(len(values), -1).any(axis=1)) if values.ndim == 2 else [0]
        n = len(values) if values.ndim == 2 else 1
        index = np.arange(first, first + n) if np.ndim(first) == 0 else np.asarray(first)
        if not self.repair:
            kind = "NaN/inf" if not np.isfinite(values).all() else "negative"
            raise ValueError(
                f"{self._where(int(index[rows[0]]))}: {kind} intensities "
                f"({int(bad.sum())} values in {len(rows)} spectra of this block); "
                "pass repair=True (--repair) to set them to zero"
            )
        values = np.where(bad, 0, values)
        self.repairs["invalid_intensity_values"] += int(bad.sum())
        self.repairs["spectra_with_invalid_intensities"] += len(rows)
        for r in rows:
            self.repaired.setdefault(int(index[r]), set()).add("invalid_intensities")
        logger.warning("%s: set %d NaN/negative intensities to zero", self.path, int(bad.sum()))
        return values

    # ------------------------------------------------------------------ reading
    def mz_axis(self) -> np.ndarray:
        """The shared m/z axis of a continuous file, shape (L,), float64."""
        if self.mode != "continuous":
            raise ValueError(f"{self.path}: processed file has no shared m/z axis")
        if self._mz_axis is None:
            if not self.n_spectra:
                return np.zeros(0)
            n, enc = int(self._mz_len[0]), int(self._mz_enc[0])
            mz = self._array(int(self._mz_off[0]), n, enc, self.mz_dtype, 0).astype(np.float64)
            if n > 1 and not np.all(np.diff(mz) > 0):
                raise ValueError(f"{self.path}: continuous m/z axis is not strictly increasing")
            self._mz_axis = mz
        return self._mz_axis

    def read_block(self, start: int, stop: int, *, pool: BufferPool | None = None) -> np.ndarray:
        """Intensities of spectra ``start:stop`` of a continuous file: a ``(stop - start, L)``
        array in the file's intensity dtype (see :meth:`read_rows`)."""
        start, stop = max(0, start), min(stop, self.n_spectra)
        return self.read_rows(np.arange(start, max(start, stop)), pool=pool)

    def read_rows(
        self, indices: np.ndarray | Sequence[int], *, pool: BufferPool | None = None
    ) -> np.ndarray:
        """Intensities of the spectra ``indices`` (any order) of a continuous file, (n, L).

        The spectra are read in windows of at most ``window_bytes`` of the file (sorted by
        offset); within a window, equally spaced spectra are one strided view. Consecutive
        spectra in one window are the read's own buffer (a new one, or one of ``pool``)."""
        if self.mode != "continuous":
            raise ValueError(f"{self.path}: read_rows needs a continuous file (use spectrum())")
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_spectra):
            raise IndexError(f"{self.path}: spectrum index out of range 0..{self.n_spectra - 1}")
        length, dt = int(self._mz_len[0]) if self.n_spectra else 0, self.intensity_dtype
        out = np.empty((idx.size, length), dtype=dt)
        if idx.size == 0:
            return out
        if self.compression != "none":
            for k, i in enumerate(idx.tolist()):
                out[k] = self._array(int(self._int_off[i]), length, int(self._int_enc[i]), dt, i)
            return self._check_values(out, idx)
        order = np.argsort(self._int_off[idx], kind="stable")
        offs = self._int_off[idx[order]]
        nbytes = length * dt.itemsize
        span = int(offs[-1] - offs[0]) + nbytes
        if (
            span <= self.window_bytes
            and np.array_equal(order, np.arange(idx.size))
            and np.all(np.diff(offs) == nbytes)
        ):  # consecutive, contiguous spectra in one window: the read is the array
            buf = self._read(int(offs[0]), span, pool)
            block = buf.view(dt).reshape(idx.size, length)
            return self._check_values(block, idx)
        s = 0
        while s < len(order):
            lo = int(offs[s])
            e = s + int(np.searchsorted(offs[s:], lo + max(self.window_bytes - nbytes, 0), "right"))
            e = max(e, s + 1)
            buf = self._read(lo, int(offs[e - 1]) - lo + nbytes)
            rel = offs[s:e] - lo
            steps = np.diff(rel)
            if e - s > 1 and steps.size and np.all(rel % steps[0] == 0) and steps[0] >= nbytes:
                step = int(steps[0])
                view = np.ndarray(
                    (int(rel[-1]) // step + 1, length),
                    dtype=dt,
                    buffer=buf,
                    strides=(step, dt.itemsize),
                )
                out[order[s:e]] = view[rel // step]
            else:
                for k, r in zip(order[s:e].tolist(), rel.tolist()):
                    out[k] = buf[int(r) : int(r) + nbytes].view(dt)
            s = e
        return self._check_values(out, idx)

    def iter_blocks(
        self, block_size: int = 2048, *, prefetch: bool = False, dtype: type | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, block)``: consecutive blocks of a continuous file, new arrays (of
        ``dtype`` if given). With ``prefetch`` the next block is read, checked and cast in a
        background thread while the caller works on the current one (three blocks at most).
        Blocks are read into a few reused buffers (:class:`BufferPool`): a buffer is filled again
        only once no array of it is alive, so keeping a block keeps its data."""
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.mz_axis()  # opens the file here, not in the reading thread
        as_dt, pool = np.dtype(dtype or self.intensity_dtype), BufferPool()
        blocks = (
            (s, self.read_block(s, s + block_size, pool=pool).astype(as_dt, copy=False))
            for s in range(0, self.n_spectra, block_size)
        )
        return _prefetch(blocks) if prefetch else blocks

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
        if self.mode == "continuous":
            mz = self.mz_axis()
        else:
            mz = self._array(int(self._mz_off[i]), n, int(self._mz_enc[i]), self.mz_dtype, i)
            mz = mz.astype(np.float64, copy=False)  # a view of this read's own buffer
        it = self._array(int(self._int_off[i]), n, int(self._int_enc[i]), self.intensity_dtype, i)
        it = self._check_values(it, i)  # likewise: no copy needed
        d = np.diff(mz)
        if np.any(d <= 0) or not np.all(np.isfinite(mz)):
            if not self.repair or not np.all(np.isfinite(mz)):
                raise ValueError(f"{self._where(i)}: m/z array is not strictly increasing")
            order = np.argsort(mz, kind="stable")
            mz, it = mz[order], it[order]
            self.repairs["sorted_mz"] += 1
            self.repaired.setdefault(i, set()).add("sorted_mz")
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
                mz = self._array(int(self._mz_off[i]), n, int(self._mz_enc[i]), self.mz_dtype, i)
                lo, hi = min(lo, float(mz.min())), max(hi, float(mz.max()))
        return lo, hi

    def value_counts(self) -> dict[str, int]:
        """Counts of NaN, infinite, negative and zero intensities over the whole file (read in
        windows; no repair, no error)."""
        counts = dict.fromkeys(("values", "nan", "inf", "negative", "zero"), 0)
        for i, (off, n, enc) in enumerate(zip(self._int_off, self._int_len, self._int_enc)):
            v = self._array(int(off), int(n), int(enc), self.intensity_dtype, i)
            counts["values"] += int(n)
            if v.dtype.kind == "f":
                counts["nan"] += int(np.isnan(v).sum())
                counts["inf"] += int(np.isinf(v).sum())
            counts["negative"] += int((v < 0).sum())
            counts["zero"] += int((v == 0).sum())
        return counts


def open_imzml(
    path: str | Path, *, repair: bool = False, window_bytes: int = 64 << 20
) -> ImzMLReader:
    """Open an imzML/ibd pair for reading; see :class:`ImzMLReader`."""
    return ImzMLReader(path, repair=repair, window_bytes=window_bytes)
