"""Cost of the attribution methods (issue 3): seconds and backbone passes per image at the default settings, and
AdvCAM's batched climb against a straightforward yardstick.

The yardstick (kept here only as a yardstick) climbs one class and one flip at a time with parameter gradients
on: per step one forward and one backward that also fills every parameter's .grad. Ours climbs all classes x
flips of a scale in one batch, one forward and one input-only backward per step. Both run on the same images
with the same thread count; the ratio of their seconds is reported. Their maps must agree to 1e-4: that is
checked in float64 on --agree-images images, and the restricting-mask pixels that differ between the two
trajectories are counted (0 expected).

    python benchmarks/attribution_cost.py --data BENCH/VOC2012 --model runs/cam --fickle-model runs/fickle \\
        --out bench/cost --images 5 --agree-images 2 --threads 2

Quick end-to-end check: add --advcam-steps 2 --rib-steps 2 --fickle-samples 8 --images 2 --agree-images 1.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.attribution_common import cost_summary, markdown, model_identity, open_subset, run_cached, short_hash  # noqa: E402
from benchmarks.attribution_curves import GivenMaps  # noqa: E402
from benchmarks.attribution_table import ROWS, build_rows  # noqa: E402
from weakseg.attribution import AdvCAM, MultiScale, compute_maps  # noqa: E402
from weakseg.attribution.advcam import climb_forward, climb_objective, input_normalization  # noqa: E402
from weakseg.data.augment import to_tensor  # noqa: E402
from weakseg.io import atomic_write_json, atomic_write_text  # noqa: E402
from weakseg.models.classifier_io import load_classifier  # noqa: E402


def straightforward_trajectory(model: torch.nn.Module, x: torch.Tensor, c: int, cfg: AdvCAM) -> torch.Tensor:
    """The yardstick: one image x [1,3,h,w], one class, parameter gradients on. ReLU'd CAMs [T+1, h', w']."""
    mean, std = input_normalization(model, x)
    z = (x - mean) / std
    target = torch.tensor([c], device=x.device)
    recorded, ref, ref_max = [], None, None
    for _ in range(cfg.steps):
        z = z.detach().requires_grad_(True)
        logits, cam = climb_forward(model, z, target, cfg, mean, std)
        if ref is None:
            ref = F.relu(cam).detach()
            ref_max = ref.flatten(1).amax(dim=1).clamp_min(1e-5)[:, None, None]
        recorded.append(F.relu(cam).detach()[0])
        model.zero_grad()
        climb_objective(cfg, logits, cam, target, ref, ref_max).sum().backward()  # fills every parameter's .grad too
        z = z.detach() + cfg.xi * z.grad
    with torch.no_grad():
        recorded.append(F.relu(climb_forward(model, z, target, cfg, mean, std)[1])[0])
    return torch.stack(recorded)


def yardstick_raw(model, image: torch.Tensor, classes: list[int], cfg: AdvCAM, multiscale: MultiScale) -> dict:
    """Per scale: trajectories [T+1, 2, K, h, w] of every class and flip, climbed one at a time."""
    out = {}
    H, W = image.shape[-2:]
    for s in multiscale.scales:
        size = (max(1, round(H * s)), max(1, round(W * s)))
        x = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False) if size != (H, W) else image[None]
        views = [x, x.flip(-1)] if multiscale.flip else [x]
        out[s] = torch.stack([torch.stack([straightforward_trajectory(model, v, c, cfg) for c in classes], dim=1)
                              for v in views], dim=1)
    return out


def ours_raw(model, image: torch.Tensor, classes: list[int], cfg: AdvCAM, multiscale: MultiScale) -> dict:
    """Per scale: our batched trajectories [T+1, 2, K, h, w]."""
    out = {}
    H, W = image.shape[-2:]
    for s in multiscale.scales:
        size = (max(1, round(H * s)), max(1, round(W * s)))
        x = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False) if size != (H, W) else image[None]
        x = torch.cat([x, x.flip(-1)]) if multiscale.flip else x
        out[s] = cfg.trajectory_maps(model, x, torch.tensor(classes, device=image.device), image_key=f"x@{s}")
    return out


def final_maps(raw: dict, image: torch.Tensor, classes: list[int], multiscale: MultiScale) -> torch.Tensor:
    """compute_maps over the summed trajectories (exactly how scale_maps aggregates)."""
    return compute_maps(GivenMaps({s: t.sum(dim=0) for s, t in raw.items()}), None, image, classes, multiscale, image_key="x")


def mask_flips(a: dict, b: dict, tau: float) -> int:
    """Restricting-mask pixels (M = CAM(x^t)/max CAM(x^0) > tau, t < T) that differ between two trajectory sets."""
    flips = 0
    for s in a:
        ma = a[s][:-1] / a[s][0].flatten(-2).amax(-1).clamp_min(1e-5)[..., None, None] > tau
        mb = b[s][:-1] / b[s][0].flatten(-2).amax(-1).clamp_min(1e-5)[..., None, None] > tau
        flips += int((ma != mb).sum())
    return flips


