"""Command-line entry point ``doublebackprop``.

Each area of the library contributes its sub-commands through a ``register(subparsers)``
function in its own ``cli`` module; this file only assembles them, so the areas stay
independent and the heavy imports happen only for the command that runs. ``demo`` is the main
job, the MSI inter-lab experiment, under a short name.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

# Modules that register their commands on the given sub-parser set.
_TOP_LEVEL = ("doublebackprop.tools.cli", "doublebackprop.vision.cli")
_DEMO = "doublebackprop.msi.demo"
_MSI = (
    "doublebackprop.msi.cli",
    "doublebackprop.msi.experiment.cli",
    "doublebackprop.msi.diagnosis.cli",
)


def _register_all(subparsers: argparse._SubParsersAction, modules: Sequence[str]) -> None:
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # an area not installed in this build
            if exc.name is not None and name.startswith(exc.name):
                continue
            raise
        module.register(subparsers)


class _Parser(argparse.ArgumentParser):
    """Sub-command parsers show every option's default in their help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default; ``None`` and switches are left unsaid."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if default is None or default is False or default is argparse.SUPPRESS:
            return text
        if "default" in text.lower():  # the text says it already
            return text
        if isinstance(default, (tuple, list)):
            return f"{text} (default: {' '.join(str(v) for v in default)})"
        return super()._get_help_string(action) or text


def build_parser() -> argparse.ArgumentParser:
    """The ``doublebackprop`` argument parser with every area's sub-commands."""
    from doublebackprop import __version__

    parser = argparse.ArgumentParser(
        prog="doublebackprop",
        description="Double backpropagation: fast input-gradient penalties, saliency and "
        "robustness tools, and MALDI imaging tumour typing.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    demo = importlib.import_module(_DEMO)
    p = sub.add_parser(
        "demo",
        help="the main job: the inter-lab tumour-typing experiment on a simulated cohort",
        description="Simulate a two-lab MALDI imaging cohort (or load --annotations or "
        "--fiedler), run the inter-lab experiment (IsotopeNet ± DRR, linear; ResNet-1D with "
        "--full), then train a calibrated typer on the first lab and type the second lab's "
        "slides.",
    )
    demo.add_demo_arguments(p)
    p.set_defaults(func=demo.run_demo)
    _register_all(sub, _TOP_LEVEL)
    msi = sub.add_parser("msi", help="mass-spectrometry imaging: data, simulator, experiments")
    msi_sub = msi.add_subparsers(dest="msi_command", metavar="MSI_COMMAND", parser_class=_Parser)
    msi_sub.required = True
    _register_all(msi_sub, _MSI)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit code.

    Library errors (which name the argument or file) are printed without a traceback, exit code 2.
    """
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
