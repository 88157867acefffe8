"""Compressed binary arrays in imzML: which compression, and the encoded byte lengths."""

from __future__ import annotations

from pathlib import Path

import numpy as np

_COMPRESSIONS = {
    "no compression": "none",
    "zlib compression": "zlib",
}


def compression(path: Path, parser: object) -> str:
    """The compression of the binary arrays, from the referenceable parameter groups."""
    groups = parser.metadata.referenceable_param_groups  # type: ignore[attr-defined]
    found = set()
    for gid in (parser.mzGroupId, parser.intGroupId):  # type: ignore[attr-defined]
        names = groups[gid].param_by_name if gid in groups else {}
        found |= {
            n for n in names if "compression" in str(n).lower() or "numpress" in str(n).lower()
        }
    unknown = sorted(n for n in found if n not in _COMPRESSIONS)
    if unknown:
        raise ValueError(
            f"{path}: binary arrays use {', '.join(repr(n) for n in unknown)}, which this "
            "reader does not support (supported: no compression, zlib compression)"
        )
    kinds = {_COMPRESSIONS[n] for n in found}
    return "zlib" if "zlib" in kinds else "none"


def encoded_lengths(path: Path, n: int, mz_group: str) -> tuple[np.ndarray, np.ndarray]:
    """The byte lengths of the compressed m/z and intensity arrays (``external encoded
    length``, one per binary data array, in file order: m/z then intensity)."""
    import xml.etree.ElementTree as ET

    mz_enc: list[int] = []
    int_enc: list[int] = []
    for _, elem in ET.iterparse(path, events=("end",)):
        if elem.tag.endswith("}spectrum") or elem.tag == "spectrum":
            lens: dict[str, int] = {}
            for arr in elem.iter():
                if not arr.tag.endswith("binaryDataArray"):
                    continue
                ref = next((r.get("ref") for r in arr if r.tag.endswith("ParamGroupRef")), "")
                names = {p.get("name") for p in arr.iter() if p.tag.endswith("cvParam")}
                is_mz = ref == mz_group or "m/z array" in names
                enc = next(
                    (p.get("value") for p in arr.iter() if p.get("accession") == "IMS:1000104"),
                    None,
                )
                key = "mz" if is_mz else "int"
                if enc is None:
                    raise ValueError(f"{path}: compressed array without 'external encoded length'")
                lens[key] = int(enc)
            mz_enc.append(lens.get("mz", 0))
            int_enc.append(lens.get("int", 0))
            elem.clear()
    if len(mz_enc) != n:
        raise ValueError(f"{path}: found {len(mz_enc)} spectra with encoded lengths, expected {n}")
    return np.asarray(mz_enc, dtype=np.int64), np.asarray(int_enc, dtype=np.int64)
