#!/usr/bin/env bash
# Create .venv-triton: nvidia-pytriton's real tritonserver (CPU, python backend) for the triton-backend tests.
#
# It is a separate environment because pytriton pins numpy<2 (the main .venv has numpy 2) and the python
# backend's stub embeds the interpreter, which must find onnxruntime and numpy there. Idempotent: a stamp
# holding the lock's checksum makes a second run a no-op. Writes .venv-triton/triton.json, which
# tests/triton_server.py reads: the tritonserver binary, a backend directory whose python backend has the
# stub for this Python version, and the LD_LIBRARY_PATH the binary and stub need.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-triton
LOCK=scripts/triton-requirements.lock
PY=${PYTHON:-python3}
sum=$(sha256sum "$LOCK" | cut -d' ' -f1)
if [ -f "$VENV/.stamp" ] && [ "$(cat "$VENV/.stamp")" = "$sum" ] && [ -f "$VENV/triton.json" ]; then
  exit 0
fi
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -r "$LOCK"
if "$VENV/bin/python" -m pip show onnxruntime-gpu >/dev/null 2>&1; then
  echo "setup_triton: onnxruntime-gpu must not be installed in $VENV (it shadows the CPU build)" >&2
  exit 1
fi
"$VENV/bin/python" - "$VENV" <<'PY'
"""Lay out backends/python with this interpreter's stub and record paths in triton.json."""
import json
import shutil
import sys
import sysconfig
from pathlib import Path

import numpy
import onnxruntime
import pytriton

venv = Path(sys.argv[1]).resolve()
dist = Path(pytriton.__file__).parent / "tritonserver"
version = f"{sys.version_info[0]}.{sys.version_info[1]}"
stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
if not stub.is_file():
    sys.exit(f"setup_triton: pytriton ships no python backend stub for Python {version} ({stub})")
backends = venv / "triton" / "backends"
python_backend = backends / "python"
python_backend.mkdir(parents=True, exist_ok=True)
for item in (dist / "backends" / "python").iterdir():
    if item.is_file():
        shutil.copy2(item, python_backend / item.name)
shutil.copy2(stub, python_backend / "triton_python_backend_stub")
libdir = sysconfig.get_config_var("LIBDIR")
info = {
    "tritonserver": str(dist / "bin" / "tritonserver"),
    "backend_directory": str(backends),
    "cache_directory": str(dist / "caches"),
    "ld_library_path": [libdir, str(dist.parent.parent / "nvidia_pytriton.libs")],
    "python_bin": str(venv / "bin"),
    "python_version": version,
    "numpy": numpy.__version__,
    "onnxruntime": onnxruntime.__version__,
}
(venv / "triton.json").write_text(json.dumps(info, indent=2) + "\n")
PY
echo "$sum" > "$VENV/.stamp"
echo "tritonserver ready in $(pwd)/$VENV ($(cat "$VENV/triton.json" | tr -d '\n ' | cut -c1-120)...)"
