"""The box targets of one image for box pseudo labels: its VOC XML boxes (`weakseg.data.detection.box_target`: 1-based
inclusive -> 0-based pixel-edge xyxy), classes mapped by name to a detector's class list.

Every refusal names the XML file (or image) and the box. From the XML reader (DataError): a missing or malformed
XML, a box outside the image (outside the XML's <size>, which must be the image's), an empty box (no pixel once
converted), a class name not in the dataset's classes. Here (BoxError): a class the detector does not have, a box
narrower or lower than one pixel (`weakseg.data.box_targets`, the contract of BBAM and the masks), an image without
boxes. Label values are the dataset's class ids (so `weakseg eval labels` scores them against its masks); the
detector's ids are what BBAM explains.

Difficult objects (`<difficult>1`; the detector is trained without them, `weakseg.data.detection`):
`DIFFICULT_IGNORE` (default) leaves them unexplained, with no map and no instance, and the pseudo labels ignore
(255) the pixels of their boxes that no instance claims, since they are objects the labels must not call
background; `DIFFICULT_INCLUDE` treats them as ordinary boxes. An image whose only boxes are difficult has no box
to explain under "ignore" and is refused like an image without boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from weakseg.data.box_targets import BoxError, check_box_targets, describe_box
from weakseg.data.detection import box_target
from weakseg.data.voc import VOCDataset

DIFFICULT_IGNORE, DIFFICULT_INCLUDE = "ignore", "include"
DIFFICULT_POLICIES = (DIFFICULT_IGNORE, DIFFICULT_INCLUDE)


@dataclass(frozen=True)
class ImageBoxes:
    """The boxes of one image to explain (0-based xyxy pixel edges) and the difficult ones left out."""

    source: Path  # the XML file
    height: int
    width: int
    boxes: np.ndarray  # float32 [B, 4]
    names: tuple[str, ...]  # class names [B]
    class_ids: np.ndarray  # int64 [B]: label values (1 + index in the dataset's classes)
    detector_ids: np.ndarray  # int64 [B]: the detector's class ids (1 + index in its classes); = class_ids without one
    ignored: np.ndarray  # float32 [D, 4]: difficult boxes left out (their free pixels are ignored)
    ignored_names: tuple[str, ...]


def image_boxes(
    dataset: VOCDataset,
    image_id: str,
    detector_classes: Sequence[str] | None = None,
    difficult: str = DIFFICULT_IGNORE,
) -> ImageBoxes:
    """The boxes of `image_id` from Annotations/<id>.xml, checked (module docstring); BoxError names the file and
    box. Without `detector_classes` (the baselines) the detector ids are the dataset's."""
    if difficult not in DIFFICULT_POLICIES:
        raise ValueError(f"difficult must be one of {DIFFICULT_POLICIES}, got {difficult!r}")
    target = box_target(dataset, image_id)  # DataError naming the file: bad XML, size, unknown class, empty box
    xml = dataset.annotation_path(image_id)
    height, width = dataset.image_size(image_id)
    detector_index = {name: i + 1 for i, name in enumerate(detector_classes or dataset.classes)}
    kept: list[tuple[list[float], str, int]] = []
    ignored: list[tuple[list[float], str, int]] = []
    rows = zip(target.boxes.tolist(), target.labels.tolist(), target.difficult.tolist(), strict=True)
    for i, (box, label, hard) in enumerate(rows):
        name = dataset.classes[label - 1]
        where = f"{xml}: {describe_box(i, box)} of {name!r}"
        if name not in detector_index:
            raise BoxError(f"{where}: class {name!r} is not in the detector ({', '.join(detector_index)})")
        try:
            check_box_targets([box], [detector_index[name]], height, width)
        except BoxError as e:
            raise BoxError(f"{where}: {str(e).split(': ', 1)[-1]}") from e
        (ignored if hard and difficult == DIFFICULT_IGNORE else kept).append((box, name, label))
    if not kept:
        why = f" (its {len(ignored)} boxes are all difficult; --difficult include uses them)" if ignored else ""
        raise BoxError(f"{xml}: the image has no boxes{why}")
    return ImageBoxes(
        source=xml,
        height=height,
        width=width,
        boxes=np.array([b for b, _, _ in kept], dtype=np.float32).reshape(-1, 4),
        names=tuple(n for _, n, _ in kept),
        class_ids=np.array([c for _, _, c in kept], dtype=np.int64),
        detector_ids=np.array([detector_index[n] for _, n, _ in kept], dtype=np.int64),
        ignored=np.array([b for b, _, _ in ignored], dtype=np.float32).reshape(-1, 4),
        ignored_names=tuple(n for _, n, _ in ignored),
    )
