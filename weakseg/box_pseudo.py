"""Box pseudo labels for one image (the pure function the batch tier maps over a dataset), their instance outputs, the
COCO file assembled from them and the manifest that pins a box pseudo-label folder.

Methods (`BOX_METHODS`): `bbam` (a detector's BBAM maps -> `weakseg.refine.box_masks.bbam_masks`), and the two
baselines through the same outputs, `box` (the filled box) and `grabcut` (OpenCV GrabCut inside the box).

Per image, in the existing label format (`weakseg.pseudo`) and beside it:
- maps/<id>.npz: float16 `maps` [B, H, W] (one per box: BBAM's map, or the baseline's mask as 0/1), int16
  `class_ids` [B] (the label value of each box's class) and float32 `boxes` [B, 4] (0-based xyxy pixel edges);
- labels/<id>.png: the semantic label (VOC palette; 0 background, class ids, 255 ignored: the band between the tight
  and the loose mask, pixels two classes claim, the free pixels of difficult boxes);
- instances/<id>.png: the instance index (0 background, k = the k-th box's instance, 255 exactly where the label is
  255): each labelled pixel goes to the smallest box of the label's class whose mask covers it;
- instances/<id>.json: per instance its index, class, box, how its mask was made (`source`: map, grown, box-prior,
  box, grabcut; for BBAM its positives, IoU threshold and stride), area and full tight mask as COCO RLE (instances
  may overlap there), the difficult boxes left out and the ignored region as RLE.
`coco_instances` turns the per-image JSON records into one COCO instance-segmentation file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from weakseg.attribution.bbam import BBAM
from weakseg.data.augment import to_tensor
from weakseg.data.box_labels import ImageBoxes
from weakseg.data.box_targets import BoxError, box_region
from weakseg.refine.box_masks import IGNORE, BoxMaskConfig, BoxMasks, bbam_masks, filled_box_masks, grabcut_masks

BOX_METHODS = ("bbam", "box", "grabcut")
BOX_MANIFEST_KIND = "box-pseudo"
BOX_MANIFEST_VERSION = 1
MAX_INSTANCES = IGNORE - 1  # instance indices 1..254 fit a PNG beside 255


@dataclass(frozen=True)
class FilledBox:
    """The filled-box baseline: each box is its mask."""

    name = "box"

    def config(self) -> dict[str, Any]:
        """What determines the masks (recorded in manifests)."""
        return {"method": self.name}


@dataclass(frozen=True)
class GrabCut:
    """The GrabCut baseline: OpenCV GrabCut initialised with each box, seeded per image."""

    iterations: int = field(default=5, metadata={"help": "GrabCut iterations per box"})

    name = "grabcut"

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"grabcut iterations must be >= 1, got {self.iterations}")

    def config(self) -> dict[str, Any]:
        """What determines the masks (recorded in manifests)."""
        return {"method": self.name, "iterations": self.iterations}


BoxMethod = BBAM | FilledBox | GrabCut


@dataclass
class BoxPseudoResult:
    """Outputs of one image (module docstring)."""

    maps: np.ndarray  # float16 [B, H, W]
    class_ids: np.ndarray  # int16 [B]
    boxes: np.ndarray  # float32 [B, 4]
    label: np.ndarray  # uint8 [H, W]
    instances: np.ndarray  # uint8 [H, W]
    record: dict[str, Any]  # the instances/<id>.json content


def box_pseudo_label(
    method: BoxMethod,
    image: np.ndarray,
    targets: ImageBoxes,
    classes: Sequence[str],
    detector: nn.Module | None = None,
    mask_config: BoxMaskConfig | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> BoxPseudoResult:
    """Maps, label, instance index and instance record of one uint8 HxWx3 image from its checked box targets;
    `classes` are the dataset's (label value i + 1 is classes[i]); BBAM needs the detector and the mask config."""
    if len(targets.boxes) > MAX_INSTANCES:
        raise BoxError(f"{targets.source}: {len(targets.boxes)} boxes; an instance PNG holds at most {MAX_INSTANCES}")
    details: list[dict[str, Any]] = [{} for _ in targets.boxes]
    if isinstance(method, BBAM):
        if detector is None:
            raise ValueError("bbam needs a detector")
        run = method.run(
            detector,
            to_tensor(image).to(device),
            torch.from_numpy(targets.boxes),
            torch.from_numpy(targets.detector_ids),
            seed=seed,
        )
        maps = run.maps.detach().cpu().numpy().astype(np.float32)
        masks = bbam_masks(image, maps, targets.boxes, targets.class_ids, mask_config)
        details = [
            {"positives": p, "iou_threshold": t, "stride": round(float(s), 4)}
            for p, t, s in zip(run.positives, run.iou_thresholds, run.strides, strict=True)
        ]
    elif isinstance(method, GrabCut):
        masks = grabcut_masks(image, targets.boxes, targets.class_ids, method.iterations, seed=seed & 0x7FFFFFFF)
        maps = masks.instances.astype(np.float32)
    else:
        masks = filled_box_masks(image, targets.boxes, targets.class_ids)
        maps = masks.instances.astype(np.float32)
    label, index = label_and_instances(masks, targets)
    record = instance_record(method.name, masks, targets, classes, index, details)
    return BoxPseudoResult(
        maps=maps.astype(np.float16),
        class_ids=targets.class_ids.astype(np.int16),
        boxes=targets.boxes.astype(np.float32),
        label=label,
        instances=index,
        record=record,
    )


