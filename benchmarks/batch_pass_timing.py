"""Per-pass accelerator time of the CAM classifier, the input of the batch cost model (batch_cost_model.py).

A pass is what AdvCAM runs per step and scale: one forward of the batch of trajectories (classes x flips
rows) with a backward to the input ("fb"), or the plain forward ("f") that closes a trajectory (and is all
CAM needs). Times are taken for the shapes a VOC (375x500) and a COCO (480x640) image produce at the
inference scales, for 2..2*K_max rows. It also times AdvCAM end to end on one image per K through
`compute_maps` (the cross-check of the model). Needs only torch/torchvision and weakseg (no Ray).

    python benchmarks/batch_pass_timing.py --device cuda --out benchmarks/results/batch_pass_timing.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from weakseg.models.resnet_cam import CAMClassifier, ClassifierConfig

SIZES = {"voc": (375, 500), "coco": (480, 640)}
SCALES = (0.5, 1.0, 1.5, 2.0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device: torch.device, warmup: int, iters: int) -> float:
    """Median seconds of fn() over iters runs after warmup runs."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def pass_times(model: CAMClassifier, device: torch.device, size: tuple[int, int], scale: float, rows: int,
               warmup: int, iters: int) -> dict[str, float]:
    """Seconds of one forward ("f") and one forward + backward-to-input ("fb") of `rows` images at size*scale."""
    h, w = max(1, round(size[0] * scale)), max(1, round(size[1] * scale))
    x = torch.rand(rows, 3, h, w, device=device)

    def forward() -> None:
        with torch.no_grad():
            model.logits_and_cams(x)

    def forward_backward() -> None:
        z = x.detach().requires_grad_(True)
        logits, cams = model.logits_and_cams(z)
        torch.autograd.grad(logits.sum() + cams.relu().mean(), z)

    return {"f": time_call(forward, device, warmup, iters), "fb": time_call(forward_backward, device, warmup, iters)}


def advcam_image_seconds(model: CAMClassifier, device: torch.device, size: tuple[int, int], k: int, steps: int,
                         repeats: int) -> float:
    """Median seconds of AdvCAM (steps, 4 scales + flip) on one image with k classes, through compute_maps."""
    from weakseg.attribution import MultiScale, build_method, compute_maps

    method = build_method("advcam", steps=steps)
    image = torch.rand(3, *size, device=device)
    return time_call(lambda: compute_maps(method, model, image, list(range(k)), MultiScale(scales=SCALES, flip=True),
                                          image_key="bench"), device, warmup=1, iters=repeats)


def main() -> None:
    """Time passes and end-to-end AdvCAM; write JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--arch", default="resnet50", help="IRN's backbone (the dissertation's AdvCAM setting)")
    p.add_argument("--output-stride", type=int, default=16, help="IRN: strides (2,2,2,1), i.e. 16")
    p.add_argument("--num-classes", type=int, default=20)
    p.add_argument("--max-k", type=int, default=6, help="classes per image to cover (VOC train_aug has up to 6)")
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--steps", type=int, default=27, help="AdvCAM T for the end-to-end check")
    p.add_argument("--e2e-k", type=int, nargs="*", default=[1, 2, 3, 4], help="K values timed end to end")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/batch_pass_timing.json"))
    args = p.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = CAMClassifier(ClassifierConfig(num_classes=args.num_classes, arch=args.arch, output_stride=args.output_stride))
    model = model.eval().requires_grad_(False).to(device)
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "arch": args.arch, "output_stride": args.output_stride, "dtype": "float32",
              "cudnn_tf32": bool(torch.backends.cudnn.allow_tf32), "scales": list(SCALES), "passes": {}, "advcam_image": {}}
    for name in args.sizes:
        table = {}
        for scale in SCALES:
            for rows in range(2, 2 * args.max_k + 1, 2):
                t = pass_times(model, device, SIZES[name], scale, rows, args.warmup, args.iters)
                table[f"{scale}x{rows}"] = {k: round(v * 1e3, 4) for k, v in t.items()}
                print(f"{name} scale {scale} rows {rows}: f {t['f'] * 1e3:.2f} ms, fb {t['fb'] * 1e3:.2f} ms", flush=True)
        result["passes"][name] = {"size_hw": list(SIZES[name]), "ms": table}
        e2e = {}
        for k in args.e2e_k:
            e2e[str(k)] = round(advcam_image_seconds(model, device, SIZES[name], k, args.steps, repeats=3), 4)
            print(f"{name} AdvCAM T={args.steps} K={k}: {e2e[str(k)]:.3f} s/image", flush=True)
        result["advcam_image"][name] = {"steps": args.steps, "seconds": e2e}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
