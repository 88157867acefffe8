"""Typing whole slides: per-spectrum predictions, class maps, ion images and the numbers behind
the per-slide report.

:func:`type_slide` streams one imzML file through a :class:`~.typer.TumourTyper` block by block
(memory bounded by the block; the preprocessed spectra are kept in a temporary memory-mapped file
for the ion images), writes one CSV row per spectrum, and returns a :class:`SlideResult` that the
plots and the report are drawn from.
"""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from doublebackprop.msi.diagnosis.typer import TumourTyper
from doublebackprop.msi.experiment.interpret import top_mass_fraction

__all__ = ["SlideResult", "TopMz", "csv_header", "type_slide"]

#: spots whose calibrated probability of the predicted class is below this are marked
LOW_CONFIDENCE = 0.7
#: a known biomarker within this many Da of a relevant bin is named beside it
NEAR_BIOMARKER = 1.0


@dataclass(frozen=True)
class TopMz:
    """One of the slide's most relevant m/z bins."""

    mz: float
    relevance: float  # share of the slide's total |r| in this bin
    mean_intensity: dict[str, float]  # per predicted class (preprocessed intensity)
    nearest_biomarker: float | None  # within NEAR_BIOMARKER Da, else None
    image: np.ndarray  # (H, W) ion image of the preprocessed intensity, NaN off tissue


@dataclass(frozen=True)
class SlideResult:
    """What one slide gave.

    Shapes
    ------
    ``coordinates`` ``(N, 3)``; ``predicted`` ``(N,)`` class indices; ``probabilities``
    ``(N, K)``; ``class_map`` ``(H, W)`` class index (−1 off tissue); ``confidence_map`` ``(H, W)``.
    """

    path: Path
    classes: tuple[str, ...]
    coordinates: np.ndarray
    predicted: np.ndarray
    probabilities: np.ndarray
    class_map: np.ndarray
    confidence_map: np.ndarray
    origin: tuple[int, int]  # (x, y) of the map's pixel [0, 0]
    top_mz: tuple[TopMz, ...]
    relevance_per_bin: np.ndarray  # (L,) share of |r| per bin

    @property
    def proportions(self) -> dict[str, float]:
        """Share of the spectra predicted as each class."""
        n = max(len(self.predicted), 1)
        return {c: float((self.predicted == i).sum() / n) for i, c in enumerate(self.classes)}

    @property
    def low_confidence(self) -> float:
        """Share of spectra whose predicted class has probability below :data:`LOW_CONFIDENCE`."""
        if not len(self.probabilities):
            return 0.0
        return float((self.probabilities.max(1) < LOW_CONFIDENCE).mean())


def csv_header(classes: tuple[str, ...]) -> list[str]:
    """Columns of ``predictions.csv``."""
    return [
        "file",
        "x",
        "y",
        "z",
        "predicted",
        *(f"p_{c}" for c in classes),
        "top_mz",
        "relevance_top1pct",
    ]


