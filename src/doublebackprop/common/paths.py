"""Where data fetched by the project's set-up lives."""

from __future__ import annotations

import os
from pathlib import Path


def data_home() -> Path:
    """Directory of data files fetched by ``scripts/fetch_data.sh``.

    ``$DOUBLEBACKPROP_DATA`` if set, else ``./.data`` when it exists, else
    ``~/.cache/doublebackprop``.
    """
    env = os.environ.get("DOUBLEBACKPROP_DATA")
    if env:
        return Path(env)
    local = Path.cwd() / ".data"
    if local.is_dir():
        return local
    return Path.home() / ".cache" / "doublebackprop"
