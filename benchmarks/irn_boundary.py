"""Is it the walk or the boundary? IRN masks from a trained IRN's boundary map against the true object contours.

On a fixed subset of the split (the ids of --ids, or --images drawn as attribution_table.py draws them) and the
seeds of --maps (a `weakseg pseudo` folder), this prints the mIoU of IRN's labels (`IRNRefiner`: the random walk,
the division by the maximum, the background plane) when the walk runs over
- the IRN's learned boundary map (what `weakseg refine irn` does), and
- the oracle boundary: 1 on every stride-4 cell whose 4 x 4 block holds a change of the true instance (or class)
  label, 0 elsewhere,
each at several background planes, walk lengths (2^exp_times steps) and radii, beside the seeds reduced to
stride 4 without a walk. It also prints the learned map's mean on the oracle cells against elsewhere, and the
IRN's ir labels (`<irn>/ir_labels`, what it was trained on): the fraction of pixels that are confident
foreground / background and how often each agrees with the ground truth.

    python benchmarks/irn_boundary.py --data data/bench --maps runs/cam_train --irn runs/irn --images 20 \\
        --out benchmarks/results/irn_boundary_scratch.json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import torch.nn.functional as F

from weakseg.data.voc import VOCDataset, read_id_list
from weakseg.device import resolve_device, set_threads
from weakseg.io import atomic_write_json
from weakseg.metrics.seeds import evaluate_labels
from weakseg.models.irn import OUTPUT_STRIDE
from weakseg.models.irn_infer import boundary_tensor
from weakseg.refine.irn_refiner import IRNRefineConfig, IRNRefiner, stride4_maps
from weakseg.refine.refiner import scores_to_label, with_background


def oracle_boundary(label: np.ndarray) -> torch.Tensor:
    """[ceil(H/4), ceil(W/4)] float: 1 where the cell's 4 x 4 block holds a change of the label, 0 elsewhere."""
    change = np.zeros(label.shape, dtype=bool)
    change[:, 1:] |= label[:, 1:] != label[:, :-1]
    change[1:, :] |= label[1:, :] != label[:-1, :]
    t = torch.from_numpy(change.astype(np.float32))[None, None]
    return F.max_pool2d(t, OUTPUT_STRIDE, OUTPUT_STRIDE, ceil_mode=True)[0, 0]


def ir_label_stats(dataset: VOCDataset, irn_run: Path) -> dict[str, Any]:
    """Confident fg / bg fractions of the IRN's ir labels and their agreement with the ground truth."""
    from PIL import Image

    n = bg = bg_ok = fg = fg_ok = gt_bg = images = 0
    for path in sorted((irn_run / "ir_labels").glob("*.png")):
        gt = dataset.mask(path.stem)
        if gt is None:
            continue
        label = np.asarray(Image.open(path))
        if label.shape != gt.shape:
            continue
        images += 1
        n += gt.size
        gt_bg += int((gt == 0).sum())
        is_bg, is_fg = label == 0, (label > 0) & (label != 255)
        bg, bg_ok = bg + int(is_bg.sum()), bg_ok + int((is_bg & (gt == 0)).sum())
        fg, fg_ok = fg + int(is_fg.sum()), fg_ok + int((is_fg & (label == gt)).sum())
    if not images:
        return {"images": 0}
    return {
        "images": images,
        "confident_bg": bg / n,
        "confident_bg_agrees": bg_ok / max(bg, 1),
        "confident_fg": fg / n,
        "confident_fg_agrees": fg_ok / max(fg, 1),
        "gt_bg": gt_bg / n,
    }


def main(argv: list[str] | None = None) -> int:
    """Print (and with --out save) the learned-vs-oracle boundary table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="train")
    ap.add_argument("--maps", required=True, help="a weakseg pseudo folder holding maps/<id>.npz for the ids")
    ap.add_argument("--irn", required=True, help="a weakseg train irn run")
    ap.add_argument("--ids", help="an id list file (default: --images ids drawn as attribution_table.py)")
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--subset-seed", type=int, default=0)
    ap.add_argument("--bg", type=float, nargs="+", default=[0.25, 0.35, 0.5], help="background planes")
    ap.add_argument("--exp-times", type=int, nargs="+", default=[4, 6, 8], help="walk lengths 2^k")
    ap.add_argument("--radius", type=int, nargs="+", default=[2, 3, 5], help="walk radii")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", help="results JSON")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)
    dataset = VOCDataset(args.data, args.split)
    if args.ids:
        ids = read_id_list(args.ids)
    else:  # the draw of attribution_common.fixed_subset, kept in memory
        pool = sorted(dataset.ids)
        ids = sorted(np.random.default_rng(args.subset_seed).permutation(pool)[: min(args.images, len(pool))].tolist())
    refiner = IRNRefiner.from_checkpoint(args.irn, device=device)
    cases = []
    for image_id in ids:
        with np.load(Path(args.maps) / "maps" / f"{image_id}.npz") as z:
            maps, class_ids = z["maps"].astype(np.float32), z["class_ids"].astype(np.int64)
        image = dataset.image(image_id)
        truth = dataset.instance_mask(image_id)
        truth = truth if truth is not None else dataset.require_mask(image_id)
        learned = boundary_tensor(refiner.model, image, device)
        cases.append((maps, class_ids, dataset.require_mask(image_id), learned, oracle_boundary(truth).to(device)))

    def miou(edge_kind: str | None, config: IRNRefineConfig, bg: float) -> float:
        walker = IRNRefiner(refiner.model, config, device)
        pairs = []
        for maps, class_ids, gt, learned, oracle in cases:
            if edge_kind is None:  # the seeds at stride 4, upsampled, no walk
                small = stride4_maps(torch.from_numpy(maps))
                scores = F.interpolate(small[None], scale_factor=OUTPUT_STRIDE, mode="bilinear", align_corners=False)
                scores = scores[0][:, : gt.shape[0], : gt.shape[1]]
            else:
                scores = walker.walk(maps, learned if edge_kind == "learned" else oracle)
            pairs.append((gt, scores_to_label(with_background(scores.cpu().numpy(), bg), class_ids)))
        return 100 * evaluate_labels(pairs, dataset.classes).miou

    base = IRNRefineConfig()
    rows: list[dict[str, Any]] = [
        {"boundary": "none (seed at stride 4)", **{f"bg {b}": miou(None, base, b) for b in args.bg}}
    ]
    for kind in ("learned", "oracle"):
        for k in args.exp_times:
            for r in args.radius:
                config = replace(base, exp_times=k, radius=r)
                rows.append(
                    {
                        "boundary": kind,
                        "steps": 2**k,
                        "radius": r,
                        **{f"bg {b}": miou(kind, config, b) for b in args.bg},
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    on = torch.cat([c[3].flatten()[c[4].flatten() > 0] for c in cases])
    off = torch.cat([c[3].flatten()[c[4].flatten() == 0] for c in cases])
    result = {
        "command": "python benchmarks/irn_boundary.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "images": len(ids),
        "irn": str(args.irn),
        "maps": str(args.maps),
        "rows": rows,
        "learned_boundary_on_oracle_cells": float(on.mean()),
        "learned_boundary_elsewhere": float(off.mean()),
        "ir_labels": ir_label_stats(dataset, Path(args.irn)),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    if args.out:
        atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