def type_slide(
    typer: TumourTyper,
    path: str | Path,
    writer: csv.writer,  # type: ignore[valid-type]
    *,
    top_k: int = 6,
    biomarkers: np.ndarray | None = None,
    repair: bool = False,
    block_size: int = 1024,
    progress: Callable[[int], None] | None = None,
    file_label: str | None = None,
    features_dir: Path | None = None,
) -> SlideResult:
    """Type every spectrum of ``path``, writing its rows to ``writer`` (see :func:`csv_header`).

    Parameters
    ----------
    typer : TumourTyper
    path : str or Path
        An imzML file (its ``.ibd`` beside it).
    writer : csv.writer
        Receives one row per spectrum.
    top_k : int, default 6
        Number of most relevant m/z bins to image.
    biomarkers : ndarray or None
        Known biomarker m/z; the top m/z table names the nearest one.
    repair : bool, default False
        Set NaN/negative intensities to 0 instead of refusing the slide.
    block_size : int, default 1024
    progress : callable or None
        ``progress(n_spectra_done_in_block)``.
    file_label : str or None
        The ``file`` column's value (default: the file name).
    features_dir : Path or None
        Also keep the preprocessed spectra as ``<features_dir>/<stem>.npy`` ``(N, L)``.
    """
    path = Path(path)
    label = file_label or path.name
    mz = typer.mz
    coords, preds, probs = [], [], []
    rel_sum = np.zeros(len(mz), dtype=np.float64)
    with tempfile.TemporaryDirectory(prefix="dbp-features-") as tmp:
        parts: list[Path] = []
        for i, block in enumerate(
            typer.iter_slide(
                path, relevance=True, repair=repair, block_size=block_size, progress=progress
            )
        ):
            p = block.prediction
            assert p.relevance is not None
            part = Path(tmp) / f"block{i}.npy"
            np.save(part, p.features)
            parts.append(part)
            absr = np.abs(p.relevance)
            rel_sum += absr.sum(0)
            top = mz[absr.argmax(1)] if len(absr) else np.zeros(0)
            share = top_mass_fraction(p.relevance, 0.01)
            pred_idx = p.probabilities.argmax(1)
            for j in range(len(block.index)):
                x, y, z = (int(v) for v in block.coordinates[j])
                writer.writerow(
                    [
                        label,
                        x,
                        y,
                        z,
                        p.classes[j],
                        *(f"{v:.6f}" for v in p.probabilities[j]),
                        f"{top[j]:.4f}",
                        f"{share[j]:.4f}",
                    ]
                )
            coords.append(block.coordinates)
            preds.append(pred_idx)
            probs.append(p.probabilities)
        coordinates = np.concatenate(coords) if coords else np.zeros((0, 3), np.int64)
        predicted = np.concatenate(preds) if preds else np.zeros(0, np.int64)
        probabilities = np.concatenate(probs) if probs else np.zeros((0, len(typer.classes)))
        share_bin = rel_sum / rel_sum.sum() if rel_sum.sum() > 0 else rel_sum
        order = np.argsort(-share_bin, kind="stable")[: max(0, min(top_k, len(mz)))]
        blocks = [np.load(p, mmap_mode="r") for p in parts]
        columns = (
            np.concatenate([blk[:, order] for blk in blocks])
            if blocks
            else np.zeros((0, len(order)))
        )
        if features_dir is not None:
            features_dir.mkdir(parents=True, exist_ok=True)
            full = np.concatenate(blocks) if blocks else np.zeros((0, len(mz)), np.float32)
            np.save(features_dir / f"{path.stem}.npy", full)
    cmap, conf_map, origin = _maps(coordinates, predicted, probabilities)
    tops = []
    for c, b in enumerate(order):
        vals = columns[:, c]
        means = {
            name: float(vals[predicted == i].mean()) if (predicted == i).any() else float("nan")
            for i, name in enumerate(typer.classes)
        }
        near = None
        if biomarkers is not None and len(biomarkers):
            cand = float(biomarkers[np.argmin(np.abs(np.asarray(biomarkers) - mz[b]))])
            near = cand if abs(cand - mz[b]) <= NEAR_BIOMARKER else None
        tops.append(
            TopMz(
                float(mz[b]),
                float(share_bin[b]),
                means,
                near,
                _image(coordinates, vals, origin, cmap.shape),
            )
        )
    return SlideResult(
        path=path,
        classes=typer.classes,
        coordinates=coordinates,
        predicted=predicted,
        probabilities=probabilities,
        class_map=cmap,
        confidence_map=conf_map,
        origin=origin,
        top_mz=tuple(tops),
        relevance_per_bin=share_bin,
    )


def _maps(
    coordinates: np.ndarray, predicted: np.ndarray, probabilities: np.ndarray
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    if not len(coordinates):
        return np.full((1, 1), -1), np.full((1, 1), np.nan), (0, 0)
    x0, y0 = int(coordinates[:, 0].min()), int(coordinates[:, 1].min())
    w = int(coordinates[:, 0].max()) - x0 + 1
    h = int(coordinates[:, 1].max()) - y0 + 1
    cmap = np.full((h, w), -1, dtype=np.int64)
    conf = np.full((h, w), np.nan)
    rows, cols = coordinates[:, 1] - y0, coordinates[:, 0] - x0
    cmap[rows, cols] = predicted
    conf[rows, cols] = probabilities.max(1)
    return cmap, conf, (x0, y0)


def _image(
    coordinates: np.ndarray, values: np.ndarray, origin: tuple[int, int], shape: tuple[int, ...]
) -> np.ndarray:
    img = np.full(shape, np.nan)
    if len(coordinates):
        img[coordinates[:, 1] - origin[1], coordinates[:, 0] - origin[0]] = values
    return img
