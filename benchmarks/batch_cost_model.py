"""Paper cost model of the pseudo-label job on a GPU cluster: AdvCAM over VOC train_aug and COCO train.

wall = images x (GPU seconds per image + CPU seconds per image) / (GPUs x efficiency) + startup

- Passes per image are MEASURED here: the real AdvCAM (`weakseg.attribution`) runs through `compute_maps` on a
  small CPU model with hooks counting every network pass (rows, input size, whether it is followed by a
  backward to the input) at reduced T; the count is checked against T*chunks + chunks per scale and
  extrapolated to the dissertation's T = 27. The pass structure does not depend on the image size or backbone.
- GPU seconds per pass come from `batch_pass_timing.py` (a JSON measured on an accelerator; the shipped
  one is an H100, ResNet-50 at output stride 16, fp32), for the exact shapes (scale x rows) of each pass.
- Classes per image K: VOC train_aug's histogram is read from IRN's cls_labels.npy (shared data) when
  present; COCO's mean K is stated (3.5 categories per image, Lin et al. 2014) and interpolated.
- CPU seconds per image (decode, thresholds, PNG/npz encode and write; the dense CRF when --crf) are measured
  here on a real VOC image; workers run them serially with the GPU work (no overlap), so they add.
- efficiency (Ray dispatch, stragglers) and startup (workers start, model load) are stated parameters.

    python benchmarks/batch_cost_model.py [--timing benchmarks/results/batch_pass_timing_h100.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from weakseg.attribution import MultiScale, build_method, compute_maps
from weakseg.models.resnet_cam import CAMClassifier, ClassifierConfig

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SCALES = (1.0, 0.5, 1.5, 2.0)  # IRN's inference scales, with flips
DATASETS = {  # images, typical size (h, w); K comes from the histogram or the stated mean
    "VOC train_aug": {"images": 10582, "size": "voc"},
    "COCO train2014": {"images": 82081, "size": "coco"},  # the WSSS list: train2014 images with >= 1 class
}


def count_passes(method_name: str, steps: int, k: int, max_batch: int = 16) -> list[dict]:
    """Every network pass of one image (K classes, 4 scales + flip): rows, input h/w, backward or not."""
    torch.manual_seed(0)
    model = CAMClassifier(ClassifierConfig(num_classes=max(k, 1) + 1, arch="resnet18")).eval().requires_grad_(False)
    passes: list[dict] = []

    def hook(module, inputs):  # the stem sees every full forward
        x = inputs[0]
        passes.append({"rows": int(x.shape[0]), "hw": (int(x.shape[2]), int(x.shape[3])), "backward": bool(x.requires_grad)})

    handle = model.stem.register_forward_pre_hook(hook)
    params = {"steps": steps, "max_batch": max_batch} if method_name == "advcam" else {}
    image = torch.rand(3, 24, 32)
    try:
        compute_maps(build_method(method_name, **params), model, image, list(range(k)), MultiScale(scales=SCALES, flip=True),
                     image_key="count")
    finally:
        handle.remove()
    for p in passes:  # express the size as the inference scale of the pass
        p["scale"] = min(SCALES, key=lambda s: abs(round(24 * s) - p["hw"][0]))
    return passes


def pass_structure(steps: int, k: int, max_batch: int = 16) -> dict[float, dict[str, int]]:
    """AdvCAM per scale at any T, from counts measured at small T: {scale: {fb, f, rows}} (checked, not assumed)."""
    small = [0, 1, 2]
    per_t = {}
    for t in small:
        counted = Counter((p["scale"], p["backward"], p["rows"]) for p in count_passes("advcam", t, k, max_batch))
        per_t[t] = counted
    chunks = math.ceil(2 * k / max_batch)
    rows = min(2 * k, max_batch)
    for t, counted in per_t.items():
        expected = Counter()
        for s in SCALES:
            if t:
                expected[(s, True, rows)] += t * chunks
            expected[(s, False, rows)] += chunks
        if counted != expected:
            raise AssertionError(f"AdvCAM T={t} K={k}: counted passes {dict(counted)} differ from T*chunks+chunks per scale")
    return {s: {"fb": steps * chunks, "f": chunks, "rows": rows} for s in SCALES}


def gpu_seconds(structure: dict[float, dict[str, int]], table: dict[str, dict[str, float]]) -> float:
    """Seconds of GPU time for one image: each pass's measured time at its scale and row count."""
    total_ms = 0.0
    for s, n in structure.items():
        t = table[f"{s}x{n['rows']}"]
        total_ms += n["fb"] * t["fb"] + n["f"] * t["f"]
    return total_ms / 1e3


