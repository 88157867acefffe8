"""Real MALDI-TOF spectra: MALDIquant's ``fiedler2009subset`` as a :class:`SpectraTable`.

16 serum spectra (Bruker Autoflex, linear positive mode, m/z 1000–10000, 42,388 points on one
shared axis): 8 patients × 2 technical replicates, 4 pancreatic cancer ("tumor") and 4 controls,
from two sites, Leipzig and Heidelberg (Fiedler et al. 2009, Clin Cancer Res 15:3812). The site
becomes ``lab`` and the replicate pairs share a ``patient`` id, so the splits and the inter-lab
protocol apply unchanged. **Caveat**: all 16 were acquired on one instrument on one day; the
"lab" difference is a pre-analytical one (sample origin and handling), not an instrument batch.

The file comes from Debian's ``r-cran-maldiquant`` (unpacked, not installed, by
``scripts/fetch_data.sh`` into ``$DATA/maldiquant/fiedler2009subset.RData``) and is read with the
PyPI package ``rdata`` (pinned 1.1.0: the converter below uses its private module to skip the R
promises/environments inside the S4 objects, which the stock converter cannot handle).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from doublebackprop.common.paths import data_home
from doublebackprop.msi.data.dataset import SpectraTable
from doublebackprop.msi.data.preprocess import (
    Bin,
    Crop,
    Pipeline,
    Step,
    TICNormalize,
    inner_edges,
    uniform_edges,
)

__all__ = ["default_fiedler_path", "load_fiedler2009"]


def default_fiedler_path() -> Path:
    """``$DATA/maldiquant/fiedler2009subset.RData``."""
    return data_home() / "maldiquant" / "fiedler2009subset.RData"


def _read_rdata(path: Path) -> dict:
    try:
        import rdata
        from rdata.conversion import _conversion as conv
        from rdata.parser import RObjectType
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise ImportError(
            "load_fiedler2009 needs the 'rdata' package (pip install 'doublebackprop[real-data]')"
        ) from exc

    class _Converter(conv.SimpleConverter):  # type: ignore[misc, name-defined]
        def _convert_next(self, data):  # type: ignore[no-untyped-def]
            obj = data.object if isinstance(data, rdata.parser.RData) else data
            if obj.info.type in (RObjectType.PROM, RObjectType.ENV):
                return None
            return super()._convert_next(data)

    try:
        parsed = rdata.parser.parse_file(path)
        with warnings.catch_warnings():  # S4 class MassSpectrum has no Python constructor: the
            warnings.filterwarnings("ignore", "Missing constructor", UserWarning)  # raw object
            return _Converter().convert(parsed)["fiedler2009subset"]
    except (KeyError, ValueError, NotImplementedError) as exc:
        raise ValueError(f"{path}: cannot read fiedler2009subset ({exc})") from exc


def load_fiedler2009(
    path: str | Path | None = None,
    *,
    mz_range: tuple[float, float] | None = None,
    bin_width: float | None = None,
    preprocessing: Pipeline | tuple[Step, ...] | None = None,
) -> SpectraTable:
    """Load the 16 fiedler2009subset spectra.

    Parameters
    ----------
    path : the ``.RData`` file; default :func:`default_fiedler_path`.
    mz_range, bin_width, preprocessing : as in :func:`~.dataset.load_table` (TIC normalisation
        over the full 1000–10000 range first, then crop, then binning).

    Returns
    -------
    SpectraTable with ``label`` in {"control", "tumor"}, ``lab`` in {"heidelberg", "leipzig"},
    ``patient`` the sample name shared by the two replicates, ``file`` the original file path,
    ``x`` the replicate number (1, 2) and ``y`` zero.

    Examples
    --------
    >>> t = load_fiedler2009()           # doctest: +SKIP
    >>> t.intensities.shape
    (16, 42388)
    """
    path = Path(path) if path is not None else default_fiedler_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: fiedler2009subset.RData not found (run "
            "scripts/fetch_data.sh, which unpacks Debian r-cran-maldiquant)"
        )
    spectra = _read_rdata(path)
    items = list(spectra.values()) if isinstance(spectra, dict) else list(spectra)
    mz0 = np.asarray(items[0].mass, dtype=np.float64)
    rows, meta = [], []
    replicate: dict[str, int] = {}
    for k, s in enumerate(items):
        mz = np.asarray(s.mass, dtype=np.float64)
        if mz.shape != mz0.shape or not np.allclose(mz, mz0):
            raise ValueError(f"{path}: spectrum {k} has a different mass axis")
        f = str(np.asarray(s.metaData["file"]).ravel()[0])
        site = (
            "leipzig"
            if "leipzig" in f.lower()
            else "heidelberg"
            if "heidelberg" in f.lower()
            else ""
        )
        label = "tumor" if "/tumor/" in f else "control" if "/control/" in f else ""
        if not site or not label:
            raise ValueError(f"{path}: spectrum {k}: cannot read site/label from {f!r}")
        patient = str(np.asarray(s.metaData["sampleName"]).ravel()[0])
        replicate[patient] = replicate.get(patient, 0) + 1
        rows.append(np.asarray(s.intensity, dtype=np.float64))
        meta.append((label, patient, site, f, replicate[patient]))
    x = np.stack(rows)
    user = (
        preprocessing.steps if isinstance(preprocessing, Pipeline) else tuple(preprocessing or ())
    )
    steps: list[Step] = [*user, TICNormalize()]
    lo, hi = (float(mz0[0]), float(mz0[-1])) if mz_range is None else mz_range
    if bin_width is None:
        if mz_range is not None:
            steps.append(Crop(float(lo), float(hi)))
    else:  # binned from the full axis: the bins, not a crop, bound the range
        fit = inner_edges if mz_range is None else uniform_edges
        steps.append(Bin(tuple(fit(float(lo), float(hi), bin_width).tolist()), "profile"))
    pipe = Pipeline(tuple(steps))
    mz, x = pipe(mz0, x)
    labels, patients, labs, files, rep = (np.asarray(v) for v in zip(*meta))
    return SpectraTable(
        mz=mz,
        intensities=x.astype(np.float32),
        label=labels.astype(str),
        patient=patients.astype(str),
        lab=labs.astype(str),
        file=files.astype(str),
        x=rep.astype(np.int64),
        y=np.zeros(len(rep), dtype=np.int64),
        core=None,
        pipeline=pipe.to_json(),
    )
