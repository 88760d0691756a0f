"""Confusion-matrix metrics, seed threshold sweeps and label-PNG evaluation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from weakseg.errors import DataError
from weakseg.io import atomic_save_png
from weakseg.metrics.confusion import (
    ConfusionAccumulator,
    confusion_matrix,
    iou_per_class,
    miou,
    pixel_accuracy,
    precision_recall_f1,
)
from weakseg.metrics.seeds import (
    DEFAULT_THRESHOLDS,
    SeedSweep,
    evaluate_labels,
    evaluate_seeds,
    evaluate_seeds_refined,
)

# Hand-worked 3-class case (11 pixels).
GT = np.array([[0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2]], dtype=np.uint8)
PRED = np.array([[0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 1]], dtype=np.uint8)
# rows gt, cols pred:
#   gt0: 3 correct, 1 -> class 1
#   gt1: 2 correct, 1 -> class 2
#   gt2: 2 correct, 1 -> class 0, 1 -> class 1
CM = np.array([[3, 1, 0], [0, 2, 1], [1, 1, 2]])


def test_hand_worked_confusion_matrix_and_scores():
    cm = confusion_matrix(GT, PRED, 3)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, CM)
    # IoU = TP / (TP + FP + FN): class 0: 3/(3+1+1); class 1: 2/(2+2+1); class 2: 2/(2+1+2)
    np.testing.assert_allclose(iou_per_class(cm), [3 / 5, 2 / 5, 2 / 5])
    assert miou(cm) == pytest.approx((0.6 + 0.4 + 0.4) / 3)
    assert pixel_accuracy(cm) == pytest.approx(7 / 11)
    prf = precision_recall_f1(cm)
    # class 1: P = 2/4, R = 2/3; class 2: P = 2/3, R = 2/4; F1 = 2TP/(2TP+FP+FN) = 4/7 for both
    np.testing.assert_allclose(prf.precision, [3 / 4, 2 / 4, 2 / 3])
    np.testing.assert_allclose(prf.recall, [3 / 4, 2 / 3, 2 / 4])
    np.testing.assert_allclose(prf.f1[1:], [4 / 7, 4 / 7])
    p, r = 0.5, 2 / 3
    assert prf.f1[1] == pytest.approx(2 * p * r / (p + r))
    # means over foreground classes 1..2 only (background's 3/4 excluded)
    assert prf.mean_precision == pytest.approx((2 / 4 + 2 / 3) / 2)
    assert prf.mean_recall == pytest.approx((2 / 3 + 2 / 4) / 2)
    assert prf.mean_f1 == pytest.approx(4 / 7)


def test_ignore_handling():
    gt = np.array([0, 1, 255, 255, 1, 2], dtype=np.uint8)
    pred = np.array([0, 255, 1, 255, 1, 255], dtype=np.uint8)
    # gt 255 never counts; pred 255 excluded by default
    np.testing.assert_array_equal(confusion_matrix(gt, pred, 3), [[1, 0, 0], [0, 1, 0], [0, 0, 0]])
    # strict reading: pred 255 counts as background
    np.testing.assert_array_equal(
        confusion_matrix(gt, pred, 3, ignore_pred=False), [[1, 0, 0], [1, 1, 0], [1, 0, 0]]
    )
    with pytest.raises(ValueError, match="ground truth holds value 3"):
        confusion_matrix(np.array([3]), np.array([0]), 3)
    with pytest.raises(ValueError, match="prediction holds value 7"):
        confusion_matrix(np.array([0]), np.array([7]), 3)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 3)


def test_absent_classes_are_excluded_from_means_not_zero():
    cm = np.zeros((4, 4), dtype=np.int64)
    cm[:3, :3] = CM  # class 3 absent from both gt and prediction
    iou = iou_per_class(cm)
    assert math.isnan(iou[3])
    assert miou(cm) == pytest.approx((0.6 + 0.4 + 0.4) / 3)
    prf = precision_recall_f1(cm)
    assert math.isnan(prf.precision[3]) and math.isnan(prf.f1[3])
    assert prf.mean_f1 == pytest.approx(4 / 7)
    # a class in gt but never predicted scores 0 (counted), not nan
    cm2 = np.array([[5, 0], [3, 0]])
    assert iou_per_class(cm2)[1] == 0.0
    assert precision_recall_f1(cm2).precision[1] == 0.0
    assert precision_recall_f1(cm2).mean_f1 == 0.0
    empty = np.zeros((3, 3), dtype=np.int64)
    assert math.isnan(miou(empty)) and math.isnan(pixel_accuracy(empty))


def test_accumulation_equals_one_big_matrix():
    rng = np.random.default_rng(0)
    gts = [rng.choice([0, 1, 2, 3, 255], size=(7, 9)).astype(np.uint8) for _ in range(6)]
    preds = [rng.choice([0, 1, 2, 3, 255], size=(7, 9)).astype(np.uint8) for _ in range(6)]
    a, b = ConfusionAccumulator(4), ConfusionAccumulator(4)
    for i, (g, p) in enumerate(zip(gts, preds)):
        (a if i % 2 else b).add(g, p)
    big = confusion_matrix(np.concatenate(gts), np.concatenate(preds), 4)
    total = a.merge(b)
    assert total is a
    np.testing.assert_array_equal(total.matrix, big)
    assert big.sum() == sum(((g != 255) & (p != 255)).sum() for g, p in zip(gts, preds))
    with pytest.raises(ValueError):
        a.merge(ConfusionAccumulator(5))


# ---- seeds ----


def _brute_force(items, n, thresholds):
    """Per threshold: argmax over [t, maps] (t padded in the maps' dtype) mapped to (0, class_ids)."""
    cms = []
    for t in thresholds:
        acc = ConfusionAccumulator(n)
        for maps, ids, gt in items:
            padded = np.concatenate([np.full((1, *maps.shape[1:]), t, dtype=maps.dtype), maps])
            keys = np.concatenate([[0], ids])
            acc.add(gt, keys[np.argmax(padded, axis=0)])
        cms.append(acc.matrix)
    return np.stack(cms)


def test_vectorised_sweep_equals_argmax_with_threshold_ties_to_background():
    rng = np.random.default_rng(1)
    n = 5
    items = []
    for k in (0, 1, 2, 3):
        ids = np.sort(rng.choice(np.arange(1, n), size=k, replace=False))
        # scores on the 0.05 grid, so many pixels tie exactly with a threshold
        maps = (rng.integers(0, 21, size=(k, 6, 8)) * 0.05).astype(np.float32)
        gt = rng.choice([0, 1, 2, 3, 4, 255], size=(6, 8)).astype(np.uint8)
        items.append((maps, ids, gt))
    sweep = SeedSweep(n)
    for it in items:
        sweep.add(*it)
    assert len(DEFAULT_THRESHOLDS) == 20 and DEFAULT_THRESHOLDS[0] == 0.0 and DEFAULT_THRESHOLDS[-1] == 0.95
    np.testing.assert_array_equal(sweep.matrices(), _brute_force(items, n, DEFAULT_THRESHOLDS))
    # a score equal to the threshold is background
    tie = SeedSweep(2, [0.5])
    tie.add(np.array([[[0.5, 0.75]]], dtype=np.float32), np.array([1]), np.array([[1, 1]], dtype=np.uint8))
    np.testing.assert_array_equal(tie.matrices()[0], [[0, 0], [1, 1]])


def test_best_threshold_on_a_hand_case():
    # gt: two background pixels then two of class 2 ("cat"); the cat map rises left to right
    gt = np.array([[0, 0, 2, 2]], dtype=np.uint8)
    maps = np.array([[[0.1, 0.3, 0.5, 0.7]]], dtype=np.float32)
    # t=0.0 -> [2,2,2,2]: IoU bg 0, cat 2/4 -> 0.25
    # t=0.2 -> [0,2,2,2]: bg 1/2, cat 2/3
    # t=0.4 -> [0,0,2,2]: perfect
    # t=0.6 -> [0,0,0,2]: bg 2/3, cat 1/2
    report = evaluate_seeds([(maps, np.array([2]), gt)], ["dog", "cat"], thresholds=[0.6, 0.0, 0.4, 0.2])
    assert report.threshold == 0.4
    assert report.miou == pytest.approx(1.0)
    assert [t for t, _ in report.curve] == [0.0, 0.2, 0.4, 0.6]
    np.testing.assert_allclose([m for _, m in report.curve], [0.25, (0.5 + 2 / 3) / 2, 1.0, (2 / 3 + 0.5) / 2])
    assert report.per_class["background"] == 1.0 and report.per_class["cat"] == 1.0
    assert math.isnan(report.per_class["dog"])  # absent from both: excluded
    assert report.precision == report.recall == report.f1 == 1.0
    js = report.to_json()
    assert set(js) == {"miou", "threshold", "precision", "recall", "f1", "per_class", "averaging", "curve"}
    assert js["averaging"] == "precision/recall/F1 are per-class values averaged over foreground classes"
    assert js["per_class"]["dog"] is None
    json.dumps(js, allow_nan=False)


def test_best_threshold_over_two_images_and_refined_path():
    gt1 = np.array([[0, 1, 1, 0]], dtype=np.uint8)
    m1 = np.array([[[0.2, 0.9, 0.8, 0.1]]], dtype=np.float32)
    gt2 = np.array([[0, 0, 2, 255]], dtype=np.uint8)
    m2 = np.array([[[0.0, 0.0, 0.0, 0.0]], [[0.25, 0.1, 0.6, 0.9]]], dtype=np.float32)
    items = [(m1, np.array([1]), gt1), (m2, np.array([1, 2]), gt2)]
    # any t in [0.25, 0.6) labels every counted pixel right; 0.3 is the first such on the sweep
    report = evaluate_seeds(items, ["a", "b"], thresholds=[0.1, 0.2, 0.3, 0.5, 0.7])
    assert report.threshold == 0.3 and report.miou == 1.0
    assert report.confusion.sum() == 7
    # the slow path with an identity refine gives the same report
    slow = evaluate_seeds_refined(
        [(np.zeros((1, 4, 3), np.uint8), m, ids, g) for m, ids, g in items],
        ["a", "b"],
        refine=lambda image, label: label,
        thresholds=[0.1, 0.2, 0.3, 0.5, 0.7],
    )
    assert slow.curve == report.curve and slow.threshold == report.threshold
    # a refine that leaves everything unsure scores nothing -> error
    with pytest.raises(ValueError, match="no labelled"):
        evaluate_seeds_refined(
            [(None, m1, np.array([1]), gt1)], ["a"], refine=lambda im, lb: np.full_like(lb, 255), thresholds=[0.5]
        )


def test_seed_input_errors():
    with pytest.raises(ValueError, match="ground truth"):
        evaluate_seeds([(np.zeros((1, 2, 2)), np.array([1]), np.zeros((3, 3), np.uint8))], ["a"])
    with pytest.raises(ValueError, match="class_ids"):
        evaluate_seeds([(np.zeros((2, 2, 2)), np.array([1]), np.zeros((2, 2), np.uint8))], ["a"])
    with pytest.raises(ValueError, match="class id"):
        evaluate_seeds([(np.zeros((1, 2, 2)), np.array([3]), np.zeros((2, 2), np.uint8))], ["a"])


def test_evaluate_labels_arrays_and_pngs(tmp_path):
    gt = np.array([[0, 0, 1, 1], [0, 2, 2, 255]], dtype=np.uint8)
    label = np.array([[0, 255, 1, 1], [255, 2, 1, 255]], dtype=np.uint8)
    # 7 gt-valid pixels, 2 of them left 255 -> ignored_fraction 2/7
    # scored pixels: (0,0) (1,1) (1,1) (2,2) (2,1) -> IoU bg 1, class1 2/3, class2 1/2
    report = evaluate_labels([(gt, label)], ["a", "b"])
    assert report.ignored_fraction == pytest.approx(2 / 7)
    assert report.miou == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)
    assert report.per_class == pytest.approx({"background": 1.0, "a": 2 / 3, "b": 0.5})
    assert report.num_images == 1 and report.pixel_accuracy == pytest.approx(4 / 5)
    assert report.to_json()["ignored_fraction"] == pytest.approx(2 / 7)

    atomic_save_png(tmp_path / "gt.png", gt)
    atomic_save_png(tmp_path / "label.png", label)
    from_files = evaluate_labels([(tmp_path / "gt.png", str(tmp_path / "label.png"))], ["a", "b"])
    assert from_files.miou == report.miou
    np.testing.assert_array_equal(from_files.confusion, report.confusion)

    atomic_save_png(tmp_path / "bad.png", np.full((2, 4), 9, np.uint8))
    with pytest.raises(DataError, match="bad.png"):
        evaluate_labels([(tmp_path / "gt.png", tmp_path / "bad.png")], ["a", "b"])