def voc_class_histogram() -> dict[int, int] | None:
    """{K: images} over VOC train_aug from IRN's cls_labels.npy (None when the shared data is absent)."""
    labels, ids = SHARED / "irn_lists" / "cls_labels.npy", SHARED / "irn_lists" / "train_aug.txt"
    if not labels.is_file() or not ids.is_file():
        return None
    table = np.load(labels, allow_pickle=True).item()
    ks = Counter(int(table[int(line.split()[0].replace("_", ""))].sum()) for line in ids.read_text().splitlines() if line.strip())
    return dict(sorted(ks.items()))


def cpu_seconds_per_image(crf: bool, repeats: int = 3) -> float:
    """Measured: decode a real VOC JPEG, label it from K=2 maps (optionally with the dense CRF), encode and write."""
    import tempfile

    from batch.pseudo_job import write_result
    from weakseg.io import read_rgb
    from weakseg.pseudo import PseudoResult
    from weakseg.refine.crf import CRFConfig
    from weakseg.refine.seed_label import refine_seed_label

    jpgs = sorted((SHARED / "voc_sample" / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))
    if not jpgs:
        raise SystemExit("no VOC sample image to time the CPU work on; pass --cpu-seconds and --crf-seconds")
    times = []
    with tempfile.TemporaryDirectory() as out:
        for r in range(repeats):
            t0 = time.perf_counter()
            image = read_rgb(jpgs[r % len(jpgs)])
            h, w = image.shape[:2]
            yy, xx = np.mgrid[0:h, 0:w]
            maps = np.stack([np.exp(-((yy - h / 2) ** 2 + (xx - w / 3) ** 2) / (h * w / 8)),
                             np.exp(-((yy - h / 3) ** 2 + (xx - 2 * w / 3) ** 2) / (h * w / 10))]).astype(np.float32)
            ids = np.array([1, 2], dtype=np.int16)
            label = refine_seed_label(image, maps, ids, 0.30, 0.05, CRFConfig() if crf else None)
            write_result(Path(out), f"img{r}", PseudoResult(maps=maps.astype(np.float16), class_ids=ids, label=label))
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def image_seconds_for_k(k: float, per_k: dict[int, float]) -> float:
    """Per-image GPU seconds at a (possibly fractional) K, linear between the integer K measured."""
    lo, hi = math.floor(k), math.ceil(k)
    if lo == hi:
        return per_k[lo]
    return per_k[lo] + (k - lo) * (per_k[hi] - per_k[lo])


