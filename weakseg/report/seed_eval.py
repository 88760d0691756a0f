"""Seed evaluation of a pseudo-label folder against a dataset's masks, with a Markdown report and overlays."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from weakseg.data.voc import VOCDataset
from weakseg.errors import DataError
from weakseg.io import atomic_save_png
from weakseg.metrics.seeds import SeedReport, evaluate_seeds, evaluate_seeds_refined
from weakseg.refine.crf import CRFConfig, crf_refine_label
from weakseg.refine.seed_label import threshold_seed
from weakseg.report.markdown import Section, write_report
from weakseg.report.overlay import colorize_label, heatmap_overlay, tile


def maps_folder(path: str | Path) -> Path:
    """`<path>/maps` for a pseudo-label output folder, or path itself if it holds .npz maps."""
    p = Path(path)
    if (p / "maps").is_dir():
        return p / "maps"
    if p.is_dir():
        return p
    raise DataError(f"{p}: maps folder not found")


def load_maps(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(maps float32 [K,H,W], class_ids int [K]) from one maps/<id>.npz."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["maps"].astype(np.float32), z["class_ids"].astype(np.int64)
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"{path}: unreadable maps file ({e})") from e


@dataclass
class SeedEvaluation:
    """Seed quality without and (optionally) with CRF, on the images that have maps."""

    ids: list[str]
    plain: SeedReport
    crf: SeedReport | None = None

    def to_json(self) -> dict:
        """JSON: the plain report's keys, plus 'crf' (same keys) and 'num_images'."""
        out = {**self.plain.to_json(), "num_images": len(self.ids)}
        if self.crf is not None:
            out["crf"] = self.crf.to_json()
        return out


def evaluate_seed_folder(
    dataset: VOCDataset,
    maps_dir: str | Path,
    crf: CRFConfig | None = None,
    crf_window: float = 0.1,
    progress: bool = True,
) -> SeedEvaluation:
    """Evaluate every image of the split that has maps. With CRF, the slow sweep covers the thresholds within
    crf_window of the best plain threshold (step 0.05)."""
    folder = maps_folder(maps_dir)
    ids = [i for i in dataset.ids if (folder / f"{i}.npz").exists()]
    if not ids:
        raise DataError(f"{folder}: no maps for any image of the split {dataset.split_path}")
    missing_gt = [i for i in ids if dataset.mask(i) is None]
    if missing_gt:
        raise DataError(f"{dataset.root}: no ground-truth mask for {missing_gt[0]} (and {len(missing_gt) - 1} more)")

    def items():
        for i in ids:
            maps, cls = load_maps(folder / f"{i}.npz")
            yield maps, cls, dataset.mask(i)

    plain = evaluate_seeds(items(), dataset.classes)
    refined = None
    if crf is not None:
        lo, hi = max(0.0, plain.threshold - crf_window), min(0.95, plain.threshold + crf_window)
        thresholds = [round(t, 2) for t in np.arange(lo, hi + 1e-9, 0.05)]

        def crf_items():
            for i in tqdm(
                ids, desc=f"seeds+CRF ({len(thresholds)} thresholds)", unit="img", disable=not progress, delay=2.0
            ):
                maps, cls = load_maps(folder / f"{i}.npz")
                yield dataset.image(i), maps, cls, dataset.mask(i)

        refined = evaluate_seeds_refined(
            crf_items(), dataset.classes, lambda im, lb: crf_refine_label(im, lb, crf), thresholds
        )
    return SeedEvaluation(ids=ids, plain=plain, crf=refined)


def overlay_rows(
    dataset: VOCDataset,
    maps_dir: str | Path,
    ids: list[str],
    threshold: float,
    crf: CRFConfig | None = None,
    crf_threshold: float | None = None,
) -> list[list[np.ndarray]]:
    """Rows image | ground truth | map (strongest class) | seed [| seed+CRF] for a few images."""
    folder = maps_folder(maps_dir)
    rows = []
    for i in ids:
        image, gt = dataset.image(i), dataset.require_mask(i)
        maps, cls = load_maps(folder / f"{i}.npz")
        top = maps.max(axis=0) if len(maps) else np.zeros(gt.shape, np.float32)
        seed = threshold_seed(maps, cls, threshold)
        row = [image, colorize_label(gt), heatmap_overlay(image, top), colorize_label(seed)]
        if crf is not None:
            t = threshold if crf_threshold is None else crf_threshold
            row.append(colorize_label(crf_refine_label(image, threshold_seed(maps, cls, t), crf)))
        rows.append(row)
    return rows


def write_seed_report(
    path: str | Path,
    dataset: VOCDataset,
    maps_dir: str | Path,
    evaluation: SeedEvaluation,
    title: str,
    n_examples: int = 6,
    crf: CRFConfig | None = None,
) -> Path:
    """Markdown report with the metrics table, per-class IoU and an overlay figure next to it."""
    path = Path(path)
    crf_t = evaluation.crf.threshold if evaluation.crf else None
    rows = overlay_rows(dataset, maps_dir, evaluation.ids[:n_examples], evaluation.plain.threshold, crf, crf_t)
    captions = ["image", "ground truth", "map", f"seed t={evaluation.plain.threshold:.2f}"] + (
        [f"seed+CRF t={crf_t:.2f}"] if crf is not None else []
    )
    figure = path.with_suffix(".png")
    atomic_save_png(figure, tile(rows, captions))
    table = [{"variant": "seed", **_summary(evaluation.plain)}]
    if evaluation.crf:
        table.append({"variant": "seed + CRF", **_summary(evaluation.crf)})
    per_class = [
        {"class": k, "IoU": v, **({"IoU + CRF": evaluation.crf.per_class[k]} if evaluation.crf else {})}
        for k, v in evaluation.plain.per_class.items()
    ]
    sections = [
        Section(
            "Seed quality",
            f"{len(evaluation.ids)} images. Best background threshold of a sweep (a diagnostic, "
            "as SEAM/AdvCAM report; never used to make labels). Precision, recall and F1 are per-class values "
            "averaged over foreground classes.",
            tables=[table],
        ),
        Section("Per-class IoU", tables=[per_class]),
        Section("Examples", images=[(figure, "image | ground truth | map | seed | seed+CRF")]),
    ]
    return write_report(path, title, sections)


def _summary(r: SeedReport) -> dict:
    return {"mIoU": r.miou, "threshold": r.threshold, "precision": r.precision, "recall": r.recall, "F1": r.f1}
