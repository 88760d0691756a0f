"""Time `weakseg demo` end to end on this machine and print the per-stage figures against the budget.

    python benchmarks/demo_time.py [--out /tmp/demo_time]      # starts from an empty folder
    python benchmarks/demo_time.py --out /tmp/demo_lite0 --arch efficientnet-lite0 --pretrained efficientnet-lite0

Arguments it does not know are passed to `weakseg demo` (e.g. --arch, --pretrained, --epochs).

Prints one JSON line: {"total_s", "budget_total_s", "stages": {name: [seconds, budget]}, "within_budget"}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from cli.demo_pipeline import STAGE_BUDGET_S


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("/tmp/weakseg_demo_time"), help="demo output folder (emptied first)")
    p.add_argument("--threads", type=int, default=None, help="passed to weakseg demo --threads")
    args, demo_args = p.parse_known_args()
    shutil.rmtree(args.out, ignore_errors=True)
    cmd = [sys.executable, "-m", "cli.main", "demo", "--out", str(args.out), "--device", "cpu"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    cmd += demo_args
    t0 = time.time()
    subprocess.run(cmd, check=True)
    wall = time.time() - t0
    summary = json.loads((args.out / "summary.json").read_text())
    stages = {k: [v, STAGE_BUDGET_S.get(k)] for k, v in summary["timings_s"].items()}
    print(json.dumps({"wall_s": round(wall, 1), "total_s": summary["total_s"], "budget_total_s": sum(STAGE_BUDGET_S.values()),
                      "stages": stages, "within_budget": wall <= 600, "demo_args": demo_args, "methods": summary["methods"],
                      "segmenter_val_miou": summary["segmenter_val_miou"]}))


if __name__ == "__main__":
    main()
