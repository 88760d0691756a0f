"""BBAM's sensitivity analyses on a fixed subset, scored as pseudo masks against the true instance masks:

  t55     Table 5.5: the mask thresholds (the loose mask's and the tight mask's, i.e. the width of the ignore band;
          equal values leave no band) and the seed growing G (weakseg: growing a tiny mask in a small box from box
          priors; off = BoxMaskConfig(small_fraction=0)), all on the default BBAM maps
  t56     Table 5.6: lambda, the weight of ||M||_1 (Eq. 5.1)
  fig57a  Fig. 5.7(a): box-coordinate noise, every box expanded (+) or contracted (-) by a share of its width and
          height on each side before BBAM (and before the filled-box baseline, the box-prior row)
  fig57b  Fig. 5.7(b): the adaptive stride s = 16 + 48 sqrt(box area / image area) against fixed strides

The dissertation reports Tables 5.5 / 5.6 as Mask R-CNN trained on the pseudo masks and the semantic segmenter's
mIoU; a CPU session scores the pseudo masks themselves instead: mask AP / AP50 / AP75 and ABO of the instance masks
(each a prediction of score 1, as `weakseg eval instance --labels`) and the semantic label's mIoU over the pixels it
labels with its ignored share (as `weakseg eval labels`).

    python benchmarks/bbam_ablation.py --data BENCH/VOC2012 --detector runs/det --out runs/bbam_ablation \
        [--images 20] [--parts t55 t56 fig57a fig57b] [--iterations 300] [--threads 1] [--device cpu]

Resumable: each BBAM setting's maps are cached per image in <out>/maps/<setting>-<hash>/<id>.npz (written
atomically; the hash covers every BBAM field, the box noise and the detector's checksum) and every scored row in
<out>/rows/<row>-<hash>.json, so a re-run computes only what is missing. Tables go to <out>/bbam_ablation.md/.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batch.image_job import image_seed  # noqa: E402
from benchmarks.attribution_common import fixed_subset  # noqa: E402
from weakseg.attribution.bbam import BBAM  # noqa: E402
from weakseg.box_pseudo import label_and_instances  # noqa: E402
from weakseg.data.augment import to_tensor  # noqa: E402
from weakseg.data.box_labels import ImageBoxes, image_boxes  # noqa: E402
from weakseg.data.instances import gt_instance_target  # noqa: E402
from weakseg.data.voc import VOCDataset  # noqa: E402
from weakseg.device import resolve_device, set_threads  # noqa: E402
from weakseg.io import atomic_write_bytes, atomic_write_json, atomic_write_text  # noqa: E402
from weakseg.metrics.mask_ap import ABO_SCORE, mask_ap_report, score_image  # noqa: E402
from weakseg.metrics.seeds import evaluate_labels  # noqa: E402
from weakseg.models.checkpoint import file_sha256  # noqa: E402
from weakseg.models.detector import load_detector  # noqa: E402
from weakseg.refine.box_masks import BoxMaskConfig, bbam_masks, filled_box_masks  # noqa: E402

PARTS = ("t55", "t56", "fig57a", "fig57b")
# Table 5.5's rows as (loose threshold, tight threshold, seed growing); the last is the authors' code's default
T55_ROWS = ((0.2, 0.2, False), (0.5, 0.5, False), (0.8, 0.8, False), (0.3, 0.7, False), (0.3, 0.7, True),
            (0.2, 0.8, False), (0.2, 0.8, True), (0.2, 0.85, True))
COLUMNS = ("ap", "ap50", "ap75", "abo", "sem_miou", "ignored")


def short_hash(record: dict) -> str:
    """10 hex digits of the record's canonical JSON."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:10]


def noisy_boxes(targets: ImageBoxes, share: float) -> ImageBoxes:
    """The targets with every box grown (share > 0) or shrunk (< 0) by share x its side on each side, kept inside
    the image and at least 1 px wide."""
    if share == 0:
        return targets
    b = targets.boxes.astype(np.float64)
    dx, dy = (b[:, 2] - b[:, 0]) * share, (b[:, 3] - b[:, 1]) * share
    out = np.stack([b[:, 0] - dx, b[:, 1] - dy, b[:, 2] + dx, b[:, 3] + dy], axis=1)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, targets.width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, targets.height)
    for lo, hi, size in ((0, 2, targets.width), (1, 3, targets.height)):
        short = out[:, hi] - out[:, lo] < 1
        centre = (b[short, lo] + b[short, hi]) / 2
        out[short, lo] = (centre - 0.5).clip(0, size - 1)
        out[short, hi] = out[short, lo] + 1
    return dataclasses.replace(targets, boxes=out.astype(np.float32))


