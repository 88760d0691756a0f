"""The box pseudo-label job: BBAM (a detector) or a box baseline over a split's VOC XML boxes, into the label format
plus instance outputs (`weakseg.box_pseudo`), and the job-end COCO file.

Everything but the per-image step is the pseudo-label job's machinery (`batch.image_job`): a re-run skips finished
images (an image is done when labels/<id>.png exists; it is written after maps/, instances/<id>.png and
instances/<id>.json, every write complete-or-absent), a changed configuration is refused naming the differing
keys, failures go to failures.jsonl, `max_consecutive_failures` failed images in a row stop the job, and
`batch.image_job.run_local` (in this process) and `batch.ray_job.run_ray` (Ray actors, each loading the detector
once) run the same `BoxStep`. <out>/manifest.json pins the method's configuration, the mask configuration, the
difficult-box policy, the detector's sha256 and classes and the dataset's classes and split.

Bad input (`weakseg.data.box_labels`: a box outside the image, an empty or degenerate box, a class not in the
detector, an image without boxes, a missing or malformed XML) is found before any image is dispatched: `prepare`
reads the boxes of every image still to do. The first bad image stops the job there (WeaksegError with that one
message, naming the file and box) and is recorded in failures.jsonl; with `skip_bad` every bad image is recorded
there and left out, and the job goes on with the others (summary "bad": their count).

After the run, `write_coco` assembles <out>/instances_coco.json from the per-image instances/<id>.json of every
finished image, so it is rebuilt whole by any later run (a resume included).
"""

from __future__ import annotations

import dataclasses
import io
import json
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from batch.cluster import Probe, file_fingerprint, fingerprint
from batch.image_job import MANIFEST, Output, done_ids, image_seed, prepare_folder, write_failures, write_outputs
from batch.store import OutputStore, open_store
from weakseg.attribution.bbam import BBAM
from weakseg.box_pseudo import (
    BoxMethod,
    BoxPseudoResult,
    box_manifest,
    box_manifest_mismatch,
    box_pseudo_label,
    coco_instances,
)
from weakseg.data.box_labels import DIFFICULT_IGNORE, ImageBoxes, image_boxes
from weakseg.data.box_targets import BoxError
from weakseg.data.voc import VOCDataset
from weakseg.errors import CheckpointError, DataError, WeaksegError
from weakseg.io import encode_png
from weakseg.models.checkpoint import file_sha256, read_metadata, resolve_weights
from weakseg.models.detector import KIND as DETECTOR_KIND
from weakseg.models.detector import DetectorConfig, load_detector
from weakseg.refine.box_masks import BoxMaskConfig

DEFAULT_RETRIES = 2  # extra attempts per image
DEFAULT_MAX_CONSECUTIVE_FAILURES = 10  # failed images in a row that stop the job (0: never stop)
INSTANCES, COCO_FILE = "instances", "instances_coco.json"


