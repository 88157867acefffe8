"""Writing imzML 1.1: :class:`ImzMLWriter` streams spectra to the ``.ibd`` (UUID first, then the
arrays) and writes the ``.imzML`` on close, so a cohort larger than memory can be written spectrum
by spectrum. An exception inside ``with ImzMLWriter(...)`` removes the partial files instead."""

from __future__ import annotations

import hashlib
import logging
import uuid as uuid_mod
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from doublebackprop.msi.data.imzml._common import _norm_uuid

__all__ = ["ImzMLWriter", "write_imzml"]

logger = logging.getLogger(__name__)

_DTYPE_CV = {
    np.dtype("float32"): ("MS:1000521", "32-bit float"),
    np.dtype("float64"): ("MS:1000523", "64-bit float"),
    np.dtype("int32"): ("IMS:1000141", "32-bit integer"),
    np.dtype("int64"): ("IMS:1000142", "64-bit integer"),
}
_SPECTRUM_TYPE_CV = {
    "profile": ("MS:1000128", "profile spectrum"),
    "centroid": ("MS:1000127", "centroid spectrum"),
}


class ImzMLWriter:
    """Streaming imzML 1.1 writer (continuous or processed mode).

    Parameters
    ----------
    path : output ``.imzML`` path; the ``.ibd`` is written beside it.
    mode : ``"continuous"`` (one shared m/z array, given as ``mz``) or ``"processed"``.
    mz : shared m/z axis (continuous mode only).
    mz_dtype, intensity_dtype : float32/float64 (or int32/int64 for intensities).
    spectrum_type : ``"profile"`` or ``"centroid"``.
    pixel_size_um : written to the scan settings when given.
    uuid : 32 hex digits; random when omitted (pass one for byte-identical output).

    Examples
    --------
    >>> with ImzMLWriter("out.imzML", mode="continuous", mz=axis) as w:  # doctest: +SKIP
    ...     w.add_spectrum(intensities, (x, y))
    """

    def __init__(
        self,
        path: str | Path,
        *,
        mode: str = "continuous",
        mz: np.ndarray | None = None,
        mz_dtype: Any = np.float64,
        intensity_dtype: Any = np.float32,
        spectrum_type: str = "profile",
        pixel_size_um: float | None = None,
        uuid: str | None = None,
    ) -> None:
        if mode not in ("continuous", "processed"):
            raise ValueError(f"mode must be 'continuous' or 'processed', got {mode!r}")
        if spectrum_type not in _SPECTRUM_TYPE_CV:
            raise ValueError(
                f"spectrum_type must be 'profile' or 'centroid', got {spectrum_type!r}"
            )
        self.mz_dtype, self.intensity_dtype = np.dtype(mz_dtype), np.dtype(intensity_dtype)
        for name, dt in (("mz_dtype", self.mz_dtype), ("intensity_dtype", self.intensity_dtype)):
            if dt not in _DTYPE_CV or (name == "mz_dtype" and dt.kind != "f"):
                raise TypeError(
                    f"{name} must be float32/float64 (or int for intensities), got {dt}"
                )
        self.path = Path(path)
        if self.path.suffix.lower() != ".imzml":
            raise ValueError(f"{self.path}: output name must end in .imzML")
        self.mode, self.spectrum_type, self.pixel_size_um = mode, spectrum_type, pixel_size_um
        self.uuid = _norm_uuid(uuid) if uuid else uuid_mod.uuid4().hex
        if len(self.uuid) != 32:
            raise ValueError(f"uuid must have 32 hex digits, got {uuid!r}")
        self._sha1 = hashlib.sha1()
        self._ibd = open(self.path.with_suffix(".ibd"), "wb")
        self._pos = 0
        self._write(bytes.fromhex(self.uuid))
        self._records: list[tuple[int, int, int, int, int, int]] = []
        self._shared: tuple[int, int] | None = None
        if mode == "continuous":
            if mz is None:
                raise ValueError("continuous mode needs the shared m/z axis 'mz'")
            mz = np.asarray(mz, dtype=np.float64)
            if mz.ndim != 1 or (mz.size > 1 and not np.all(np.diff(mz) > 0)):
                raise ValueError("mz must be a strictly increasing 1-D array")
            self._shared = (self._write(mz.astype(self.mz_dtype).tobytes()), mz.size)
        elif mz is not None:
            raise ValueError("processed mode takes m/z per spectrum, not a shared 'mz'")

    def _write(self, data: bytes) -> int:
        off = self._pos
        self._ibd.write(data)
        self._sha1.update(data)
        self._pos += len(data)
        return off

    def add_spectrum(
        self, intensities: np.ndarray, coordinate: Sequence[int], mz: np.ndarray | None = None
    ) -> None:
        """Append one spectrum at pixel ``coordinate`` = (x, y) or (x, y, z), 1-based."""
        it = np.asarray(intensities)
        if it.ndim != 1:
            raise ValueError(f"intensities must be 1-D, got shape {it.shape}")
        if self.mode == "continuous":
            assert self._shared is not None
            if mz is not None:
                raise ValueError("continuous mode: do not pass mz per spectrum")
            if it.size != self._shared[1]:
                raise ValueError(
                    f"intensities have {it.size} values, the m/z axis {self._shared[1]}"
                )
            mz_off, n_mz = self._shared
        else:
            if mz is None:
                raise ValueError("processed mode needs mz for every spectrum")
            m = np.asarray(mz, dtype=np.float64)
            if m.shape != it.shape:
                raise ValueError(f"mz shape {m.shape} differs from intensities shape {it.shape}")
            mz_off, n_mz = self._write(m.astype(self.mz_dtype).tobytes()), m.size
        int_off = self._write(it.astype(self.intensity_dtype).tobytes())
        c = [int(v) for v in coordinate] + [1]
        if min(c[:2]) < 1:
            raise ValueError(f"pixel coordinates are 1-based, got {tuple(coordinate)}")
        self._records.append((c[0], c[1], c[2], mz_off, n_mz, int_off))

    def close(self) -> Path:
        """Finish the ``.ibd`` and write the ``.imzML``; returns the ``.imzML`` path."""
        if self._ibd.closed:
            return self.path
        self._ibd.close()
        self._write_xml()
        return self.path

    def __enter__(self) -> ImzMLWriter:
        return self

    def abort(self) -> None:
        """Give up: close and delete the ``.ibd`` and remove the ``.imzML`` at this path, so no
        partial file can be read as complete (called on an exception inside ``with``)."""
        if not self._ibd.closed:
            self._ibd.close()
        self.path.with_suffix(".ibd").unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)
        logger.warning("%s: writing failed; partial files removed", self.path)

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if et is not None:
            self.abort()
        else:
            self.close()

    def _write_xml(self) -> None:
        mzacc, mzname = _DTYPE_CV[self.mz_dtype]
        inacc, inname = _DTYPE_CV[self.intensity_dtype]
        stacc, stname = _SPECTRUM_TYPE_CV[self.spectrum_type]
        modeacc = "IMS:1000030" if self.mode == "continuous" else "IMS:1000031"
        recs = np.asarray(self._records, dtype=np.int64).reshape(-1, 6)
        maxx = int(recs[:, 0].max()) if len(recs) else 0
        maxy = int(recs[:, 1].max()) if len(recs) else 0
        isz_mz, isz_in = self.mz_dtype.itemsize, self.intensity_dtype.itemsize

        def cv(ref: str, acc: str, name: str, value: Any = None, extra: str = "") -> str:
            v = f" value={quoteattr(str(value))}" if value is not None else ""
            return f'<cvParam cvRef="{ref}" accession="{acc}" name="{name}"{v}{extra}/>'

        px = ""
        if self.pixel_size_um is not None:
            unit = ' unitCvRef="UO" unitAccession="UO:0000017" unitName="micrometer"'
            px = cv("IMS", "IMS:1000046", "pixel size (x)", self.pixel_size_um, unit) + cv(
                "IMS", "IMS:1000047", "pixel size y", self.pixel_size_um, unit
            )
        head = f"""<?xml version="1.0" encoding="UTF-8"?>
<mzML xmlns="http://psi.hupo.org/ms/mzml" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="http://psi.hupo.org/ms/mzml http://psidev.info/files/ms/mzML/xsd/mzML1.1.0.xsd" version="1.1">
 <cvList count="3">
  <cv id="MS" fullName="Proteomics Standards Initiative Mass Spectrometry Ontology" version="4.1.0" URI="https://raw.githubusercontent.com/HUPO-PSI/psi-ms-CV/master/psi-ms.obo"/>
  <cv id="UO" fullName="Unit Ontology" version="releases/2020-03-10" URI="http://ontologies.berkeleybop.org/uo.obo"/>
  <cv id="IMS" fullName="Mass Spectrometry Imaging Ontology" version="1.1.0" URI="https://raw.githubusercontent.com/imzML/imzML/master/imagingMS.obo"/>
 </cvList>
 <fileDescription>
  <fileContent>
   {cv("MS", "MS:1000579", "MS1 spectrum")}
   {cv("MS", stacc, stname)}
   {cv("IMS", modeacc, self.mode)}
   {cv("IMS", "IMS:1000080", "universally unique identifier", "{" + str(uuid_mod.UUID(self.uuid)) + "}")}
   {cv("IMS", "IMS:1000091", "ibd SHA-1", self._sha1.hexdigest())}
  </fileContent>
 </fileDescription>
 <referenceableParamGroupList count="3">
  <referenceableParamGroup id="mzArray">
   {cv("MS", "MS:1000576", "no compression")}
   {cv("MS", "MS:1000514", "m/z array", None, ' unitCvRef="MS" unitAccession="MS:1000040" unitName="m/z"')}
   {cv("MS", mzacc, mzname)}
   {cv("IMS", "IMS:1000101", "external data", "true")}
  </referenceableParamGroup>
  <referenceableParamGroup id="intensityArray">
   {cv("MS", "MS:1000576", "no compression")}
   {cv("MS", "MS:1000515", "intensity array", None, ' unitCvRef="MS" unitAccession="MS:1000131" unitName="number of detector counts"')}
   {cv("MS", inacc, inname)}
   {cv("IMS", "IMS:1000101", "external data", "true")}
  </referenceableParamGroup>
  <referenceableParamGroup id="spectrum1">
   {cv("MS", "MS:1000579", "MS1 spectrum")}
   {cv("MS", "MS:1000511", "ms level", 1)}
   {cv("MS", stacc, stname)}
   {cv("MS", "MS:1000130", "positive scan")}
  </referenceableParamGroup>
 </referenceableParamGroupList>
 <sampleList count="1"><sample id="sample1" name="sample1"/></sampleList>
 <softwareList count="1"><software id="doublebackprop" version="0.1">{cv("MS", "MS:1000799", "custom unreleased software tool", "doublebackprop")}</software></softwareList>
 <scanSettingsList count="1">
  <scanSettings id="scansettings1">
   {cv("IMS", "IMS:1000042", "max count of pixels x", maxx)}
   {cv("IMS", "IMS:1000043", "max count of pixels y", maxy)}
   {px}
  </scanSettings>
 </scanSettingsList>
 <instrumentConfigurationList count="1">
  <instrumentConfiguration id="IC1">
   <componentList count="3">
    <source order="1">{cv("MS", "MS:1000075", "matrix-assisted laser desorption ionization")}</source>
    <analyzer order="2">{cv("MS", "MS:1000084", "time-of-flight")}</analyzer>
    <detector order="3">{cv("MS", "MS:1000114", "microchannel plate detector")}</detector>
   </componentList>
  </instrumentConfiguration>
 </instrumentConfigurationList>
 <dataProcessingList count="1">
  <dataProcessing id="export"><processingMethod order="1" softwareRef="doublebackprop">{cv("MS", "MS:1000544", "Conversion to mzML")}</processingMethod></dataProcessing>
 </dataProcessingList>
 <run defaultInstrumentConfigurationRef="IC1" id="run1" sampleRef="sample1">
  <spectrumList count="{len(recs)}" defaultDataProcessingRef="export">
"""
        with open(self.path, "w", encoding="utf-8") as fh:
            fh.write(head)
            for i, (x, y, z, mz_off, n, int_off) in enumerate(recs.tolist()):
                zline = "" if z == 1 else cv("IMS", "IMS:1000052", "position z", z)
                fh.write(
                    f'   <spectrum id="Scan={i + 1}" defaultArrayLength="0" index="{i}">'
                    '<referenceableParamGroupRef ref="spectrum1"/>'
                    f'<scanList count="1">{cv("MS", "MS:1000795", "no combination")}'
                    '<scan instrumentConfigurationRef="IC1">'
                    f"{cv('IMS', 'IMS:1000050', 'position x', x)}"
                    f"{cv('IMS', 'IMS:1000051', 'position y', y)}{zline}</scan></scanList>"
                    '<binaryDataArrayList count="2">'
                    '<binaryDataArray encodedLength="0"><referenceableParamGroupRef ref="mzArray"/>'
                    f"{cv('IMS', 'IMS:1000103', 'external array length', n)}"
                    f"{cv('IMS', 'IMS:1000104', 'external encoded length', n * isz_mz)}"
                    f"{cv('IMS', 'IMS:1000102', 'external offset', mz_off)}<binary/></binaryDataArray>"
                    '<binaryDataArray encodedLength="0"><referenceableParamGroupRef ref="intensityArray"/>'
                    f"{cv('IMS', 'IMS:1000103', 'external array length', n)}"
                    f"{cv('IMS', 'IMS:1000104', 'external encoded length', n * isz_in)}"
                    f"{cv('IMS', 'IMS:1000102', 'external offset', int_off)}<binary/></binaryDataArray>"
                    "</binaryDataArrayList></spectrum>\n"
                )
            fh.write("  </spectrumList>\n </run>\n</mzML>\n")