class Bench:
    """The subset, the detector, cached maps per BBAM setting and cached rows."""

    def __init__(self, args: argparse.Namespace) -> None:
        set_threads(args.threads)
        self.args, self.device = args, resolve_device(args.device)
        args.out.mkdir(parents=True, exist_ok=True)
        self.dataset = VOCDataset(args.data, args.split)
        subset = fixed_subset(args.data, args.split, args.images, args.subset_seed, args.out)
        self.ids = subset.read_text().split()
        self.detector, self.config = load_detector(args.detector, self.device)
        self.detector_sha = file_sha256(args.detector)
        self.base = BBAM(iterations=args.iterations)

    def targets(self, image_id: str) -> ImageBoxes:
        """The checked true boxes of an image, with the detector's class ids."""
        return image_boxes(self.dataset, image_id, list(self.config.classes))

    def maps(self, method: BBAM, noise: float, image_id: str) -> np.ndarray:
        """BBAM maps [B, H, W] of one image for a setting (cached)."""
        record = {"bbam": dataclasses.asdict(method), "noise": noise, "detector": self.detector_sha}
        name = f"lam{method.lam}-{method.stride}-noise{noise:+.2f}-{short_hash(record)}"
        path = self.args.out / "maps" / name / f"{image_id}.npz"
        if path.is_file():
            return np.load(path)["maps"].astype(np.float32)
        targets = noisy_boxes(self.targets(image_id), noise)
        image = to_tensor(self.dataset.image(image_id)).to(self.device)
        run = method.run(self.detector, image, torch.from_numpy(targets.boxes), torch.from_numpy(targets.detector_ids),
                         seed=image_seed(image_id))
        maps = run.maps.detach().cpu().numpy().astype(np.float16)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, maps=maps, boxes=targets.boxes)
        atomic_write_bytes(path, buffer.getvalue())
        if not (path.parent / "setting.json").exists():
            atomic_write_json(path.parent / "setting.json", record)
        return maps.astype(np.float32)

    def row(self, name: str, method: BBAM | None, noise: float = 0.0, masks: BoxMaskConfig | None = None) -> dict:
        """Scores of one row over the subset (cached): BBAM with `method`, or the filled box when method is None."""
        masks = masks or BoxMaskConfig()
        record = {"name": name, "bbam": dataclasses.asdict(method) if method else None, "noise": noise,
                  "masks": dataclasses.asdict(masks), "detector": self.detector_sha, "ids": self.ids}
        cache = self.args.out / "rows" / f"{name}-{short_hash(record)}.json"
        if cache.is_file():
            return json.loads(cache.read_text())
        scored, pairs = [], []
        for k, image_id in enumerate(self.ids, 1):
            print(f"  {name}: image {k}/{len(self.ids)} {image_id}", flush=True)
            image = self.dataset.image(image_id)
            targets = noisy_boxes(self.targets(image_id), noise)
            if method is None:
                result = filled_box_masks(image, targets.boxes, targets.class_ids)
            else:
                result = bbam_masks(image, self.maps(method, noise, image_id), targets.boxes, targets.class_ids, masks)
            label, _ = label_and_instances(result, targets)
            truth = gt_instance_target(self.dataset, image_id)
            scored.append(score_image(truth.binary_masks(), truth.labels.numpy(), truth.difficult.numpy(),
                                      result.instances, result.labels, np.ones(len(result.labels)),
                                      void=truth.void.numpy(), abo_score=ABO_SCORE))
            pairs.append((self.dataset.mask(image_id), label))
        report = mask_ap_report(scored, self.dataset.classes)
        semantic = evaluate_labels(pairs, self.dataset.classes)
        row = {"row": name, "images": len(self.ids), "ap": report["coco_ap"], "ap50": report["ap50"],
               "ap75": report["ap75"], "abo": report["abo"], "sem_miou": semantic.miou,
               "ignored": semantic.ignored_fraction, "setting": record}
        atomic_write_json(cache, row)
        return row


