"""Leaf utilities every layer may use: data paths, checkpoints and training plumbing, plotting,
command-line argument types. Nothing here imports the rest of the package."""

from doublebackprop.common.files import atomic_directory, file_digest
from doublebackprop.common.paths import data_home
from doublebackprop.common.training import (
    config_fingerprint,
    distributed_context,
    eval_mode,
    load_checkpoint,
    rank_and_world,
    save_checkpoint,
    seeded,
)

__all__ = [
    "atomic_directory",
    "config_fingerprint",
    "data_home",
    "file_digest",
    "distributed_context",
    "eval_mode",
    "load_checkpoint",
    "rank_and_world",
    "save_checkpoint",
    "seeded",
]