def label_and_instances(masks: BoxMasks, targets: ImageBoxes) -> tuple[np.ndarray, np.ndarray]:
    """The semantic label with the difficult boxes' free pixels ignored, and the instance index PNG content:
    255 where the label is 255, else the smallest box (by area) of the pixel's class whose tight mask covers it."""
    label = masks.semantic.copy()
    height, width = label.shape
    for box in targets.ignored:
        label[box_region(box, height, width) & (label == 0)] = IGNORE
    index = np.zeros((height, width), dtype=np.uint8)
    areas = (targets.boxes[:, 2] - targets.boxes[:, 0]) * (targets.boxes[:, 3] - targets.boxes[:, 1])
    for k in np.argsort(-areas, kind="stable"):
        index[masks.instances[k] & (label == masks.labels[k])] = k + 1
    index[label == IGNORE] = IGNORE
    return label, index


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE of a boolean HxW mask, JSON-ready (counts as text)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def instance_record(
    method: str,
    masks: BoxMasks,
    targets: ImageBoxes,
    classes: Sequence[str],
    index: np.ndarray,
    details: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """The instances/<id>.json content (module docstring)."""
    instances = [
        {
            "index": k + 1,
            "class_id": int(c),
            "class": classes[int(c) - 1],
            "box": [round(float(v), 3) for v in box],
            "source": source,
            **({method: detail} if detail else {}),
            "area": int(mask.sum()),
            "rle": encode_rle(mask),
        }
        for k, (box, c, source, mask, detail) in enumerate(
            zip(targets.boxes, masks.labels, masks.sources, masks.instances, details, strict=True)
        )
    ]
    return {
        "method": method,
        "height": int(targets.height),
        "width": int(targets.width),
        "instances": instances,
        "ignored_boxes": [
            {"class": name, "box": [round(float(v), 3) for v in box], "reason": "difficult"}
            for box, name in zip(targets.ignored, targets.ignored_names, strict=True)
        ],
        "ignore_rle": encode_rle(index == IGNORE),
    }


def coco_instances(
    records: Iterable[tuple[int, str, str, dict[str, Any]]], classes: Sequence[str], description: str = ""
) -> dict[str, Any]:
    """A COCO instance-segmentation dataset from (image number, image id, file name, instances/<id>.json record):
    one annotation per instance (RLE mask, its box as x, y, w, h, iscrowd 0); each image entry also carries the
    weakseg id and the ignored region ("ignore", RLE; pycocotools passes extra fields through)."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for number, image_id, file_name, record in records:
        images.append(
            {
                "id": number,
                "file_name": file_name,
                "height": record["height"],
                "width": record["width"],
                "weakseg_id": image_id,
                "ignore": record["ignore_rle"],
            }
        )
        for inst in record["instances"]:
            x1, y1, x2, y2 = inst["box"]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": number,
                    "category_id": inst["class_id"],
                    "segmentation": inst["rle"],
                    "area": inst["area"],
                    "bbox": [x1, y1, round(x2 - x1, 3), round(y2 - y1, 3)],
                    "iscrowd": 0,
                    "source": inst["source"],
                }
            )
    return {
        "info": {"description": description or "weakseg box pseudo instances"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(classes)],
    }


def box_manifest(
    method: BoxMethod,
    mask_config: BoxMaskConfig | None,
    difficult: str,
    detector_sha256: str | None,
    detector: str | None,
    detector_classes: Sequence[str] | None,
    classes: Sequence[str],
    split: str,
    data: str,
) -> dict[str, Any]:
    """The configuration a box pseudo-label folder is pinned to (`BOX_PINNED`): the method's config (BBAM's without
    its execution-only fields), the mask config (BBAM only), the difficult-box policy, the detector's sha256 and
    classes, the dataset's classes and split; the detector's and dataset's locations are recorded, not pinned.
    In its JSON form, so it compares equal to a manifest read back from disk."""
    return json.loads(
        json.dumps(
            {
                "version": BOX_MANIFEST_VERSION,
                "kind": BOX_MANIFEST_KIND,
                "method": method.config(),
                "masks": asdict(mask_config) if isinstance(method, BBAM) and mask_config is not None else None,
                "difficult": difficult,
                "detector_sha256": detector_sha256,
                "detector_classes": list(detector_classes) if detector_classes is not None else None,
                **({"detector": detector} if detector is not None else {}),
                "classes": list(classes),
                "split": split,
                "data": data,
            }
        )
    )


BOX_PINNED = (
    "version",
    "kind",
    "method",
    "masks",
    "difficult",
    "detector_sha256",
    "detector_classes",
    "classes",
    "split",
)


def box_manifest_mismatch(existing: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Pinned entries that differ, a method or mask setting named down to its field ("method.iterations")."""
    from weakseg.pseudo import dotted_diff

    return [d for k in BOX_PINNED for d in dotted_diff(existing.get(k), wanted.get(k), k)]
