"""The pseudo-label job: one image at a time through `weakseg.pseudo.pseudo_label`, resumable.

Outputs land in <out>/maps, <out>/labels (each file written to a temporary name and renamed), with
<out>/manifest.json pinning the configuration and <out>/failures.jsonl recording images that failed.
An image counts as done when its label PNG exists (written after its maps).
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from weakseg.attribution.base import AttributionMethod, MultiScale
from weakseg.data.classes import voc_palette
from weakseg.data.voc import VOCDataset
from weakseg.errors import WeaksegError
from weakseg.io import atomic_save_npz, atomic_save_png, atomic_write_json
from weakseg.models.checkpoint import file_sha256
from weakseg.models.classifier_io import load_classifier
from weakseg.pseudo import LabelConfig, build_manifest, manifest_mismatch, pseudo_label


@dataclass
class PseudoJob:
    """A pseudo-label job: method, model, data and where results go."""

    method: AttributionMethod
    model: Path
    data: Path
    split: str
    out: Path
    multiscale: MultiScale = field(default_factory=MultiScale)
    labels: LabelConfig = field(default_factory=LabelConfig)
    label_source: str = "auto"
    retries: int = 1
    limit: int | None = None  # first N ids of the split (benchmarks and demos)


def is_done(out: Path, image_id: str) -> bool:
    """Whether an image's outputs are complete."""
    return (out / "labels" / f"{image_id}.png").exists()


def prepare_output(job: PseudoJob, classes: list[str]) -> dict[str, Any]:
    """Create the output folder and manifest, or check an existing manifest matches (else refuse)."""
    wanted = build_manifest(job.method, job.multiscale, job.labels, file_sha256(job.model), classes,
                            job.split, str(Path(job.data).resolve()))
    path = job.out / "manifest.json"
    if path.exists():
        try:
            existing = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise WeaksegError(f"{path}: unreadable manifest ({e}); move the folder aside") from e
        diff = manifest_mismatch(existing, wanted)
        if diff:
            raise WeaksegError(f"{job.out}: holds pseudo labels made with a different configuration "
                               f"(differs in: {', '.join(diff)}); choose another --out or remove it")
    else:
        job.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, wanted)
    (job.out / "maps").mkdir(exist_ok=True)
    (job.out / "labels").mkdir(exist_ok=True)
    return wanted


def write_result(out: Path, image_id: str, result: Any) -> None:
    """Write one image's maps then its label PNG (the label marks it done)."""
    atomic_save_npz(out / "maps" / f"{image_id}.npz", maps=result.maps, class_ids=result.class_ids)
    atomic_save_png(out / "labels" / f"{image_id}.png", result.label, palette=voc_palette())


def run_local(job: PseudoJob, device: torch.device, progress: bool = True) -> dict[str, Any]:
    """Run the job in this process; returns the summary (also written to <out>/summary.json)."""
    dataset = VOCDataset(job.data, job.split, labels=job.label_source)
    prepare_output(job, dataset.classes)
    model, model_classes = load_classifier(job.model, device)
    if model_classes and model_classes != dataset.classes:
        raise WeaksegError(f"{job.model}: trained on classes {model_classes[:4]}..., dataset has {dataset.classes[:4]}...")
    ids = dataset.ids[: job.limit] if job.limit else dataset.ids
    todo = [i for i in ids if not is_done(job.out, i)]
    counts = {"total": len(ids), "skipped": len(ids) - len(todo), "succeeded": 0, "failed": 0}
    t0 = time.time()
    with open(job.out / "failures.jsonl", "a") as failures:
        for image_id in tqdm(todo, desc=f"{job.method.name} pseudo labels", unit="img", disable=not progress):
            for attempt in range(job.retries + 1):
                try:
                    image = dataset.image(image_id)
                    class_ids = dataset.label_ids(image_id)
                    result = pseudo_label(job.method, model, image, class_ids, job.multiscale, job.labels, device, image_key=image_id)
                    write_result(job.out, image_id, result)
                    counts["succeeded"] += 1
                    break
                except Exception as e:  # recorded per image; the job goes on
                    if attempt == job.retries:
                        counts["failed"] += 1
                        failures.write(json.dumps({"id": image_id, "error": f"{type(e).__name__}: {e}",
                                                   "attempts": attempt + 1, "traceback": traceback.format_exc(limit=3)}) + "\n")
                        failures.flush()
    seconds = time.time() - t0
    summary = {**counts, "seconds": round(seconds, 2),
               "images_per_second": round(counts["succeeded"] / seconds, 3) if seconds > 0 else None, "out": str(job.out)}
    atomic_write_json(job.out / "summary.json", summary)
    return summary
