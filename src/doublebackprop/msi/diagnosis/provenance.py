"""What a bundle records about where it came from: the input files (UUID, SHA-1 of the binary
data), their spectrum type, and how the spectra were loaded."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from doublebackprop.common.files import file_digest
from doublebackprop.msi.data.imzml import ImzMLReader

__all__ = ["describe_inputs", "loading_of"]


def describe_inputs(files: Sequence[Path]) -> tuple[list[dict[str, Any]], str]:
    """Per imzML file: path, UUID, SHA-1 of the ``.ibd``, number of spectra; and the spectrum
    type they share ("mixed" when they differ)."""
    out, types = [], set()
    for f in files:
        r = ImzMLReader(f)
        types.add(r.spectrum_type)
        out.append(
            {
                "file": str(f),
                "uuid": r.uuid,
                "ibd_sha1": file_digest(r.ibd_path, "sha1"),
                "spectra": r.n_spectra,
            }
        )
    return out, (types.pop() if len(types) == 1 else "mixed")


def loading_of(table: Any) -> dict[str, Any]:
    """mz range and bin width of a store's table, read back from its pipeline."""
    steps = json.loads(table.pipeline)
    crop = next((s for s in steps if s.get("step") == "Crop"), None)
    binning = next((s for s in steps if s.get("step") == "Bin"), None)
    width = None
    if binning is not None and len(binning["edges"]) > 1:
        width = float(np.median(np.diff(binning["edges"])))
    return {
        "mz_range": None if crop is None else [crop["mz_min"], crop["mz_max"]],
        "bin_width": width,
    }
