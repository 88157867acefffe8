"""What the imzML reader and writer share."""

from __future__ import annotations

from typing import Any


def _norm_uuid(value: Any) -> str:
    return str(value).strip().strip("{}").replace("-", "").lower()
