#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup_triton.sh  # .venv-triton: real CPU tritonserver for the triton-backend tests (no-op when set up)
exec .venv/bin/python -m pytest -q -rs -p no:cacheprovider "$@"  # -rs: every skip listed with its reason