def main() -> None:
    """Measure passes and CPU work, read GPU pass times, print and write the wall-time table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--timing", type=Path, default=Path("benchmarks/results/batch_pass_timing_h100.json"))
    p.add_argument("--steps", type=int, default=27, help="AdvCAM T (dissertation 3.3: 27)")
    p.add_argument("--gpus", type=int, nargs="+", default=[8, 64])
    p.add_argument("--coco-classes-per-image", type=float, default=3.5, help="stated: Lin et al. 2014 (COCO), Sec. 5")
    p.add_argument("--voc-classes-per-image", type=float, default=None, help="override the measured train_aug histogram")
    p.add_argument("--efficiency", type=float, default=0.95, help="stated: share of GPU time spent in passes (dispatch, stragglers)")
    p.add_argument("--startup-seconds", type=float, default=120.0, help="stated: Ray workers start and load the model")
    p.add_argument("--cpu-seconds", type=float, default=None, help="override the measured per-image CPU work (no CRF)")
    p.add_argument("--crf-seconds", type=float, default=None, help="override the measured per-image CPU work with --crf")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/batch_cost_model.json"))
    args = p.parse_args()

    timing = json.loads(args.timing.read_text())
    max_k = max(int(key.split("x")[1]) for key in next(iter(timing["passes"].values()))["ms"]) // 2
    structures = {k: pass_structure(args.steps, k) for k in range(1, max_k + 1)}
    cam_passes = Counter((q["scale"], q["backward"], q["rows"]) for q in count_passes("cam", 0, 2))
    cpu = args.cpu_seconds if args.cpu_seconds is not None else cpu_seconds_per_image(crf=False)
    crf = args.crf_seconds if args.crf_seconds is not None else cpu_seconds_per_image(crf=True)
    hist = voc_class_histogram()
    rows, per_dataset = [], {}
    for name, spec in DATASETS.items():
        table = timing["passes"][spec["size"]]["ms"]
        per_k = {k: gpu_seconds(structures[k], table) for k in structures}
        if name.startswith("VOC") and args.voc_classes_per_image is None and hist:
            counts = {k: n for k, n in hist.items() if k > 0}
            mean_k = sum(k * n for k, n in counts.items()) / sum(counts.values())
            gpu_img = sum(per_k[min(k, max_k)] * n for k, n in counts.items()) / sum(counts.values())
            k_source = f"measured histogram {counts}"
        else:
            mean_k = args.voc_classes_per_image if name.startswith("VOC") else args.coco_classes_per_image
            gpu_img = image_seconds_for_k(min(mean_k, max_k), per_k)
            k_source = "stated mean"
        measured_e2e = timing.get("advcam_image", {}).get(spec["size"], {}).get("seconds", {})
        per_dataset[name] = {"images": spec["images"], "mean_classes": round(mean_k, 3), "classes_source": k_source,
                             "gpu_seconds_per_image": round(gpu_img, 3),
                             "gpu_seconds_per_image_by_k": {k: round(v, 3) for k, v in per_k.items()},
                             "measured_end_to_end_by_k": measured_e2e}
        for label, cpu_img in (("no CRF", cpu), ("with CRF", crf)):
            for g in args.gpus:
                wall = spec["images"] * (gpu_img + cpu_img) / (g * args.efficiency) + args.startup_seconds
                rows.append({"dataset": name, "labels": label, "gpus": g, "s_per_image": round(gpu_img + cpu_img, 3),
                             "worker_hours": round(spec["images"] * (gpu_img + cpu_img) / 3600, 1),
                             "wall_hours": round(wall / 3600, 2), "wall_minutes": round(wall / 60, 1)})
    result = {"timing_source": str(args.timing), "device": timing["device"], "arch": timing["arch"],
              "output_stride": timing["output_stride"], "steps": args.steps, "efficiency": args.efficiency,
              "startup_seconds": args.startup_seconds, "cpu_seconds_per_image": round(cpu, 3),
              "cpu_seconds_per_image_crf": round(crf, 3),
              "advcam_passes_per_scale": {f"K={k}": {str(s): v for s, v in st.items()} for k, st in structures.items()},
              "cam_passes": {f"{s}x{r}{' +backward' if b else ''}": n for (s, b, r), n in sorted(cam_passes.items())},
              "datasets": per_dataset, "table": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"AdvCAM T={args.steps}, 4 scales + flip, {timing['arch']} OS{timing['output_stride']} on {timing['device']}; "
          f"CPU work/image {cpu:.3f}s (CRF: {crf:.3f}s); efficiency {args.efficiency}; startup {args.startup_seconds:.0f}s")
    for name, d in per_dataset.items():
        print(f"{name}: {d['images']} images, mean K {d['mean_classes']} ({d['classes_source']}), "
              f"GPU {d['gpu_seconds_per_image']} s/image; model by K {d['gpu_seconds_per_image_by_k']}, "
              f"measured end to end {d['measured_end_to_end_by_k']}")
    print("| dataset | labels | GPUs | s/image | GPU-worker hours | wall |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dataset']} | {r['labels']} | {r['gpus']} | {r['s_per_image']} | {r['worker_hours']} | "
              f"{r['wall_hours']} h ({r['wall_minutes']} min) |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
