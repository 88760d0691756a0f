"""Regenerate the Python stubs of protos/weakseg/v1/*.proto into serving/api/ (run from anywhere).

    python scripts/gen_protos.py [--out DIR]

protoc names modules after the proto path (weakseg/v1/...), which would clash with the core `weakseg`
package, so the stubs are written flat into serving/api/ and their one cross-import is rewritten to
`serving.api`. tests/test_serving_protos.py regenerates into a temporary folder and compares.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE_DIR = Path("weakseg") / "v1"
TARGET_PACKAGE = "serving.api"


def generate(out: Path) -> list[Path]:
    """Write <name>_pb2.py, <name>_pb2.pyi and <name>_pb2_grpc.py for every proto into out; return the files."""
    from grpc_tools import protoc

    protos = sorted((PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files under {PROTO_ROOT / PACKAGE_DIR}")
    include = Path(protoc.__file__).parent / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        args = ["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={tmp}", f"--pyi_out={tmp}",
                f"--grpc_python_out={tmp}", *(str(p.relative_to(PROTO_ROOT)) for p in protos)]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        for path in sorted((Path(tmp) / PACKAGE_DIR).iterdir()):
            text = path.read_text()
            text = re.sub(r"^from weakseg\.v1 import ", f"from {TARGET_PACKAGE} import ", text, flags=re.M)
            target = out / path.name
            target.write_text(text)
            written.append(target)
    return written


def main() -> int:
    """Command-line entry."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "serving" / "api", help="output folder")
    args = parser.parse_args()
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
