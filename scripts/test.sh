#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine with Python 3.11, then runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
# Browser for the web page's end-to-end test (skipped when absent).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: chromium not installed; browser tests will skip" >&2
fi
# torch first and pinned: this machine has the 2.13.0 CPU build on disk; a bare `torch` pulls CUDA.
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[test,triton]"
python -m pytest -q tests "$@"