def markdown(rows: list[dict], first: str) -> str:
    """A table of rows (percentages, one decimal)."""
    header = [first, "mask AP", "AP50", "AP75", "ABO", "semantic mIoU", "ignored"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = ["-" if r[c] is None else f"{100 * r[c]:.1f}" for c in COLUMNS]
        lines.append("| " + " | ".join([r["label"], *cells]) + " |")
    return "\n".join(lines)


def main() -> None:
    """Compute (or read back) every requested part, print and write the tables."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="benchmark VOC2012 folder (XML boxes, SegmentationObject)")
    p.add_argument("--detector", type=Path, required=True, help="a `weakseg train detector` run or checkpoint")
    p.add_argument("--out", type=Path, required=True, help="cache and report folder (resumable)")
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    p.add_argument("--split", default="train")
    p.add_argument("--images", type=int, default=20, help="size of the fixed subset")
    p.add_argument("--subset-seed", type=int, default=0)
    p.add_argument("--iterations", type=int, default=300, help="BBAM's Adam steps (the authors': 300)")
    p.add_argument("--lams", type=float, nargs="+", default=[0.001, 0.003, 0.005, 0.007, 0.01, 0.02])
    p.add_argument("--noise", type=float, nargs="+", default=[-0.2, -0.1, 0.0, 0.1, 0.2])
    p.add_argument("--strides", type=float, nargs="+", default=[8.0, 16.0, 32.0, 64.0], help="fixed strides of fig57b")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="auto")
    args = p.parse_args()

    bench = Bench(args)
    base = bench.base
    tables: dict[str, Any] = {}
    text = [f"# BBAM ablations: {len(bench.ids)} images of {args.data} ({args.split}), detector {args.detector}, "
            f"{args.iterations} iterations; pseudo masks against the true instances\n"]
    if "t55" in args.parts:
        rows = []
        for loose, tight, grow in T55_ROWS:
            masks = BoxMaskConfig(th_fg=tight, th_loose=loose, **({} if grow else {"small_fraction": 0.0}))
            r = bench.row(f"t55-{loose}-{tight}-{'G' if grow else 'noG'}", base, masks=masks)
            rows.append({**r, "label": f"{loose} / {tight} / {'yes' if grow else 'no'}"})
        tables["t55"] = rows
        text += ["## Table 5.5: loose / tight threshold / seed growing\n", markdown(rows, "loose / tight / G"), ""]
    if "t56" in args.parts:
        rows = [{**bench.row(f"t56-{lam}", dataclasses.replace(base, lam=lam)), "label": f"{lam}"} for lam in args.lams]
        tables["t56"] = rows
        text += ["## Table 5.6: lambda\n", markdown(rows, "lambda"), ""]
    if "fig57a" in args.parts:
        rows = []
        for noise in args.noise:
            rows.append({**bench.row(f"fig57a-bbam-{noise:+.2f}", base, noise), "label": f"BBAM {noise:+.0%}"})
            rows.append({**bench.row(f"fig57a-box-{noise:+.2f}", None, noise), "label": f"filled box {noise:+.0%}"})
        tables["fig57a"] = rows
        text += ["## Fig. 5.7(a): box noise (each side moved out + / in - by a share of the side)\n",
                 markdown(rows, "boxes"), ""]
    if "fig57b" in args.parts:
        rows = [{**bench.row("fig57b-adaptive", base), "label": "adaptive 16 + 48 sqrt(a)"}]
        for s in args.strides:
            method = dataclasses.replace(base, stride="fixed", fixed_stride=s)
            rows.append({**bench.row(f"fig57b-fixed{s:g}", method), "label": f"fixed {s:g}"})
        tables["fig57b"] = rows
        text += ["## Fig. 5.7(b): the mask grid's stride\n", markdown(rows, "stride"), ""]
    report = "\n".join(text)
    atomic_write_text(args.out / "bbam_ablation.md", report + "\n")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    atomic_write_json(args.out / "bbam_ablation.json", {"tables": tables, "settings": settings, "ids": bench.ids})
    print(report)
    print(json.dumps({"tables": {k: [{c: r[c] for c in ("label", *COLUMNS)} for r in v] for k, v in tables.items()}}))


if __name__ == "__main__":
    main()
