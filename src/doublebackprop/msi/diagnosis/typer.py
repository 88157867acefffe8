"""A trained tumour typer: :func:`load_model` and :meth:`TumourTyper.predict`.

``predict`` takes spectra on their native axis (with that axis), an open imzML reader, or an
imzML path, runs the bundle's own preprocessing (the same loading code that built the training
table: TIC over the full range, crop, binning), and returns calibrated class probabilities and
the relevance ``r = x ⊙ ∇_x z_ŷ`` of the predicted class, the quantity DRR trained to be sparse.
"""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from doublebackprop.attribution import gradient_x_input
from doublebackprop.msi.data.dataset import iter_table_blocks, plan_loading
from doublebackprop.msi.data.imzml import ImzMLReader
from doublebackprop.msi.data.preprocess import Bin, Crop
from doublebackprop.msi.diagnosis.bundle import Bundle, load_bundle
from doublebackprop.msi.diagnosis.calibration import softmax

__all__ = ["Prediction", "SlideBlock", "TumourTyper", "load_model"]


@dataclass(frozen=True)
class Prediction:
    """Predicted classes, calibrated probabilities and relevance of ``N`` spectra.

    Shapes
    ------
    ``classes`` ``(N,)`` str; ``probabilities`` ``(N, K)`` (rows sum to 1, columns in
    :attr:`TumourTyper.classes` order); ``relevance`` ``(N, L)`` on :attr:`TumourTyper.mz`, or
    None when not asked for; ``features`` ``(N, L)``: the preprocessed spectra the model saw.
    """

    classes: np.ndarray
    probabilities: np.ndarray
    relevance: np.ndarray | None
    features: np.ndarray

    @property
    def confidence(self) -> np.ndarray:
        """``(N,)`` probability of the predicted class."""
        return self.probabilities.max(axis=1)


@dataclass(frozen=True)
class SlideBlock:
    """One block of a slide: spectrum indices, ``(n, 3)`` pixel coordinates and predictions."""

    index: np.ndarray
    coordinates: np.ndarray
    prediction: Prediction


