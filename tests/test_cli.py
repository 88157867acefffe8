"""The command line as a whole: every option explains itself, ``--version``, ``python -m``."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

import doublebackprop
from doublebackprop.cli import build_parser, main


def _options(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, (*path, name))
        elif action.dest != "help":
            yield path, action


def test_every_option_has_help_text_and_shows_its_default():
    missing = [
        f"{' '.join(p)} {a.option_strings or a.dest}"
        for p, a in _options(build_parser())
        if not a.help
    ]
    assert not missing, missing
    text = build_parser()._subparsers._actions[-1].choices["engines-demo"].format_help()  # type: ignore[union-attr]
    assert "(default: 3)" in text and "(default: 0)" in text


def test_version_and_python_dash_m(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and doublebackprop.__version__ in capsys.readouterr().out
    run = subprocess.run(
        [sys.executable, "-m", "doublebackprop", "--version"], capture_output=True, text=True
    )
    assert (
        run.returncode == 0 and run.stdout.strip() == f"doublebackprop {doublebackprop.__version__}"
    )


def test_model_name_errors_list_the_valid_names(capsys):
    with pytest.raises(SystemExit) as exit_:  # argparse rejects it before any work
        main(["msi", "interlab", "--annotations", "x.csv", "--out", "o", "--models", "vgg"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "vgg" in err and "isotopenet+drr" in err
