"""Cost per object of BBAM, all the boxes of an image batched against one box at a time (the authors' loop).

Set: the first --images train images of the synthetic benchmark (weakseg.data.synth, --size px, 4 classes, seed 0,
rendered in memory), their XML-style boxes (1-based inclusive, converted to 0-based pixel edges) and classes.
Detector: torchvision's Faster R-CNN MobileNetV3-Large-FPN (`fasterrcnn_mobilenet_v3_large_fpn`, weights=None,
weights_backbone=None, min/max size = --size), randomly initialised (seed 0), its BatchNorm statistics measured on
the set, and only its box predictor (cls_score, bbox_pred) fitted briefly to the set's boxes
(tests/bbam_helpers.fit_box_heads: pooled features of jittered proposals), so that positives exist and the heads
depend on the image. Cost does not depend on the weights beyond the number of positives, which both arms share.

Both arms use the same BBAM config and seeds: the defaults but --iterations (the cost is linear in them) and the
positives' IoU cascade, --iou-cascade 0.5 by default: at 0.9/0.85/0.8 this detector has positives for few objects,
while a trained detector usually reaches the cap of 100 per object, which is what the cost depends on. The order of
the arms alternates per image, after one untimed warm-up image. Printed: a Markdown table (seconds, objects, seconds
per object, speed-up), the largest absolute difference between the two arms' maps and the share of pixels differing
by more than 0.01, and the largest gap of the first loss (both arms evaluate it at the same initial mask, so it is
the forward's floating-point rounding between a batch of B images and of one); JSON to --out.

    python benchmarks/bbam_cost.py --threads 1 --images 4 --iterations 20 --out benchmarks/results/bbam_cost.json
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tests.bbam_helpers import fit_box_heads  # noqa: E402
from weakseg.attribution.bbam import BBAM  # noqa: E402
from weakseg.data.synth import SynthConfig, render_sample_detailed  # noqa: E402
from weakseg.device import resolve_device  # noqa: E402
from weakseg.io import atomic_write_json  # noqa: E402

CLASSES = 4


def synthetic_set(count: int, size: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(image [3,H,W] in [0,1], boxes [B,4] 0-based edges, labels [B]) of the first `count` train images."""
    config = SynthConfig(seed=0, classes=CLASSES, size=size)
    out = []
    for i in range(count):
        s = render_sample_detailed(config, np.random.default_rng([config.seed, 0, i]))
        image = torch.from_numpy(s.image).permute(2, 0, 1).float() / 255
        boxes = torch.tensor([[o["bbox"][0] - 1, o["bbox"][1] - 1, o["bbox"][2], o["bbox"][3]] for o in s.objects])
        labels = torch.tensor([o["label"] for o in s.objects])
        out.append((image, boxes.float(), labels))
    return out


