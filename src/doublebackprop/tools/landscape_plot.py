"""The ``landscape`` figure: a ReLU and a Softplus CNN on digits, penalty along one line."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

from doublebackprop.common.training import seeded
from doublebackprop.engine.penalties import RelevancePenalty
from doublebackprop.tools import zoo
from doublebackprop.tools.engines_demo import _digits
from doublebackprop.tools.landscape import MIN_POINTS, scan_line

BATCH_SIZES = (1, 8, 64, 512)


def landscape_figure(
    out: Path,
    *,
    seed: int = 0,
    points: int = 801,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Writes ``landscape.png`` and ``landscape.json`` to ``out``; returns the jump summary.

    Parameters
    ----------
    out : Path
    seed : int
        Seed of the nets and the direction.
    points : int
        Points on the line, at least :data:`~doublebackprop.tools.landscape.MIN_POINTS`
        (fewer cannot tell a jump from a coarse grid).
    progress : callable or None
        Gets one line per net and batch size.
    """
    if not isinstance(points, int) or points < MIN_POINTS:
        raise ValueError(
            f"--points must be >= {MIN_POINTS} to resolve the jumps (a smooth curve's refinement "
            f"ratio is 0.5 only from about {MIN_POINTS} points on), got {points!r}"
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y, _, _ = _digits(seed)
    t = np.linspace(-0.5, 0.5, points)
    penalty = RelevancePenalty(l1=1.0, l2=1.0)
    summary: dict = {"t_range": [float(t[0]), float(t[-1])], "points": points, "nets": {}}
    summary["reading"] = (
        "max_jump: largest step between neighbouring points relative to the curve's range; "
        "refinement_ratio: ~0.5 for a continuous curve, ~1 where jumps dominate"
    )
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=False)
    for ax, (name, act) in zip(axes, (("ReLU", torch.nn.ReLU), ("Softplus", torch.nn.Softplus))):
        # average pooling: max-pooling would add argmax switches (jumps) to the smooth net too
        with seeded(seed):
            model = zoo.cnn2d(1, 8, 10, widths=(16, 32), act=act, pool=torch.nn.AvgPool2d).eval()
        scans = scan_line(
            model,
            x,
            y,
            penalty,
            batch_sizes=BATCH_SIZES,
            t=t,
            generator=torch.Generator().manual_seed(seed + 1),
            progress=None if progress is None else partial(_prefixed, progress, name),
        )
        summary["nets"][name] = {
            str(s.batch_size): {"max_jump": s.max_jump, "refinement_ratio": s.refinement_ratio}
            for s in scans
        }
        for s in scans:
            v = s.values
            v = (v - v.min()) / max(np.ptp(v), 1e-30)  # each curve on [0, 1] to compare shapes
            ax.plot(
                s.t,
                v,
                lw=1,
                label=f"batch {s.batch_size} (max jump {s.max_jump:.2f}, "
                f"refinement ratio {s.refinement_ratio:.2f})",
            )
        ax.set_title(f"{name} CNN: DRR penalty along θ + t·d")
        ax.set_xlabel("t")
        ax.set_ylabel("penalty (rescaled to [0, 1])")
        ax.legend(fontsize=7, title="ratio ≈0.5 smooth, →1 jumps", title_fontsize=7)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "landscape.png", dpi=130)
    plt.close(fig)
    (out / "landscape.json").write_text(json.dumps(summary, indent=1))
    return summary


def _prefixed(progress: Callable[[str], None], name: str, msg: str) -> None:
    progress(f"{name}: {msg}")
