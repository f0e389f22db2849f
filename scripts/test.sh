#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine, then run the whole suite.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}

# Headless Chromium for the browser tests (Debian packages; skipped when already there).
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "== installing chromium (Debian packages)" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
  else
    echo "== chromium not found and cannot apt-get it: browser tests will be skipped" >&2
  fi
fi

# The pinned CPU build of torch first, so nothing pulls the CUDA wheels.
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "== installing torch 2.13.0 (CPU build)" >&2
  "$PY" -m pip install -q torch==2.13.0
fi

# A C compiler builds the compiled Kineto scanner (optional for users; the tests of that
# path skip without it, so install one where we can).
if ! command -v cc >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "== installing gcc (Debian package) for the compiled scanner" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc >/dev/null
  fi
fi

echo "== installing the package with its test extras" >&2
"$PY" -m pip install -q -e ".[test,app,hta,torch]"
if ! "$PY" -c "from analyzer.readers import kineto_scan as k; raise SystemExit(not k.available())"; then
  echo "== note: the compiled Kineto scanner was not built (no C compiler or Python headers);" \
       "its tests will be skipped" >&2
fi

echo "== running the test suite" >&2
exec "$PY" -m pytest "$@"
