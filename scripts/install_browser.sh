#!/usr/bin/env bash
# Headless Chromium (Debian's package) for the slow test that opens the HTML reports as pages.
# Installed only for `make test-slow`; the default test run does not need it.
set -uo pipefail
if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
    exit 0
fi
if command -v apt-get >/dev/null; then
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || \
        echo "install_browser: chromium could not be installed; the browser test will skip" >&2
else
    echo "install_browser: no apt-get; the browser test will skip" >&2
fi
exit 0