def build_detector(data: list, size: int) -> torch.nn.Module:
    """The random MobileNetV3-FPN Faster R-CNN with a briefly fitted box predictor (module docstring)."""
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn

    torch.manual_seed(0)
    det = fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=CLASSES + 1, min_size=size, max_size=size
    )
    # BatchNorm statistics of the random backbone measured on the set (cumulative averages): with the default
    # (0, 1) the random network's activations vanish (~1e-8 at the FPN) and the fitted heads need weights ~1e7,
    # which turn float rounding into logit changes of order 1.
    for m in det.backbone.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    det.train()
    with torch.no_grad():
        images, _ = det.transform([d[0] for d in data])
        det.backbone(images.tensors)
    det.eval()
    return fit_box_heads(det, [d[0] for d in data], [d[1] for d in data], [d[2] for d in data], steps=200)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=6)
    p.add_argument("--size", type=int, default=128, help="synthetic image size and the detector's input size")
    p.add_argument("--iterations", type=int, default=20, help="Adam steps (300 in the dissertation)")
    p.add_argument("--proposals", type=int, default=1000)
    p.add_argument(
        "--iou-cascade",
        default="0.5",
        help="positives' IoU thresholds (comma-separated); 0.5 so that the untrained detector gets up to 100 "
        "positives per object, as a trained one does at 0.9,0.85,0.8",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks/results/bbam_cost.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    data = synthetic_set(args.images + 1, args.size)
    detector = build_detector(data, args.size).to(device)
    cascade = tuple(float(v) for v in args.iou_cascade.split(","))
    batched = BBAM(iterations=args.iterations, proposals=args.proposals, iou_cascade=cascade)
    single = BBAM(iterations=args.iterations, proposals=args.proposals, iou_cascade=cascade, batch_objects=False)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    warm_image, warm_boxes, warm_labels = data[0]
    batched.box_maps(detector, warm_image.to(device), warm_boxes, warm_labels)
    rows, seconds = [], {"batched": 0.0, "one_at_a_time": 0.0}
    max_diff = 0.0
    for i, (image, boxes, labels) in enumerate(data[1:], 1):
        image = image.to(device)
        results, times = {}, {}
        order = [("batched", batched), ("one_at_a_time", single)]
        for name, method in order if i % 2 else order[::-1]:
            sync()
            start = time.perf_counter()
            result = method.run(detector, image, boxes, labels, seed=i)
            sync()
            dt = time.perf_counter() - start
            results[name], times[name] = result, dt
            seconds[name] += dt
        gap = (results["batched"].maps - results["one_at_a_time"].maps).abs()
        diff = float(gap.max())
        max_diff = max(max_diff, diff)
        # the first loss is computed at the same M0 by both arms: its gap is the forward's rounding alone
        first = [
            abs(a[0] - b[0])
            for a, b in zip(results["batched"].losses, results["one_at_a_time"].losses, strict=True)
            if a and b
        ]
        rows.append(
            {
                "image": i,
                "objects": len(boxes),
                "positives": results["batched"].positives,
                "seconds": {k: round(v, 4) for k, v in times.items()},
                "max_abs_diff": diff,
                "fraction_over_0.01": float((gap > 0.01).float().mean()),
                "first_loss_max_abs_diff": max(first, default=0.0),
            }
        )
    objects = sum(r["objects"] for r in rows)
    per_object = {k: v / objects for k, v in seconds.items()}
    speedup = per_object["one_at_a_time"] / per_object["batched"]
    table = [
        "| path | seconds | objects | s / object | speed-up |",
        "| --- | --- | --- | --- | --- |",
        f"| one object at a time | {seconds['one_at_a_time']:.2f} | {objects} | {per_object['one_at_a_time']:.3f} | 1.00 |",
        f"| all objects of an image batched | {seconds['batched']:.2f} | {objects} | {per_object['batched']:.3f} | "
        f"{speedup:.2f} |",
    ]
    print("\n".join(table))
    over = float(np.mean([r["fraction_over_0.01"] for r in rows]))
    first_gap = max(r["first_loss_max_abs_diff"] for r in rows)
    print(
        f"max |batched - one at a time| over all maps: {max_diff:.3g}; pixels differing by > 0.01: {over:.2%}; "
        f"largest gap of the first loss (same M0, the forward's rounding): {first_gap:.3g}"
    )
    print(f"objects per image: {[r['objects'] for r in rows]}; positives: {[r['positives'] for r in rows]}")
    atomic_write_json(
        args.out,
        {
            "command": "python benchmarks/bbam_cost.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "config": batched.config(),
            "images": args.images,
            "size": args.size,
            "threads": args.threads,
            "device": str(device),
            "detector": "fasterrcnn_mobilenet_v3_large_fpn, random init (seed 0), BatchNorm statistics of the set, "
            "box predictor fitted 200 steps",
            "seconds": seconds,
            "objects": objects,
            "seconds_per_object": per_object,
            "speedup": speedup,
            "max_abs_diff": max_diff,
            "mean_fraction_over_0.01": over,
            "first_loss_max_abs_diff": first_gap,
            "per_image": rows,
            "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor()},
        },
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
