"""Throughput of the pseudo-label job: Ray workers x threads against the in-process loop, per method.

Configurations (on a 2-core machine): Ray 1 worker x 2 threads, 2 workers x 1 thread, 1 worker x 1 thread,
and the in-process loop (`--workers 0`) with 1 and 2 torch threads. Images/s is measured over the compute
phase only (after every worker has loaded its model; Ray start-up is reported apart). Outputs of runs with
equal thread counts are compared (they must be identical); the model is an untrained, seeded classifier
(throughput does not depend on the weights) on a synthetic split.

    python benchmarks/batch_throughput.py --methods cam advcam --set advcam.steps=2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from batch.cluster import LOCAL_RAY_ENV, RayOptions
from batch.compare import compare_outputs
from batch.pseudo_job import PseudoJob, done_ids, run_local
from batch.ray_job import run_ray
from cli.common import parse_bool
from weakseg.attribution import METHODS, MultiScale, build_method

CONFIGS = {"ray 1x2": ("ray", 1, 2), "ray 2x1": ("ray", 2, 1), "ray 1x1": ("ray", 1, 1),
           "local 1t": ("local", 0, 1), "local 2t": ("local", 0, 2)}


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """--set METHOD.FIELD=VALUE (typed by the field's default) into {method: {field: value}}."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, _, value = item.partition("=")
        method, _, name = key.partition(".")
        fields = {f.name: f for f in dataclasses.fields(METHODS[method])}
        default = fields[name].default
        typed = parse_bool(value) if isinstance(default, bool) else type(default)(value)
        out.setdefault(method, {})[name] = typed
    return out


def prepare(cache: Path, images: int, size: int) -> tuple[Path, Path]:
    """A synthetic split and an untrained seeded resnet18 CAM classifier (cached between runs)."""
    from weakseg.data.classes import load_classes
    from weakseg.data.synth import SynthConfig, generate
    from weakseg.models.classifier_io import save_classifier
    from weakseg.models.resnet_cam import CAMClassifier, ClassifierConfig

    data = cache / f"synth_{images}_{size}" / "VOC2012"
    if not (data / "synth.json").exists():
        generate(SynthConfig(seed=0, train=images, val=2, ood=2, classes=4, size=size), data, progress=False)
    model = cache / "untrained_resnet18.safetensors"
    if not model.exists():
        classes = load_classes(data)
        torch.manual_seed(0)
        save_classifier(model, CAMClassifier(ClassifierConfig(num_classes=len(classes))), classes)
    return data, model


def run_config(kind: str, workers: int, threads: int, job: PseudoJob) -> dict[str, Any]:
    """Run one configuration into job.out; the summary's compute-phase figures."""
    if kind == "local":
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            s = run_local(job, torch.device("cpu"), progress=False)
        finally:
            torch.set_num_threads(before)
        startup = None
    else:
        s = run_ray(job, RayOptions(workers=workers, threads_per_worker=threads), "cpu", progress=False)
        startup = s.get("startup_seconds")
    assert s["failed"] == 0 and s["succeeded"] == s["total"], s
    rates = [w["images_per_second"] for w in s["per_worker"].values()]
    return {"images": s["succeeded"], "seconds": s["seconds"] if kind == "local" else s["compute_seconds"],
            "images_per_second": s["images_per_second"], "per_worker_images_per_second": rates, "startup_seconds": startup}


def main() -> None:
    """Run every method x configuration, check determinism, print and write the results."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["cam", "advcam"])
    p.add_argument("--set", nargs="*", default=["advcam.steps=2"], help="METHOD.FIELD=VALUE overrides (reduced T)")
    p.add_argument("--images", type=int, nargs="+", default=[48, 12], help="images per method (one value each, or one for all)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.5])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--cache", type=Path, default=Path("benchmarks/results/cache/batch_throughput"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/batch_throughput.json"))
    args = p.parse_args()

    import ray

    overrides = parse_overrides(args.set)
    counts = dict(zip(args.methods, args.images if len(args.images) == len(args.methods) else args.images[:1] * len(args.methods)))
    for key, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(key, value)
    ray.init(num_cpus=2, object_store_memory=512 * 2**20, include_dashboard=False, log_to_driver=False)
    results: dict[str, Any] = {"machine": f"{platform.node()} {os.cpu_count()} CPUs (shared)", "torch": torch.__version__,
                               "size": args.size, "scales": args.scales, "load_average_before": os.getloadavg(), "methods": {}}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for method_name in args.methods:
                data, model = prepare(args.cache, max(counts.values()), args.size)
                method = build_method(method_name, **overrides.get(method_name, {}))
                rows, outs = {}, {}
                for name in args.configs:
                    kind, workers, threads = CONFIGS[name]
                    out = Path(tmp) / method_name / name.replace(" ", "_")
                    job = PseudoJob(method=method, model=model, data=data, split="train", out=out,
                                    multiscale=MultiScale(scales=tuple(args.scales), flip=True), limit=counts[method_name])
                    t0 = time.time()
                    rows[name] = run_config(kind, workers, threads, job)
                    rows[name]["wall_seconds"] = round(time.time() - t0, 1)
                    outs[name] = out
                    print(f"{method_name} {name}: {rows[name]}", flush=True)
                ids = sorted(done_ids(outs[args.configs[0]]))
                same_threads = [("ray 2x1", "ray 1x1"), ("ray 1x1", "local 1t"), ("ray 1x2", "local 2t")]
                checks = {f"{a} == {b}": compare_outputs(outs[a], outs[b], ids, atol=0.0) == []
                          for a, b in same_threads if a in outs and b in outs}
                rate = {k: v["images_per_second"] for k, v in rows.items()}
                ratios = {}
                for a, b in (("ray 2x1", "ray 1x1"), ("ray 2x1", "ray 1x2"), ("ray 1x2", "ray 1x1"), ("ray 1x1", "local 1t"),
                             ("ray 1x2", "local 2t")):
                    if rate.get(a) and rate.get(b):
                        ratios[f"{a} / {b}"] = round(rate[a] / rate[b], 3)
                results["methods"][method_name] = {"config": method.config(), "images": counts[method_name], "runs": rows,
                                                   "ratios": ratios, "identical_outputs": checks}
    finally:
        ray.shutdown()
    results["load_average_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for method_name, r in results["methods"].items():
        print(f"\n{method_name} ({r['images']} images, {args.size}px, scales {args.scales} + flip)")
        print("| config | images/s | per-worker images/s | startup s |")
        print("|---|---|---|---|")
        for name, row in r["runs"].items():
            print(f"| {name} | {row['images_per_second']} | {row['per_worker_images_per_second']} | {row['startup_seconds']} |")
        print("ratios:", r["ratios"], "identical outputs:", r["identical_outputs"])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