def write_imzml(
    path: str | Path,
    mz: np.ndarray | Sequence[np.ndarray],
    intensities: np.ndarray | Sequence[np.ndarray],
    coordinates: np.ndarray | Sequence[Sequence[int]],
    *,
    mode: str = "continuous",
    mz_dtype: Any = np.float64,
    intensity_dtype: Any = np.float32,
    spectrum_type: str = "profile",
    pixel_size_um: float | None = None,
    uuid: str | None = None,
) -> Path:
    """Write spectra held in memory to an imzML/ibd pair.

    Parameters
    ----------
    path : str or Path
        The ``.imzML`` to write (the ``.ibd`` beside it).
    mz, intensities, coordinates
        See *Shapes*.
    mode : {"continuous", "processed"}
    mz_dtype, intensity_dtype : numpy dtype
        Stored precisions (32/64-bit floats; integers for intensities).
    spectrum_type : {"profile", "centroid"}
    pixel_size_um : float or None
    uuid : str or None
        The file's UUID (default: a new random one).

    Shapes
    ------
    continuous: ``mz`` (L,), ``intensities`` (N, L); processed: ``mz`` and ``intensities`` are
    sequences of N 1-D arrays of matching lengths; ``coordinates`` (N, 2) or (N, 3), 1-based.

    Examples
    --------
    >>> write_imzml("a.imzML", np.linspace(700, 2000, 5000), np.ones((4, 5000)),
    ...             [(1, 1), (2, 1), (1, 2), (2, 2)])  # doctest: +SKIP
    """
    coords = np.asarray(coordinates, dtype=np.int64)
    if coords.ndim != 2 or coords.shape[1] not in (2, 3):
        raise ValueError(f"coordinates must have shape (N, 2) or (N, 3), got {coords.shape}")
    if len(intensities) != len(coords):
        raise ValueError(f"{len(intensities)} spectra but {len(coords)} coordinates")
    shared = mz if mode == "continuous" else None
    with ImzMLWriter(
        path,
        mode=mode,
        mz=shared,
        mz_dtype=mz_dtype,
        intensity_dtype=intensity_dtype,
        spectrum_type=spectrum_type,
        pixel_size_um=pixel_size_um,
        uuid=uuid,
    ) as w:
        for i, c in enumerate(coords):
            if mode == "continuous":
                w.add_spectrum(intensities[i], c)
            else:
                w.add_spectrum(intensities[i], c, mz=mz[i])
    return Path(path)
