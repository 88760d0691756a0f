"""Images per second of `weakseg pseudo --method bbam` with 1 and 2 Ray workers on a fixed synthetic subset.

Set: the synthetic benchmark (weakseg.data.synth, seed 0, 4 classes, --size px, --images train images, no val),
written once under --work. Detector: --detector RUN, or one made here: `weakseg train detector` for
--detector-epochs epochs (MobileNetV3-FPN, box head 64 wide, min/max size = --size), then its box predictor fitted
briefly to the set's boxes (tests/box_helpers.fitted_detector; tests/bbam_helpers.fit_box_heads, as benchmarks/bbam_cost.py), so that positives exist
and BBAM optimises (a detector without positives makes all-zero maps and no Adam steps at all).

Each arm runs the real command in a fresh process and a fresh output folder:

    python -m cli.main pseudo --method bbam --detector D --data SET --out OUT --workers W --threads-per-worker T
        --bbam-iterations K --bbam-proposals P --bbam-iou-cascade C --device cpu --quiet

on a local Ray started by the command (RAY_AUTH_MODE=disabled, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0). Reported per
arm, from the job's summary: images/s over the compute time (`images_per_second`: after the workers are up),
images/s end to end (succeeded / `seconds`, Ray's start and the detector loads included), the start-up seconds and
each worker's busy seconds; and whether the two arms wrote identical label PNGs. JSON to --out, a Markdown table
printed.

    python benchmarks/bbam_throughput.py --images 8 --size 128 --iterations 20 --out benchmarks/results/bbam_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from batch.cluster import LOCAL_RAY_ENV  # noqa: E402
from weakseg.io import atomic_write_json  # noqa: E402

CLASSES = 4


def cli(*args: str, threads: int = 1) -> str:
    """Run `python -m cli.main ARGS` in a fresh process from the repository; its stdout (CalledProcessError else)."""
    env = {**os.environ, **LOCAL_RAY_ENV, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", *args], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"weakseg {' '.join(args[:2])} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def make_set(work: Path, images: int, size: int) -> Path:
    """The fixed synthetic subset (written once)."""
    from weakseg.data.synth import SynthConfig, generate

    data = work / f"synth_{images}x{size}" / "VOC2012"
    if not (data / "ImageSets").is_dir():
        generate(SynthConfig(seed=0, train=images, val=0, ood=0, classes=CLASSES, size=size), data, progress=False)
    return data


def make_detector(work: Path, data: Path, size: int, epochs: int) -> Path:
    """A briefly trained detector with its box predictor fitted to the set's boxes (module docstring)."""
    from tests.box_helpers import fitted_detector

    path = work / f"detector_{data.parent.name}_e{epochs}.safetensors"
    if path.is_file():
        return path
    run = work / f"detector_run_{data.parent.name}_e{epochs}"
    size_flags = ["--min-size", str(size), "--max-size", str(size), "--box-head-dim", "64"]
    cli("train", "detector", "--data", str(data), "--out", str(run), "--epochs", str(epochs), "--val-split", "",
        *size_flags, "--device", "cpu", "--quiet")  # fmt: skip
    fitted_detector(run, data, path, steps=150)
    return path


def run_arm(args: argparse.Namespace, data: Path, detector: Path, workers: int) -> tuple[dict, Path]:
    """One `weakseg pseudo --method bbam` run on `workers` Ray workers into a fresh folder; its summary."""
    out = Path(args.work) / f"out_w{workers}_{int(time.time() * 1000)}"
    stdout = cli(
        "pseudo", "--method", "bbam", "--detector", str(detector), "--data", str(data), "--out", str(out),
        "--workers", str(workers), "--threads-per-worker", str(args.threads_per_worker),
        "--bbam-iterations", str(args.iterations), "--bbam-proposals", str(args.proposals),
        "--bbam-iou-cascade", args.iou_cascade, "--device", "cpu", "--quiet",
        threads=args.threads_per_worker,
    )  # fmt: skip
    return json.loads(stdout.strip().splitlines()[-1]), out


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table, write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=8, help="train images of the synthetic subset")
    p.add_argument("--size", type=int, default=128, help="image side (px)")
    p.add_argument("--iterations", type=int, default=20, help="--bbam-iterations (the authors': 300; cost is linear)")
    p.add_argument("--proposals", type=int, default=1000, help="--bbam-proposals")
    p.add_argument("--iou-cascade", default="0.5", help="--bbam-iou-cascade (0.5: positives for this detector)")
    p.add_argument("--threads-per-worker", type=int, default=1)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--detector", default=None, help="a detector run or .safetensors (default: made here)")
    p.add_argument("--detector-epochs", type=int, default=1)
    p.add_argument("--work", default="/tmp/weakseg_bbam_throughput", help="set, detector and outputs")
    p.add_argument("--out", default=None, help="results JSON")
    args = p.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = make_set(work, args.images, args.size)
    detector = Path(args.detector) if args.detector else make_detector(work, data, args.size, args.detector_epochs)
    rows, outs = [], []
    for workers in args.workers:
        summary, out = run_arm(args, data, detector, workers)
        outs.append(out)
        rows.append(
            {
                "workers": workers,
                "images": summary["succeeded"],
                "failed": summary["failed"],
                "images_per_second": summary["images_per_second"],
                "images_per_second_end_to_end": round(summary["succeeded"] / summary["seconds"], 3),
                "startup_seconds": summary.get("startup_seconds"),
                "seconds": summary["seconds"],
                "busy_seconds": {k: v["busy_seconds"] for k, v in summary["per_worker"].items()},
            }
        )
    labels = [{q.name: q.read_bytes() for q in sorted((o / "labels").iterdir())} for o in outs]
    result = {
        "command": "python benchmarks/bbam_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "set": {"images": args.images, "size": args.size, "classes": CLASSES, "seed": 0},
        "bbam": {"iterations": args.iterations, "proposals": args.proposals, "iou_cascade": args.iou_cascade},
        "threads_per_worker": args.threads_per_worker,
        "detector": str(detector),
        "rows": rows,
        "identical_labels": all(lab == labels[0] for lab in labels[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg()},
    }
    print("| workers | images | images/s (compute) | images/s (end to end) | start-up s | total s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['workers']} | {r['images']} | {r['images_per_second']} | {r['images_per_second_end_to_end']} "
            f"| {r['startup_seconds']} | {r['seconds']} |"
        )
    print(f"identical label PNGs across worker counts: {result['identical_labels']}")
    if args.out:
        atomic_write_json(Path(args.out), result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