class TumourTyper:
    """A bundle ready to type spectra (see :func:`load_model`)."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.model = bundle.network()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names, in the order of the probability columns."""
        return self.bundle.classes

    @property
    def mz(self) -> np.ndarray:
        """``(L,)`` the model's m/z axis (bin centres)."""
        return self.bundle.mz

    @property
    def temperature(self) -> float:
        """The temperature the logits are divided by before the softmax."""
        return self.bundle.temperature

    def __repr__(self) -> str:
        c = self.bundle.config
        return (
            f"TumourTyper({c.architecture}, classes={list(self.classes)}, "
            f"m/z {self.mz[0]:.1f}–{self.mz[-1]:.1f} in {len(self.mz)} bins, "
            f"T={self.temperature:.3g})"
        )

    # ------------------------------------------------------------------ model-axis spectra
    def predict_features(self, features: np.ndarray, *, relevance: bool = True) -> Prediction:
        """Type spectra that are already preprocessed onto :attr:`mz` (``(N, L)``)."""
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != len(self.mz):
            raise ValueError(
                f"features must have shape (N, {len(self.mz)}) on the model's axis, got {x.shape}"
            )
        if not np.isfinite(x).all():
            raise ValueError("features contain NaN or Inf")
        xt = torch.from_numpy(x)
        with torch.no_grad():
            logits = self.model(xt).double().numpy()
        prob = softmax(logits, self.temperature)
        pred = prob.argmax(axis=1)
        rel = None
        if relevance and len(x):
            rel = gradient_x_input(self.model, xt, torch.from_numpy(pred)).numpy()
        names = np.asarray(self.classes, dtype=str)[pred] if len(pred) else np.zeros(0, str)
        return Prediction(names, prob, rel, x)

    # ------------------------------------------------------------------ native spectra
    def predict(
        self,
        spectra: np.ndarray | ImzMLReader | str | Path,
        mz: np.ndarray | None = None,
        *,
        relevance: bool = True,
        repair: bool = False,
    ) -> Prediction:
        """Type spectra on their native axis.

        Parameters
        ----------
        spectra : ndarray, ImzMLReader or path
            ``(N, M)`` intensities on the axis ``mz`` ``(M,)``, or every spectrum of an imzML
            file (continuous or processed).
        mz : ndarray or None
            The native m/z axis of an array of spectra.
        relevance : bool, default True
            Also return ``x ⊙ ∇_x z_ŷ`` on the model's axis.
        repair : bool, default False
            For imzML input: set NaN/negative intensities to 0 (counted) instead of refusing.

        Returns
        -------
        Prediction
        """
        if isinstance(spectra, (ImzMLReader, str, Path)):
            path = Path(spectra.path) if isinstance(spectra, ImzMLReader) else Path(spectra)
            blocks = list(self.iter_slide(path, relevance=relevance, repair=repair))
            if not blocks:
                return self.predict_features(np.zeros((0, len(self.mz))), relevance=relevance)
            return _concat([b.prediction for b in blocks])
        if mz is None:
            raise ValueError("predict: pass mz, the native m/z axis of the spectra")
        x = np.asarray(spectra, dtype=np.float64)
        axis = np.asarray(mz, dtype=np.float64)
        if x.ndim != 2 or axis.shape != (x.shape[1],):
            raise ValueError(f"spectra must be (N, M) with mz (M,), got {x.shape} and {axis.shape}")
        self._check_covers(float(axis.min()), float(axis.max()), "the spectra")
        if not np.isfinite(x).all():
            raise ValueError("spectra contain NaN or Inf")
        out_mz, feats = self.bundle.pipeline(axis, x)
        self._check_axis(out_mz, "the spectra")
        return self.predict_features(feats.astype(np.float32), relevance=relevance)

    def iter_slide(
        self,
        path: str | Path,
        *,
        relevance: bool = True,
        repair: bool = False,
        block_size: int = 1024,
        progress: Callable[[int], None] | None = None,
    ) -> Iterator[SlideBlock]:
        """Type every spectrum of an imzML slide block by block (memory bounded by the block).

        Refuses before any work, naming the file, when the slide's m/z range does not cover the
        model's axis or its spectrum type differs from the training data's.
        ``progress(n)`` is called with the number of spectra of each finished block.
        """
        path = Path(path)
        lo, hi = self._model_range()
        with tempfile.TemporaryDirectory(prefix="dbp-slide-") as tmp:
            csv_path = Path(tmp) / "slide.csv"
            with open(csv_path, "w", newline="") as fh:  # one region row: every pixel
                w = csv.writer(fh)
                w.writerow(["file", "x_min", "x_max", "y_min", "y_max", "label", "patient", "lab"])
                w.writerow([str(path.resolve()), 0, 2**31 - 1, 0, 2**31 - 1, "?", path.stem, "?"])
            edges = self._edges()
            width = None if edges is None else float(np.median(np.diff(edges)))
            # the loader reads the slide over its own range; the bundle's bins must lie inside it
            # (checked next), and the bundle's steps (its bin edges exactly) replace the loader's
            plan = plan_loading(csv_path, mz_range=None, bin_width=width, repair=repair)
            plan = replace(plan, pipeline=self.bundle.pipeline)
            (reader,) = plan.readers.values()  # the loader's reader: the file is parsed once here
            self.check_slide(reader)
            for rows, out_mz, block in iter_table_blocks(plan, block_size=block_size):
                self._check_axis(out_mz, str(path))
                index = plan.spectrum_index[rows]
                coords = reader.coordinates[index]
                yield SlideBlock(index, coords, self.predict_features(block, relevance=relevance))
                if progress is not None:
                    progress(len(rows))

    # ------------------------------------------------------------------ checks
    def _edges(self) -> np.ndarray | None:
        last = self.bundle.pipeline.steps[-1] if self.bundle.pipeline.steps else None
        return np.asarray(last.edges) if isinstance(last, Bin) else None

    def _model_range(self) -> tuple[float, float]:
        """The m/z range the bundle's preprocessing reads: its bin edges, or its crop."""
        edges = self._edges()
        if edges is not None:
            return float(edges[0]), float(edges[-1])
        crop = next((s for s in self.bundle.pipeline.steps if isinstance(s, Crop)), None)
        if crop is not None:
            return float(crop.mz_min), float(crop.mz_max)
        return float(self.mz[0]), float(self.mz[-1])

    def check_slide(self, reader: ImzMLReader) -> None:
        """Refuse a slide (naming it) whose m/z range does not cover the model's axis, or whose
        spectrum type (profile/centroid) differs from the training data's."""
        self._check_covers(*reader.mz_extent(), str(reader.path))
        trained = self.bundle.provenance.get("spectrum_type", "unknown")
        found = reader.spectrum_type
        if "unknown" not in (trained, found) and trained != "mixed" and found != trained:
            raise ValueError(
                f"{reader.path}: {found} spectra, but the model was trained on {trained} spectra"
            )

    def _check_covers(self, lo: float, hi: float, what: str) -> None:
        need_lo, need_hi = self._model_range()
        tol = 1e-6 * max(abs(need_hi), 1.0)
        if lo > need_lo + tol or hi < need_hi - tol:
            raise ValueError(
                f"{what}: m/z range {lo:.2f}–{hi:.2f} does not cover the model's axis "
                f"{need_lo:.2f}–{need_hi:.2f}"
            )

    def _check_axis(self, out_mz: np.ndarray, what: str) -> None:
        if len(out_mz) != len(self.mz) or not np.allclose(out_mz, self.mz, rtol=0, atol=1e-6):
            raise ValueError(
                f"{what}: preprocessing gave {len(out_mz)} bins, not the model's {len(self.mz)}"
            )


def _concat(parts: list[Prediction]) -> Prediction:
    rel = None if parts[0].relevance is None else np.concatenate([p.relevance for p in parts])  # type: ignore[misc]
    return Prediction(
        np.concatenate([p.classes for p in parts]),
        np.concatenate([p.probabilities for p in parts]),
        rel,
        np.concatenate([p.features for p in parts]),
    )


def load_model(directory: str | Path) -> TumourTyper:
    """Load a model bundle written by ``doublebackprop msi train`` (see :mod:`.bundle`).

    Examples
    --------
    >>> typer = load_model("model/")                            # doctest: +SKIP
    >>> p = typer.predict("slide.imzML")                        # doctest: +SKIP
    >>> p.classes[:3], p.probabilities.shape                    # doctest: +SKIP
    """
    return TumourTyper(load_bundle(directory))
