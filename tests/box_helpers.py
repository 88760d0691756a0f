"""A detector BBAM finds positives for, from a briefly trained one: its box predictor fitted to a dataset's boxes
(tests/bbam_helpers.fit_box_heads) and saved in the detector checkpoint format. Shared by tests/test_box_pseudo.py
and benchmarks/bbam_throughput.py."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from tests.bbam_helpers import fit_box_heads


def fitted_detector(run: str | os.PathLike, data: str | os.PathLike, path: str | os.PathLike, steps: int) -> Path:
    """Load the detector `run`, fit its box predictor for `steps` steps to the train split of `data` (every box),
    save it to `path` (.safetensors) and return that path."""
    from weakseg.data.augment import to_tensor
    from weakseg.data.box_labels import image_boxes
    from weakseg.data.voc import VOCDataset
    from weakseg.models.detector import load_detector, save_detector

    model, config = load_detector(run)
    dataset = VOCDataset(data, "train")
    targets = [image_boxes(dataset, i, config.classes) for i in dataset.ids]
    fit_box_heads(
        model,
        [to_tensor(dataset.image(i)) for i in dataset.ids],
        [torch.from_numpy(t.boxes) for t in targets],
        [torch.from_numpy(t.detector_ids) for t in targets],
        steps=steps,
    )
    save_detector(path, model, config)
    return Path(path)
