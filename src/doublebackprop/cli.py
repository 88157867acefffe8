"""Command-line entry point ``doublebackprop``.

Each area of the library contributes its sub-commands through a ``register(subparsers)``
function in its own ``*cli`` module; this file only assembles them, so the areas stay
independent and the heavy imports happen only for the command that runs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# (module, attribute) pairs; a module registers its commands on the given sub-parser set.
_TOP_LEVEL = ("doublebackprop.engine_cli", "doublebackprop.robustness.cli")
_MSI = ("doublebackprop.msi.cli", "doublebackprop.msi.experiment_cli")


def _register_all(subparsers: argparse._SubParsersAction, modules: Sequence[str]) -> None:
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # an area not installed in this build
            if exc.name is not None and name.startswith(exc.name):
                continue
            raise
        module.register(subparsers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="doublebackprop",
        description="Double backpropagation: fast input-gradient penalties, saliency and "
        "robustness tools, and MALDI imaging tumour typing.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _register_all(sub, _TOP_LEVEL)
    msi = sub.add_parser("msi", help="mass-spectrometry imaging: data, simulator, experiments")
    msi_sub = msi.add_subparsers(dest="msi_command", metavar="MSI_COMMAND")
    msi_sub.required = True
    _register_all(msi_sub, _MSI)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, OSError) as exc:
        # Library errors name the argument/file; show them without a traceback.
        print(f"doublebackprop: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
