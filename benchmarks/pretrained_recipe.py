"""Learning rates of backbone and head for an ImageNet-initialised CAM classifier (issue 13, item 3).

For each (backbone lr, head lr multiplier) it trains `weakseg train classifier --pretrained ...` for --epochs on the
benchmark, then scores CAM seeds of the first --images train images (`weakseg pseudo --method cam`, the default
scales and flip; `weakseg eval seeds`), and prints one row per setting: val F1 (image level, no pixel labels), seed
mIoU at the best background threshold, precision, recall. A ResNet-18 from scratch at the trainer's defaults is the
reference row. Every step is a CLI call whose output folder resumes, so re-running continues where it stopped.

    python benchmarks/pretrained_recipe.py --data data/bench --out runs/recipe --epochs 3 --threads 1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from weakseg.io import atomic_write_json  # noqa: E402

DEFAULT_GRID = ("1e-4:1", "1e-4:10", "3e-4:1", "3e-4:10", "1e-3:10")


def _cli(*args: str) -> str:
    """Run `weakseg ARGS` in this interpreter; its last stdout line (the JSON every command ends with)."""
    proc = subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"weakseg {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc.stdout.strip().splitlines()[-1]


def run_setting(args: argparse.Namespace, name: str, train_args: list[str]) -> dict:
    """Train (or resume) one classifier, make its CAM seeds, evaluate them; one result row."""
    run, maps = args.out / name, args.out / f"{name}.cam"
    t0 = time.perf_counter()
    train = json.loads(_cli("train", "classifier", "--data", str(args.data), "--out", str(run), "--epochs",
                            str(args.epochs), "--device", args.device, "--threads", str(args.threads), "--quiet",
                            *train_args))
    seconds = time.perf_counter() - t0
    _cli("pseudo", "--method", "cam", "--model", str(run), "--data", str(args.data), "--split", "train", "--limit",
         str(args.images), "--out", str(maps), "--device", args.device)
    seeds = json.loads(_cli("eval", "seeds", "--data", str(args.data), "--split", "train", "--maps", str(maps)))
    plain = seeds.get("plain", seeds)
    return {"setting": name, "train_args": train_args, "val_f1": train.get("val_f1"),
            "seed_miou": plain.get("miou"), "threshold": plain.get("threshold"), "precision": plain.get("precision"),
            "recall": plain.get("recall"), "train_seconds_this_call": round(seconds, 1), "epochs": args.epochs}


def main(argv: list[str] | None = None) -> int:
    """Run (or resume) every setting of the grid and print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="benchmark VOC2012 folder")
    p.add_argument("--out", type=Path, required=True, help="runs and results (resumable)")
    p.add_argument("--arch", default="efficientnet-lite0", help="pretrained architecture")
    p.add_argument("--pretrained", default=None, help="weights (default: the arch's installed package)")
    p.add_argument("--grid", nargs="+", default=list(DEFAULT_GRID), help="LR:HEAD_MULT settings")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--images", type=int, default=60, help="train images whose CAM seeds are scored")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-reference", action="store_true", help="skip the ResNet-18-from-scratch row")
    p.add_argument("--only", default=None, help="run just this setting name (for parallel processes)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    settings: list[tuple[str, list[str]]] = []
    for item in args.grid:
        lr, mult = item.split(":")
        settings.append((f"{args.arch}_lr{lr}_head{mult}", ["--arch", args.arch, "--pretrained",
                                                             args.pretrained or args.arch, "--lr", lr,
                                                             "--head-lr-mult", mult]))
    if not args.no_reference:
        settings.append(("resnet18_scratch", ["--arch", "resnet18"]))
    for name, train_args in settings:
        if args.only and name != args.only:
            continue
        row = run_setting(args, name, train_args)
        atomic_write_json(args.out / f"{name}.json", row)
        print(json.dumps(row), flush=True)
    # the table covers every setting finished in --out, also by other processes (--grid / --only splits)
    done = sorted((json.loads(f.read_text()) for f in args.out.glob("*.json") if f.name != "recipe.json"),
                  key=lambda r: r["setting"])
    print("| setting | val F1 | seed mIoU (t) | P | R |\n| --- | --- | --- | --- | --- |")
    for r in done:
        print(f"| {r['setting']} | {r['val_f1']:.3f} | {r['seed_miou']:.3f} ({r['threshold']:.2f}) | "
              f"{r['precision']:.3f} | {r['recall']:.3f} |")
    atomic_write_json(args.out / "recipe.json", {"data": str(args.data), "epochs": args.epochs,
                                                 "images": args.images, "rows": done})
    return 0


if __name__ == "__main__":
    sys.exit(main())
