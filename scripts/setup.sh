#!/usr/bin/env bash
# Create .venv and install the locked dependency set plus weakseg itself (editable).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.lock
.venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
echo "weakseg installed in $(pwd)/.venv (activate with: . .venv/bin/activate)"