@dataclass
class BoxPseudoJob:
    """Box pseudo labels for a split (module docstring); `out` is a path, an s3://... URI or a store."""

    method: BoxMethod
    data: Path
    split: str
    out: Output
    detector: Path | None = None  # a detector run folder or .safetensors (BBAM needs one; the baselines may pin one)
    masks: BoxMaskConfig = field(default_factory=BoxMaskConfig)  # BBAM's maps -> masks
    difficult: str = DIFFICULT_IGNORE  # weakseg.data.box_labels
    skip_bad: bool = False  # record images with bad boxes in failures.jsonl and go on (else stop at the first)
    retries: int = DEFAULT_RETRIES
    limit: int | None = None  # first N ids of the split
    max_consecutive_failures: int = DEFAULT_MAX_CONSECUTIVE_FAILURES  # 0: never stop
    bad: list[dict[str, Any]] = field(default_factory=list)  # filled by prepare: the images refused for their boxes

    def title(self) -> str:
        """The progress bar's text."""
        return f"{self.method.name} box pseudo labels"

    def absolute(self) -> BoxPseudoJob:
        """The job with absolute paths and a resolved store: what is shipped to workers."""
        detector = Path(self.detector).expanduser().absolute() if self.detector is not None else None
        return dataclasses.replace(
            self, data=Path(self.data).expanduser().absolute(), detector=detector, out=open_store(self.out)
        )

    def check_paths(self) -> None:
        """WeaksegError naming the flag, path and host when the dataset or the detector is not here."""
        host = socket.gethostname()
        if not Path(self.data).is_dir():
            raise WeaksegError(f"--data {self.data}: no such folder on {host}")
        if self.detector is not None:
            try:
                resolve_weights(self.detector)
            except WeaksegError as e:
                raise WeaksegError(f"--detector {self.detector}: not usable on {host} ({e})") from e

    def dataset(self) -> VOCDataset:
        """The job's split (its boxes come from Annotations/<id>.xml)."""
        return VOCDataset(self.data, self.split)

    def detector_config(self) -> DetectorConfig | None:
        """The detector's config from its checkpoint's metadata (None without one); CheckpointError naming
        --detector for a file that is not a detector."""
        if self.detector is None:
            return None
        meta = read_metadata(self.detector)
        if meta.get("kind") != DETECTOR_KIND:
            raise CheckpointError(f"--detector {self.detector}: is a {meta.get('kind')} checkpoint, not a detector")
        return DetectorConfig.from_dict(meta["config"])

    def manifest(self, classes: list[str], config: DetectorConfig | None) -> dict[str, Any]:
        """The manifest this job pins its output folder to."""
        weights = resolve_weights(self.detector) if self.detector is not None else None
        return box_manifest(
            self.method,
            self.masks,
            self.difficult,
            file_sha256(weights) if weights is not None else None,
            str(weights) if weights is not None else None,
            list(config.classes) if config is not None else None,
            classes,
            self.split,
            str(Path(self.data).resolve()),
        )

    def prepare(self, device: torch.device) -> tuple[list[str], BoxStep]:
        """Check the detector (BBAM: loaded on `device`), create or check the output folder, then read the boxes of
        every image still to do (module docstring: bad input); the ids to run and the step."""
        self.check_paths()
        if isinstance(self.method, BBAM) and self.detector is None:
            raise WeaksegError("--method bbam explains a detector: pass --detector RUN")
        dataset = self.dataset()
        step = BoxStep.open(self, device, dataset)
        prepare_folder(
            self.out, self.manifest(dataset.classes, step.config), box_manifest_mismatch, "box pseudo labels"
        )
        store = open_store(self.out)
        store.makedirs(INSTANCES)
        store.sweep_partials(INSTANCES)
        ids = job_ids(self, dataset)
        self.bad = scan_boxes(self, dataset, step, [i for i in ids if i not in done_ids(store)], store)
        refused = {r["id"] for r in self.bad}
        return [i for i in ids if i not in refused], step

    def open_step(self, device: torch.device) -> BoxStep:
        """The per-image step with the detector loaded on `device`."""
        return BoxStep.open(self, device)

    def probes(self) -> list[Probe]:
        """What every node must see as the driver does: the split list, the detector, the manifest just written."""
        dataset = self.dataset()
        store = open_store(self.out)
        manifest = store.read_bytes(MANIFEST) or b""
        probes = [
            Probe("--data", path=str(dataset.split_path.absolute()), fingerprint=file_fingerprint(dataset.split_path)),
            Probe("--out", store=store, key=MANIFEST, fingerprint=fingerprint(manifest, len(manifest))),
        ]
        if self.detector is not None:
            weights = resolve_weights(self.detector)
            probes.append(Probe("--detector", path=str(weights), fingerprint=file_fingerprint(weights)))
        return probes

    def summary_fields(self) -> dict[str, Any]:
        """The images refused for their boxes (count and records) and the detector's location."""
        return {
            "bad": len(self.bad),
            "bad_images": [r["id"] for r in self.bad],
            "detector": str(self.detector) if self.detector is not None else None,
        }


def job_ids(job: BoxPseudoJob, dataset: VOCDataset) -> list[str]:
    """The split's ids, the first `limit` of them."""
    return dataset.ids[: job.limit] if job.limit is not None else list(dataset.ids)