def main(argv: list[str] | None = None) -> int:
    """Time every method and the AdvCAM yardstick; check agreement in float64."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--fickle-model", type=Path, default=None)
    p.add_argument("--split", default="train")
    p.add_argument("--images", type=int, default=5, help="images timed per method")
    p.add_argument("--agree-images", type=int, default=2, help="images of the float64 agreement check")
    p.add_argument("--subset-seed", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS, help="methods to time")
    p.add_argument("--advcam-steps", type=int, default=None)
    p.add_argument("--rib-steps", type=int, default=None)
    p.add_argument("--rib-batch", type=int, default=None)
    p.add_argument("--fickle-samples", type=int, default=None)
    p.add_argument("--rib-data", type=Path, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)

    dataset, ids_path, model, device = open_subset(args, "cost_ids")
    multiscale = MultiScale()
    threads = torch.get_num_threads()

    # 1. every method at its defaults: seconds and passes per image
    methods = build_rows(args)
    rows = []
    for row in args.rows:
        path = args.fickle_model if row == "fickle" else args.model
        if path is None:
            continue
        m = load_classifier(path, device)[0] if row == "fickle" else model
        record = {"row": row, "method": methods[row].config(), "model_sha256": model_identity(path),
                  "ids": ids_path.read_text().split(), "device": device.type, "threads": threads}
        folder = args.out / f"{row}-{short_hash(record)}"
        run_cached(methods[row], m, dataset, dataset.ids, multiscale, folder, device, record)
        rows.append({"method": row, **cost_summary(folder)})

    # 2. AdvCAM against the yardstick, float32, same images and threads
    cfg = methods["advcam"] if "advcam" in methods else AdvCAM()
    ours_s = yard_s = 0.0
    yard_model = copy.deepcopy(model).requires_grad_(True)  # the yardstick keeps parameter gradients on
    for image_id in dataset.ids:
        image = to_tensor(dataset.image(image_id)).to(device)
        classes = [c - 1 for c in dataset.label_ids(image_id)]
        t0 = time.perf_counter()
        compute_maps(cfg, model, image, classes, multiscale, image_key=image_id)
        ours_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        final_maps(yardstick_raw(yard_model, image, classes, cfg, multiscale), image, classes, multiscale)
        yard_s += time.perf_counter() - t0
        print(f"  timing {image_id}: ours {ours_s:.1f}s, yardstick {yard_s:.1f}s (cumulative)")
    n = len(dataset.ids)

    # 3. agreement in float64
    model64, yard64 = copy.deepcopy(model).double(), copy.deepcopy(yard_model).double()
    worst, flips = 0.0, 0
    for image_id in dataset.ids[: args.agree_images]:
        image = to_tensor(dataset.image(image_id)).to(device).double()
        classes = [c - 1 for c in dataset.label_ids(image_id)]
        ours, yard = ours_raw(model64, image, classes, cfg, multiscale), yardstick_raw(yard64, image, classes, cfg, multiscale)
        diff = (final_maps(ours, image, classes, multiscale) - final_maps(yard, image, classes, multiscale)).abs().max()
        worst = max(worst, float(diff))
        flips += mask_flips(ours, yard, cfg.tau)
        print(f"  agreement {image_id}: max |diff| {float(diff):.2e}")
    steps = cfg.steps
    summary = {
        "threads": threads, "device": device.type, "images": n, "advcam_steps": steps,
        "ours_seconds_per_image": ours_s / n, "yardstick_seconds_per_image": yard_s / n,
        "speedup": yard_s / max(ours_s, 1e-9),
        "agreement_images": min(args.agree_images, n), "max_abs_diff_float64": worst, "agrees_to_1e-4": worst <= 1e-4,
        "mask_pixels_flipped": flips,
        "passes_per_scale": {"ours": {"forward": steps + 1, "backward": steps, "note": "all classes x flips in one batch"},
                             "yardstick": {"forward": "(T+1) x classes x flips", "backward": "T x classes x flips",
                                           "note": "each backward also computes every parameter gradient"}},
    }
    table = markdown(rows, ["method", "seconds_per_image", "forwards_per_image", "backwards_per_image",
                            "forward_rows_per_image", "images"])
    atomic_write_json(args.out / "cost.json", {"methods": rows, "advcam_vs_yardstick": summary})
    atomic_write_text(args.out / "cost.md", f"device {device.type}, {threads} threads, scales {list(multiscale.scales)} + flip\n\n"
                      f"{table}\n\nAdvCAM vs yardstick: {json.dumps(summary)}\n")
    print(table)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
