"""Argument types shared by the command-line modules."""

from __future__ import annotations

import argparse
import math

__all__ = ["float_list"]


def float_list(text: str, *, minimum: float | None = None) -> tuple[float, ...]:
    """Parse ``"1e-3, 1e-2"`` (commas and/or spaces) into finite floats ``>= minimum``."""
    try:
        vals = tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected numbers, got {text!r}") from exc
    if not vals or not all(math.isfinite(v) for v in vals):
        raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}")
    if minimum is not None and any(v < minimum for v in vals):
        raise argparse.ArgumentTypeError(f"expected numbers >= {minimum:g}, got {text!r}")
    return vals