def scan_boxes(
    job: BoxPseudoJob, dataset: VOCDataset, step: BoxStep, ids: list[str], store: OutputStore
) -> list[dict[str, Any]]:
    """Read and check the boxes of `ids`; the failure records of the bad ones (written to failures.jsonl). Without
    job.skip_bad the first bad image is recorded and its message raised (WeaksegError)."""
    bad: list[dict[str, Any]] = []
    for image_id in ids:
        try:
            step.targets(image_id)
        except (BoxError, DataError) as e:
            bad.append({"id": image_id, "error": f"{type(e).__name__}: {e}", "attempts": 0, "bad_input": True})
            if not job.skip_bad:
                write_failures(store, {image_id}, bad)
                raise WeaksegError(f"{e} (pass --skip-bad to record such images in failures.jsonl and go on)") from e
    if bad:
        write_failures(store, {r["id"] for r in bad}, bad)
    return bad


@dataclass
class BoxStep:
    """The box job's per-image step in one process: the dataset reader and the detector (BBAM only)."""

    job: BoxPseudoJob
    dataset: VOCDataset
    config: DetectorConfig | None
    model: nn.Module | None
    device: torch.device

    @classmethod
    def open(cls, job: BoxPseudoJob, device: torch.device, dataset: VOCDataset | None = None) -> BoxStep:
        """Open the dataset (unless given) and read the detector's config; BBAM loads the detector on `device`."""
        config = job.detector_config()
        model = None
        if isinstance(job.method, BBAM):
            try:
                model, config = load_detector(job.detector or "", device)
            except WeaksegError as e:
                raise WeaksegError(f"--detector {job.detector}: {e}") from e
        return cls(job, dataset or job.dataset(), config, model, device)

    def targets(self, image_id: str) -> ImageBoxes:
        """The checked boxes of one image (BoxError / DataError naming the file and box)."""
        classes = list(self.config.classes) if self.config is not None else None
        return image_boxes(self.dataset, image_id, classes, self.job.difficult)

    def __call__(self, image_id: str, store: OutputStore) -> None:
        """Compute one image and write maps/, instances/ and, last, labels/."""
        targets = self.targets(image_id)
        result = box_pseudo_label(
            self.job.method,
            self.dataset.image(image_id),
            targets,
            self.dataset.classes,
            self.model,
            self.job.masks,
            self.device,
            seed=image_seed(image_id),
        )
        write_box_result(store, image_id, result)


def write_box_result(store: OutputStore, image_id: str, result: BoxPseudoResult) -> None:
    """Write one image's instance PNG and JSON, its maps, then its label PNG (which marks it done)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, maps=result.maps, class_ids=result.class_ids, boxes=result.boxes)
    store.write_bytes(f"{INSTANCES}/{image_id}.png", encode_png(result.instances))
    store.write_bytes(f"{INSTANCES}/{image_id}.json", (json.dumps(result.record) + "\n").encode())
    write_outputs(store, image_id, buf.getvalue(), result.label)


def write_coco(job: BoxPseudoJob) -> dict[str, Any]:
    """Assemble <out>/instances_coco.json from the instance records of every finished image (split order; image
    number = 1-based position in the job's ids); what it holds."""
    job = job.absolute()
    store = open_store(job.out)
    manifest = json.loads(store.read_bytes(MANIFEST) or b"{}")
    dataset = job.dataset()
    done = done_ids(store)
    records, missing = [], []
    for number, image_id in enumerate(job_ids(job, dataset), start=1):
        if image_id not in done:
            continue
        raw = store.read_bytes(f"{INSTANCES}/{image_id}.json")
        if raw is None:
            missing.append(image_id)
            continue
        records.append((number, image_id, dataset.image_path(image_id).name, json.loads(raw)))
    coco = coco_instances(records, manifest.get("classes") or dataset.classes, f"weakseg {job.method.name} {job.split}")
    store.write_bytes(COCO_FILE, (json.dumps(coco) + "\n").encode())
    return {
        "path": f"{store.uri}/{COCO_FILE}",
        "images": len(coco["images"]),
        "annotations": len(coco["annotations"]),
        "missing_records": missing,
    }
