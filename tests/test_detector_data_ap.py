"""Detector data and box AP (issue 14 item 1): VOC box conversion and flips by hand, difficult objects and box-less
images in a split, and COCO AP (the real pycocotools) and VOC AP50 against cases worked out by hand."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from weakseg.data.annotations import ObjectBox, parse_voc_xml, write_voc_xml
from weakseg.data.detection import (
    DetectionImages,
    detection_split_path,
    flip_boxes,
    open_detection_split,
    voc_to_xyxy,
)
from weakseg.errors import DataError
from weakseg.metrics.box_ap import ImageBoxes, box_ap_report, box_iou, voc_ap50_class


@pytest.fixture(scope="module")
def det_synth(tmp_path_factory):
    """8 train / 4 val images at 64 px, 3 classes (read only; tests that edit it copy it)."""
    from weakseg.data.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("detsynth") / "VOC2012"
    generate(SynthConfig(seed=5, train=8, val=4, ood=0, classes=3, size=64), out, progress=False)
    return out


def test_voc_boxes_convert_to_zero_based_xyxy_by_hand():
    # 1-based inclusive xmin..xmax spans [xmin - 1, xmax): the whole 64 x 48 image is (0, 0, 64, 48)
    assert voc_to_xyxy(ObjectBox("a", 1, 1, 64, 48), 64, 48) == (0.0, 0.0, 64.0, 48.0)
    # columns 10..19 (1-based) are 0-based 9..18, i.e. [9, 19): width 10 = 19 - 10 + 1
    assert voc_to_xyxy(ObjectBox("a", 10, 20, 19, 29), 64, 48) == (9.0, 19.0, 19.0, 29.0)
    # one pixel: (5, 5, 5, 5) 1-based is the 0-based pixel 4, [4, 5)
    assert voc_to_xyxy(ObjectBox("a", 5, 5, 5, 5), 64, 48) == (4.0, 4.0, 5.0, 5.0)
    # a 0 minimum (0-based exporters, tolerated by the parser) is clamped to the image edge
    assert voc_to_xyxy(ObjectBox("a", 0, 0, 7, 9), 64, 48) == (0.0, 0.0, 7.0, 9.0)


def test_synthetic_boxes_are_tight_around_the_visible_pixels(det_synth):
    """synth writes 1-based boxes around each instance's visible pixels (synth.json), so the converted box is the
    pixel extent of those pixels: x1 = first column, x2 = last column + 1."""
    import json

    record = json.loads((det_synth / "synth.json").read_text())
    split = open_detection_split(det_synth, "train", training=True)
    images = DetectionImages(split)
    image_id = split.ids[0]
    target = images.target(image_id)
    objects = record["images"][image_id]["objects"]
    assert len(objects) == len(target.boxes)
    for obj, box in zip(objects, target.boxes.tolist(), strict=True):
        xmin, ymin, xmax, ymax = obj["bbox"]
        assert box == [xmin - 1, ymin - 1, xmax, ymax]
        assert box[2] - box[0] == xmax - xmin + 1


def test_horizontal_flip_moves_boxes_with_the_pixels():
    assert flip_boxes(torch.tensor([[10.0, 5.0, 30.0, 40.0]]), 100).tolist() == [[70.0, 5.0, 90.0, 40.0]]
    image = torch.zeros(3, 20, 50)
    image[:, 4:9, 10:17] = 1.0  # pixels 10..16 -> box [10, 17)
    flipped = image.flip(-1)
    cols = torch.nonzero(flipped[0].any(0)).flatten()
    box = flip_boxes(torch.tensor([[10.0, 4.0, 17.0, 9.0]]), 50)[0]
    assert (box[0].item(), box[2].item()) == (cols.min().item(), cols.max().item() + 1) == (33.0, 40.0)


def test_training_samples_flip_about_half_the_time_and_reproducibly(det_synth):
    split = open_detection_split(det_synth, "train", training=True)
    images = DetectionImages(split)
    image_id = split.ids[0]
    plain = images.target(image_id).training()["boxes"]
    width = images.image(image_id).shape[-1]
    flips = 0
    for seed in range(40):
        image, target = images.training_sample(image_id, np.random.default_rng(seed))
        again, target2 = images.training_sample(image_id, np.random.default_rng(seed))
        assert torch.equal(image, again) and torch.equal(target["boxes"], target2["boxes"])
        if torch.equal(image, images.image(image_id).flip(-1)):
            flips += 1
            assert torch.equal(target["boxes"], flip_boxes(plain, width))
        else:
            assert torch.equal(image, images.image(image_id)) and torch.equal(target["boxes"], plain)
    assert 10 <= flips <= 30


def _rewrite(root, image_id, edit):
    path = root / "Annotations" / f"{image_id}.xml"
    ann = parse_voc_xml(path)
    ann.objects = edit(ann.objects)
    path.write_text(write_voc_xml(ann))


def test_difficult_objects_leave_training_and_box_less_images_are_skipped(det_synth, tmp_path):
    root = tmp_path / "VOC2012"
    shutil.copytree(det_synth, root)
    ids = (root / "ImageSets" / "Main" / "train.txt").read_text().split()
    several = next(i for i in ids[2:] if len(parse_voc_xml(root / "Annotations" / f"{i}.xml").objects) >= 2)
    _rewrite(root, ids[0], lambda objs: [])  # no box at all
    _rewrite(root, ids[1], lambda objs: [ObjectBox(**{**o.__dict__, "difficult": True}) for o in objs])
    _rewrite(root, several, lambda objs: [ObjectBox(**{**objs[0].__dict__, "difficult": True}), *objs[1:]])
    train = open_detection_split(root, "train", training=True)
    assert train.skipped == ids[:2] and train.ids == ids[2:]
    images = DetectionImages(train)
    target = images.target(several)
    kept = images.training_sample(several, np.random.default_rng(0))[1]
    assert (
        target.difficult.tolist()[0] and not target.difficult[1:].any() and len(kept["boxes"]) == len(target.boxes) - 1
    )
    assert len(kept["labels"]) == len(kept["boxes"])
    evaluation = open_detection_split(root, "train", training=False)  # evaluation keeps every image and object
    assert evaluation.ids == ids and DetectionImages(evaluation).target(ids[1]).difficult.all()


def test_splits_come_from_image_sets_main_first(det_synth, tmp_path):
    assert detection_split_path(det_synth, "val") == det_synth / "ImageSets" / "Main" / "val.txt"
    root = tmp_path / "VOC2012"
    shutil.copytree(det_synth, root)
    shutil.rmtree(root / "ImageSets" / "Main")
    assert detection_split_path(root, "val") == root / "ImageSets" / "Segmentation" / "val.txt"
    assert len(open_detection_split(root, "val", training=False).ids) == 4


def test_a_split_without_any_box_is_an_error(det_synth, tmp_path):
    root = tmp_path / "VOC2012"
    shutil.copytree(det_synth, root)
    for image_id in (root / "ImageSets" / "Main" / "val.txt").read_text().split():
        _rewrite(root, image_id, lambda objs: [])
    with pytest.raises(DataError, match="no image of split 'val' has a"):
        open_detection_split(root, "val", training=True)


# ---------------------------------------------------------------------------------------------- AP by hand


def _image(gt, gt_labels, boxes, labels, scores, difficult=None):
    gt = np.asarray(gt, float).reshape(-1, 4)
    return ImageBoxes(
        gt,
        np.asarray(gt_labels, int),
        np.zeros(len(gt), bool) if difficult is None else np.asarray(difficult, bool),
        np.asarray(boxes, float).reshape(-1, 4),
        np.asarray(labels, int),
        np.asarray(scores, float),
    )


CLASSES = ["cat", "dog"]


def test_perfect_predictions_score_one():
    images = [
        _image([[10, 10, 50, 60], [60, 5, 90, 40]], [1, 2], [[10, 10, 50, 60], [60, 5, 90, 40]], [1, 2], [0.9, 0.8]),
        _image([[0, 0, 30, 30]], [2], [[0, 0, 30, 30]], [2], [0.7]),
    ]
    report = box_ap_report(images, CLASSES)
    assert [report[k] for k in ("coco_ap", "coco_ap50", "coco_ap75")] == pytest.approx([1.0, 1.0, 1.0])
    assert report["voc_map50"] == 1.0 and report["voc_ap50_per_class"] == {"cat": 1.0, "dog": 1.0}
    assert report["coco_ap50_per_class"] == pytest.approx({"cat": 1.0, "dog": 1.0})  # a mean of 101 ones


def test_a_shifted_box_counts_at_ap50_not_at_ap75():
    # ground truth [0, 100) x [0, 100); the prediction is shifted 20 px: IoU = 80 * 100 / (2 * 10000 - 8000) = 2/3
    images = [_image([[0, 0, 100, 100]], [1], [[20, 0, 120, 100]], [1], [0.9])]
    assert box_iou(images[0].boxes, images[0].gt_boxes)[0, 0] == pytest.approx(2 / 3)
    report = box_ap_report(images, ["cat"])
    assert report["coco_ap50"] == pytest.approx(1.0) and report["coco_ap75"] == 0.0  # pycocotools sums 101 floats
    # matched at IoU thresholds 0.50, 0.55, 0.60, 0.65 of the ten: AP@[.5:.95] = 4/10
    assert report["coco_ap"] == pytest.approx(0.4)
    assert report["voc_ap50_per_class"]["cat"] == 1.0


def test_a_false_positive_between_two_hits_by_hand():
    # two dogs, detections in score order: hit, miss, hit -> recall 1/2, 1/2, 1; precision 1, 1/2, 2/3
    images = [
        _image([[0, 0, 40, 40]], [2], [[0, 0, 40, 40], [200, 200, 240, 240]], [2, 2], [0.9, 0.8]),
        _image([[10, 10, 50, 50]], [2], [[10, 10, 50, 50]], [2], [0.7]),
    ]
    report = box_ap_report(images, CLASSES)
    # VOC: area under the precision envelope = 1/2 * 1 + 1/2 * 2/3
    assert report["voc_ap50_per_class"]["dog"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    # COCO: 101 recall points, 51 of them (0.00 .. 0.50) at precision 1 and 50 at 2/3
    assert report["coco_ap50"] == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert report["voc_ap50_per_class"]["cat"] is None and report["coco_ap50_per_class"]["cat"] is None


def test_detections_on_difficult_objects_are_ignored_and_duplicates_are_false():
    gt = [[0, 0, 40, 40], [100, 100, 140, 140]]
    hit, on_difficult = [0, 0, 40, 40], [100, 100, 140, 140]
    ignored = _image(gt, [1, 1], [on_difficult, hit], [1, 1], [0.95, 0.9], difficult=[False, True])
    report = box_ap_report([ignored], ["cat"])
    assert report["voc_ap50_per_class"]["cat"] == 1.0 and report["coco_ap50"] == pytest.approx(1.0)
    assert report["objects"] == 1 and report["difficult"] == 1
    counted = _image(gt, [1, 1], [on_difficult, hit], [1, 1], [0.95, 0.9], difficult=[False, False])
    assert voc_ap50_class([counted], 1) == 1.0  # both are real objects now: two hits
    # a duplicate of a matched box is a false positive: hit (1, 1/1), duplicate (1, 1/2) -> AP 1 (envelope)
    duplicate = _image([[0, 0, 40, 40]], [1], [hit, hit], [1, 1], [0.9, 0.8])
    assert voc_ap50_class([duplicate], 1) == 1.0
    # ranked first, the duplicate's partner miss lowers AP: miss (0, 0), hit (1/1, 1/2) -> 1/2
    miss_first = _image([[0, 0, 40, 40]], [1], [[300, 300, 340, 340], hit], [1, 1], [0.9, 0.8])
    assert voc_ap50_class([miss_first], 1) == pytest.approx(0.5)
    assert box_ap_report([miss_first], ["cat"])["coco_ap50"] == pytest.approx(0.5)


def test_no_detections_score_zero_and_no_ground_truth_scores_none():
    report = box_ap_report([_image([[0, 0, 10, 10]], [1], [], [], [])], CLASSES)
    assert report["coco_ap"] == 0.0 and report["voc_ap50_per_class"] == {"cat": 0.0, "dog": None}
    report = box_ap_report([_image([], [], [[0, 0, 10, 10]], [1], [0.5])], CLASSES)
    assert report["coco_ap"] is None and report["voc_map50"] is None
