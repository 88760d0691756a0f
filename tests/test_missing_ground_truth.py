"""Evaluation and reports on a split where a ground-truth mask is missing: a DataError naming the file.

Found by mypy (issue 16 item 7): `evaluate_seed_folder` read a `VOCDataset.split` attribute that does not exist
(AttributeError instead of its own error), and `VOCDataset.mask` returns None for an image without a mask,
which `eval labels`, the overlay rows and the demo report passed on as if it were an array.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from cli.main import main
from weakseg.data.voc import VOCDataset
from weakseg.errors import DataError
from weakseg.io import atomic_save_npz
from weakseg.report.seed_eval import evaluate_seed_folder, overlay_rows


@pytest.fixture
def gapped(tiny_synth: Path, tmp_path: Path) -> tuple[VOCDataset, str]:
    """A copy of the tiny benchmark whose first train image has lost its ground-truth mask."""
    root = tmp_path / "VOC2012"
    shutil.copytree(tiny_synth, root)
    dataset = VOCDataset(root, "train")
    gone = dataset.ids[0]
    dataset.mask_path(gone).unlink()
    return dataset, gone


def _write_maps(dataset: VOCDataset, ids: list[str], folder: Path) -> None:
    for i in ids:
        h, w = dataset.image(i).shape[:2]
        atomic_save_npz(folder / f"{i}.npz", maps=np.full((1, h, w), 0.5, np.float16), class_ids=np.array([1]))


def test_require_mask_names_the_missing_file(gapped):
    dataset, gone = gapped
    with pytest.raises(DataError, match=rf"SegmentationClass/{gone}\.png: ground-truth mask not found"):
        dataset.require_mask(gone)
    other = dataset.ids[1]
    assert np.array_equal(dataset.require_mask(other), dataset.mask(other))


def test_seed_folder_without_maps_names_the_split_file(tiny_synth, tmp_path):
    dataset = VOCDataset(tiny_synth, "train")
    empty = tmp_path / "maps"
    empty.mkdir()
    with pytest.raises(DataError, match=r"no maps for any image of the split .*ImageSets/Segmentation/train\.txt"):
        evaluate_seed_folder(dataset, empty, progress=False)


def test_overlay_rows_refuse_an_image_without_mask(gapped, tmp_path):
    dataset, gone = gapped
    folder = tmp_path / "maps"
    folder.mkdir()
    _write_maps(dataset, dataset.ids[:2], folder)
    assert len(overlay_rows(dataset, folder, [dataset.ids[1]], 0.3)[0]) == 4
    with pytest.raises(DataError, match=rf"SegmentationClass/{gone}\.png: ground-truth mask not found"):
        overlay_rows(dataset, folder, [gone], 0.3)


def test_eval_labels_cli_names_the_missing_mask(gapped, tmp_path, capsys):
    dataset, gone = gapped
    labels = tmp_path / "pseudo" / "labels"
    labels.mkdir(parents=True)
    for i in dataset.ids[:3]:
        src = dataset.mask_path(i) if i != gone else dataset.mask_path(dataset.ids[1])
        shutil.copy(src, labels / f"{i}.png")
    code = main(["eval", "labels", "--data", str(dataset.root), "--split", "train", "--labels", str(labels.parent)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and f"SegmentationClass/{gone}.png: ground-truth mask not found" in err[0]
