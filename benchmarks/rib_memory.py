"""Peak memory of a RIB pseudo-label job (issue 16 item 2), for one or more source trees of weakseg.

Each tree runs the same job in its own fresh process (`run_local`, 1 torch thread, PYTHONPATH = the tree):
RIB on the first --images train images of a synthetic benchmark, companions drawn from a second rendering of
the same benchmark at --companion-size px (VOC-like decoded sizes, so a cache of decoded companions shows),
an untrained seeded ResNet-18 CAM classifier (memory does not depend on the weights). Reported per tree: peak
RSS of the process (ru_maxrss), RSS after the job, RSS after the job less RSS before it (model and dataset
loaded), the bytes the RIB module still holds after the job (decoded companions, adapted models), wall time,
and whether every map equals the first tree's bit for bit.

    git worktree add /tmp/before HEAD   # the code before the change
    python benchmarks/rib_memory.py --work /tmp/ribmem --tree before=/tmp/before --tree after=. \
        --out benchmarks/results/rib_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def rss_kib(field: str = "VmRSS") -> int:
    """A memory figure of this process from /proc/self/status, in KiB (VmRSS: now, VmHWM: peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def retained_rib_bytes() -> dict[str, int]:
    """Bytes the RIB module keeps after a job: decoded companion images and adapted model copies (any version)."""
    import weakseg.attribution.rib as rib

    images = 0
    for pool in list(getattr(rib, "_POOLS", {}).values()):
        images += sum(int(a.nbytes) for a in getattr(pool, "_images", {}).values())
    models = 0
    entry = getattr(getattr(rib, "_LOCAL", None), "entry", None)
    for m in (getattr(entry, "models", None) or [])[1:]:  # [0] is the caller's model
        models += sum(t.numel() * t.element_size() for t in m.state_dict().values())
    return {"companion_image_bytes": images, "adapted_model_bytes": models}


def child(args: argparse.Namespace) -> None:
    """Run the job in this process and print one JSON line of measurements."""
    import torch

    torch.set_num_threads(1)
    import weakseg
    from batch.pseudo_job import PseudoJob, run_local
    from weakseg.attribution import RIB, MultiScale
    from weakseg.models.classifier_io import load_classifier

    rib = RIB(data=str(args.companions), steps=args.steps, batch=args.batch, crop=args.crop)
    job = PseudoJob(method=rib, model=args.model, data=args.data, split="train", out=args.job_out,
                    multiscale=MultiScale(scales=tuple(args.scales), flip=True), limit=args.images, retries=0)
    load_classifier(args.model)  # warm imports and the weights file, so "before" counts what every run holds
    before = rss_kib()
    t0 = time.time()
    summary = run_local(job, torch.device("cpu"), progress=False)
    seconds = time.time() - t0
    after = rss_kib()
    print(json.dumps({"weakseg": str(Path(weakseg.__file__).resolve().parent), "succeeded": summary["succeeded"],
                      "failed": summary["failed"], "seconds": round(seconds, 1),
                      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "rss_before_job_mib": round(before / 1024, 1), "rss_after_job_mib": round(after / 1024, 1),
                      "rss_growth_mib": round((after - before) / 1024, 1),
                      **{k: v for k, v in retained_rib_bytes().items()}}))


def prepare(work: Path, size: int, companion_size: int, train: int) -> tuple[Path, Path, Path]:
    """The job's benchmark, the companions' benchmark (same seed and classes, larger images) and the model."""
    import torch

    from weakseg.data.classes import load_classes
    from weakseg.data.synth import SynthConfig, generate
    from weakseg.models.classifier_io import save_classifier
    from weakseg.models.resnet_cam import CAMClassifier, ClassifierConfig

    paths = []
    for px in (size, companion_size):
        data = work / f"synth_{train}_{px}" / "VOC2012"
        if not (data / "synth.json").exists():
            generate(SynthConfig(seed=0, train=train, val=2, ood=2, size=px), data, progress=False)
        paths.append(data)
    classes = load_classes(paths[0])
    if load_classes(paths[1]) != classes:
        raise SystemExit("the two renderings have different classes")
    model = work / "untrained_resnet18.safetensors"
    if not model.exists():
        torch.manual_seed(0)
        save_classifier(model, CAMClassifier(ClassifierConfig(num_classes=len(classes))).eval(), classes)
    return paths[0], paths[1], model


def same_maps(a: Path, b: Path) -> bool:
    """Whether two job outputs hold bit-identical maps for the same ids."""
    import numpy as np

    names = sorted(p.name for p in (a / "maps").glob("*.npz"))
    if names != sorted(p.name for p in (b / "maps").glob("*.npz")) or not names:
        return False
    for n in names:
        with np.load(a / "maps" / n) as x, np.load(b / "maps" / n) as y:
            if not (np.array_equal(x["maps"], y["maps"]) and np.array_equal(x["class_ids"], y["class_ids"])):
                return False
    return True


def main() -> None:
    """Drive one child process per tree and write the comparison."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/rib_memory"))
    p.add_argument("--tree", action="append", default=[], metavar="NAME=PATH",
                   help="a weakseg source tree to measure (repeatable; default: this one as 'current')")
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--train", type=int, default=600, help="train images of the benchmark (the companion pool)")
    p.add_argument("--size", type=int, default=64, help="side of the job's images")
    p.add_argument("--companion-size", type=int, default=256, help="side of the companions' images")
    p.add_argument("--steps", type=int, default=5, help="K (the dissertation's 10 halves the run time if lowered)")
    p.add_argument("--batch", type=int, default=4, help="B")
    p.add_argument("--crop", type=int, default=32)
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.5])
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--companions", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--job-out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    data, companions, model = prepare(args.work, args.size, args.companion_size, args.train)
    trees = [t.split("=", 1) for t in args.tree] or [["current", str(REPO)]]
    results: dict[str, Any] = {}
    first_out = None
    for name, tree in trees:
        tree_path = Path(tree).resolve()
        job_out = args.work / f"out_{name}"
        if job_out.exists():
            subprocess.run(["rm", "-rf", str(job_out)], check=True)
        env = {**os.environ, "PYTHONPATH": str(tree_path), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--data", str(data), "--companions", str(companions),
               "--model", str(model), "--job-out", str(job_out), "--images", str(args.images), "--steps", str(args.steps),
               "--batch", str(args.batch), "--crop", str(args.crop), "--scales", *map(str, args.scales)]
        print(f"{name}: {tree_path}", flush=True)
        proc = subprocess.run(cmd, env=env, cwd=tree_path, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{name}: child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        record = json.loads(proc.stdout.strip().splitlines()[-1])
        git = subprocess.run(["git", "-C", str(tree_path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        record["commit"] = git.stdout.strip() or None  # the tree's HEAD (a worktree of the commit measured)
        if Path(record["weakseg"]) != tree_path / "weakseg":
            raise SystemExit(f"{name}: imported weakseg from {record['weakseg']}, not from {tree_path}")
        if first_out is not None:
            record["maps_equal_to_" + trees[0][0]] = same_maps(first_out, job_out)
        first_out = first_out or job_out
        results[name] = record
        print(json.dumps({name: record}), flush=True)
    report = {"command": " ".join(["python", "benchmarks/rib_memory.py", *sys.argv[1:]]),
              "job": {"images": args.images, "image_px": args.size, "companion_px": args.companion_size,
                      "companion_pool": args.train, "rib": {"steps": args.steps, "batch": args.batch, "crop": args.crop},
                      "scales": args.scales, "flip": True, "model": "untrained seeded resnet18, output stride 8",
                      "executor": "run_local, 1 torch thread"},
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "results": results}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
