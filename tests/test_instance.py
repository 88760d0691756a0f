"""Mask R-CNN (issue 14 item 4): the ignore-aware mask loss by hand and against torchvision's, mask AP at 0.25 / 0.5 /
0.7 and ABO on hand-made cases, instance targets from the true masks and from a pseudo-label folder, `weakseg train
instance` (gt and pseudo) with exact resume, `weakseg eval instance` (model and label folder), the checkpoint, and
bad input as one-line exit-2 errors."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models.detection.roi_heads import RoIHeads, maskrcnn_loss

from cli.main import main
from training.detector import fit_rcnn
from training.instance import InstanceJob, prepare_instance
from weakseg.data.instances import open_instance_split
from weakseg.data.voc import VOCDataset
from weakseg.engine import TrainConfig
from weakseg.metrics.box_ap import run_cocoeval
from weakseg.metrics.mask_ap import IOU_THRESHOLDS, mask_ap_report, score_image
from weakseg.models.checkpoint import load_resume, read_metadata
from weakseg.models.instance import (
    InstanceConfig,
    build_instance_model,
    load_instance_model,
    masked_mask_loss,
    save_instance_model,
)

CPU = torch.device("cpu")
SMALL = [
    "--min-size",
    "64",
    "--max-size",
    "128",
    "--box-batch-size-per-image",
    "32",
    "--box-head-dim",
    "64",
    "--mask-head-dim",
    "32",
    "--mask-head-layers",
    "2",
    "--batch-size",
    "4",
]
TINY = InstanceConfig(
    classes=("a", "b"),
    min_size=64,
    max_size=128,
    box_batch_size_per_image=32,
    box_head_dim=64,
    mask_head_dim=32,
    mask_head_layers=2,
)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def inst_synth(tmp_path_factory):
    """8 train / 4 val images at 64 px, 3 classes, with SegmentationObject PNGs and XML boxes."""
    from weakseg.data.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("instsynth") / "VOC2012"
    generate(SynthConfig(seed=5, train=8, val=4, ood=0, classes=3, size=64), out, progress=False)
    return out


def write_pseudo_folder(data, out, split="train", filled_boxes=False, band=False):
    """A pseudo-label folder in the documented layout from the true instances (or their filled boxes), with an
    optional 1-pixel ignore band (255) around every instance."""
    dataset = VOCDataset(data, split)
    (out / "instances").mkdir(parents=True)
    for image_id in dataset.ids:
        png = dataset.instance_mask(image_id)
        objects = dataset.annotation(image_id).objects
        index = np.zeros_like(png)
        entries = []
        for k, obj in enumerate(objects, 1):
            box = [obj.xmin - 1, obj.ymin - 1, obj.xmax, obj.ymax]
            if filled_boxes:
                index[box[1] : box[3], box[0] : box[2]] = k
            else:
                index[png == k] = k
            entries.append({"index": k, "class": obj.name, "label": dataset.classes.index(obj.name) + 1, "box": box})
        if band:
            edge = np.zeros_like(index, dtype=bool)
            edge[:-1] |= index[:-1] != index[1:]
            edge[:, :-1] |= index[:, :-1] != index[:, 1:]
            index[edge] = 255
        Image.fromarray(index, mode="L").save(out / "instances" / f"{image_id}.png")
        (out / "instances" / f"{image_id}.json").write_text(json.dumps({"image": image_id, "instances": entries}))
    (out / "manifest.json").write_text(json.dumps({"data": str(data), "split": split, "method": "hand"}))
    return out


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("weakseg: error: "), err
    return err[0]


# ----------------------------------------------------------------------------- the masked mask loss


def _bce(x: float, t: float) -> float:
    return math.log1p(math.exp(x)) - t * x  # BCE with logits: softplus(x) - t x


def test_masked_mask_loss_by_hand_on_exact_cells():
    # an 8x8 target and the RoI [-0.5, -0.5, 7.5, 7.5] at M = 4: RoIAlign samples each cell's 2x2 pixels exactly
    # (bins of 2, 2 samples each at integer coordinates), so a cell's fg share and valid share are pixel counts / 4
    mask = np.zeros((8, 8), np.uint8)
    mask[0:2, 0:2] = [[1, 1], [1, 255]]  # cell (0,0): 3 fg, 1 ignored -> weight 3/4, target 1
    mask[0:2, 2:4] = [[1, 0], [0, 0]]  # cell (0,1): weight 1, target 1/4
    mask[2:4, 2:4] = 255  # cell (1,1): all ignored -> weight 0
    mask[4:6, 4:6] = [[1, 0], [255, 255]]  # cell (2,2): weight 1/2, target 1/2
    logits = torch.linspace(-2, 2, 2 * 16).reshape(1, 2, 4, 4)  # two classes; the instance is class 1
    loss = masked_mask_loss(
        logits,
        [torch.tensor([[-0.5, -0.5, 7.5, 7.5]])],
        [torch.from_numpy(mask)[None]],
        [torch.tensor([1])],
        [torch.tensor([0])],
    )
    x = logits[0, 1].tolist()
    weight = np.ones((4, 4))
    target = np.zeros((4, 4))
    weight[0, 0], target[0, 0] = 0.75, 1.0
    target[0, 1] = 0.25
    weight[1, 1] = 0.0
    weight[2, 2], target[2, 2] = 0.5, 0.5
    want = sum(weight[i, j] * _bce(x[i][j], target[i, j]) for i in range(4) for j in range(4)) / weight.sum()
    assert float(loss) == pytest.approx(want, rel=1e-5)


def _random_case(seed: int, ignore: bool):
    g = torch.Generator().manual_seed(seed)
    masks, boxes, labels, matched = [], [], [], []
    for n in (2, 3):  # two images with 2 and 3 instances
        m = (torch.rand(n, 40, 48, generator=g) > 0.5).to(torch.uint8)
        if ignore:
            m[:, 10:20, 5:30] = 255
        masks.append(m)
        xy = torch.rand(5, 2, generator=g) * 15  # inside the 48 x 40 image, as the RPN clips proposals
        boxes.append(torch.cat([xy, xy + 8 + torch.rand(5, 2, generator=g) * 16], 1))
        labels.append(torch.randint(1, 3, (n,), generator=g))
        matched.append(torch.randint(0, n, (5,), generator=g))
    logits = torch.randn(10, 3, 28, 28, generator=g, requires_grad=True)
    return logits, boxes, masks, labels, matched


def test_without_ignore_the_loss_is_torchvisions_and_ignored_cells_get_no_gradient():
    logits, boxes, masks, labels, matched = _random_case(0, ignore=False)
    ours = masked_mask_loss(logits, boxes, masks, labels, matched)
    theirs = maskrcnn_loss(logits, boxes, masks, labels, matched)
    assert float(ours.detach()) == pytest.approx(float(theirs.detach()), rel=1e-6)
    (g_ours,) = torch.autograd.grad(ours, logits)
    (g_theirs,) = torch.autograd.grad(theirs, logits)
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-4, atol=1e-9)

    # with an ignored block: the loss changes, and cells whose every sample is ignored get no gradient at all
    logits, boxes, masks, labels, matched = _random_case(0, ignore=True)
    ignored = masked_mask_loss(logits, boxes, masks, labels, matched)
    assert abs(float(ignored) - float(theirs)) > 1e-3
    (grad,) = torch.autograd.grad(ignored, logits)
    # the valid share of each cell, projected as the loss projects it
    from torchvision.ops import roi_align

    for i, (m, b, idx) in enumerate(zip(masks, boxes, matched, strict=True)):
        valid = roi_align((m != 255)[:, None].float(), torch.cat([idx[:, None].float(), b], 1), (28, 28), 1.0)[:, 0]
        rows = grad[5 * i : 5 * i + 5]
        picked = rows[torch.arange(5), labels[i][idx]]
        assert (picked[valid == 0] == 0).all() and (valid == 0).any()
        others = torch.ones(3, dtype=torch.bool)
        for r in range(5):  # logits of the other classes never get a gradient (torchvision's rule too)
            others[:] = True
            others[labels[i][idx[r]]] = False
            assert (rows[r][others] == 0).all()

    # so the logits of fully ignored cells can be anything: the loss does not move
    moved = logits.detach().clone()
    for i, (m, b, idx) in enumerate(zip(masks, boxes, matched, strict=True)):
        valid = roi_align((m != 255)[:, None].float(), torch.cat([idx[:, None].float(), b], 1), (28, 28), 1.0)[:, 0]
        for r in range(5):
            moved[5 * i + r, labels[i][idx[r]]][valid[r] == 0] = 50.0
    assert float(masked_mask_loss(moved, boxes, masks, labels, matched)) == pytest.approx(float(ignored), rel=1e-6)


def test_the_models_losses_equal_torchvisions_roi_heads_without_ignore():
    torch.manual_seed(0)
    model = build_instance_model(TINY).train()
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    masks = torch.zeros(2, 64, 64, dtype=torch.uint8)
    masks[0, 8:40, 10:30] = 1
    masks[1, 30:60, 20:62] = 1
    targets = [
        {"boxes": torch.tensor([[10.0, 8.0, 30.0, 40.0]]), "labels": torch.tensor([1]), "masks": masks[:1]},
        {
            "boxes": torch.tensor([[20.0, 30.0, 62.0, 60.0], [10.0, 8.0, 30.0, 40.0]]),
            "labels": torch.tensor([2, 1]),
            "masks": masks,
        },
    ]
    torch.manual_seed(1)
    ours = model(images, targets)
    ignore_heads = model.roi_heads
    plain = RoIHeads(
        ignore_heads.box_roi_pool,
        ignore_heads.box_head,
        ignore_heads.box_predictor,
        0.5,
        0.5,
        32,
        0.25,
        None,
        0.05,
        0.5,
        100,
        ignore_heads.mask_roi_pool,
        ignore_heads.mask_head,
        ignore_heads.mask_predictor,
    )
    model.roi_heads = plain
    torch.manual_seed(1)
    theirs = model(images, targets)
    assert ours.keys() == theirs.keys() and "loss_mask" in ours
    for key in ours:
        assert float(ours[key]) == pytest.approx(float(theirs[key]), rel=1e-5), key


def test_checkpoint_round_trip_without_pickle(tmp_path):
    torch.manual_seed(0)
    model = build_instance_model(TINY).eval()
    save_instance_model(tmp_path / "model.safetensors", model, TINY, {"epoch": 3})
    loaded, config = load_instance_model(tmp_path)
    assert config == TINY and read_metadata(tmp_path)["kind"] == "instance"
    image = [torch.rand(3, 64, 64)]
    with torch.no_grad():
        want, got = model(image)[0], loaded(image)[0]
    assert want.keys() == got.keys() and "masks" in got
    for key in want:
        assert torch.equal(want[key], got[key]), key


# ----------------------------------------------------------------------------- AP and ABO by hand


def _block(h0, h1, w0, w1, size=20):
    m = np.zeros((size, size), bool)
    m[h0:h1, w0:w1] = True
    return m


def test_ap_at_025_05_07_of_an_iou_06_mask_and_the_exact_070():
    truth = _block(0, 10, 0, 10)  # 100 pixels
    pred = _block(0, 10, 0, 6)  # 60 pixels inside it: IoU 0.6 exactly
    image = score_image(truth[None], [1], [False], pred[None], [1], [0.9])
    report = mask_ap_report([image], ["a"])
    assert [report[k] for k in ("ap25", "ap50", "ap70", "ap75")] == pytest.approx([1.0, 1.0, 0.0, 0.0])
    assert report["coco_ap"] == pytest.approx(0.3)  # matched at 0.50, 0.55, 0.60 of the ten
    assert report["abo"] == pytest.approx(0.6)

    # IoU exactly 0.70 counts at the threshold 0.70 (IoU >= t); the thresholds are the exact literals
    assert 0.25 in IOU_THRESHOLDS and 0.7 in IOU_THRESHOLDS and 0.9 in IOU_THRESHOLDS
    exact = score_image(truth[None], [1], [False], _block(0, 10, 0, 7)[None], [1], [0.9])
    assert mask_ap_report([exact], ["a"])["ap70"] == pytest.approx(1.0)


def test_coco_ap_is_pycocotools_standard_ap():
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    images = []
    for _ in range(3):
        gts = [
            _block(*np.sort(rng.integers(0, 20, 2)) + [0, 1], *np.sort(rng.integers(0, 20, 2)) + [0, 1]) for _ in "ab"
        ]
        preds = [g ^ (rng.random(g.shape) < 0.1) for g in gts] + [_block(5, 15, 5, 15)]
        images.append(score_image(np.stack(gts), [1, 2], [False, False], np.stack(preds), [1, 2, 1], rng.random(3)))
    report = mask_ap_report(images, ["a", "b"])
    gt_anns, dets = [], []
    for k, im in enumerate(images, 1):
        for rle, label in zip(im.gt, im.gt_labels, strict=True):
            area, bbox = float(mask_utils.area(rle)), list(mask_utils.toBbox(rle))
            gt_anns.append(
                {
                    "id": len(gt_anns) + 1,
                    "image_id": k,
                    "category_id": int(label),
                    "segmentation": rle,
                    "area": area,
                    "bbox": bbox,
                    "iscrowd": 0,
                }
            )
        for rle, label, score in zip(im.masks, im.labels, im.scores, strict=True):
            dets.append({"image_id": k, "category_id": int(label), "segmentation": rle, "score": float(score)})
    standard = run_cocoeval(gt_anns, dets, 3, ["a", "b"], "segm", sizes=[(20, 20)] * 3)  # default iouThrs
    assert 0 < report["coco_ap"] < 1
    assert report["coco_ap"] == pytest.approx(standard.stats[0])
    assert report["ap50"] == pytest.approx(standard.stats[1]) and report["ap75"] == pytest.approx(standard.stats[2])


def test_abo_by_hand_class_score_void_and_difficult():
    truths = np.stack([_block(0, 10, 0, 10), _block(10, 20, 10, 20), _block(0, 5, 15, 20), _block(15, 20, 0, 5)])
    preds = np.stack(
        [
            _block(0, 10, 0, 6),  # truth 0, IoU 0.6
            _block(0, 10, 0, 9),  # truth 0, IoU 0.9 but of another class: not counted
            _block(10, 20, 10, 13),  # truth 1, IoU 0.3
            _block(10, 20, 10, 19),  # truth 1, IoU 0.9 but scored below abo_score: not counted
            _block(0, 5, 15, 20) | _block(5, 8, 15, 20),  # truth 2 plus 15 void pixels: IoU 1 once void is cut
        ]
    )
    void = _block(5, 8, 15, 20)
    image = score_image(
        truths, [1, 1, 1, 1], [False, False, False, True], preds, [1, 2, 1, 1, 1], [0.9, 0.9, 0.9, 0.4, 0.9], void
    )
    assert image.best_overlap[:3] == pytest.approx([0.6, 0.3, 1.0])
    report = mask_ap_report([image], ["a", "b"])
    # the difficult truth 3 is left out; ABO = (0.6 + 0.3 + 1.0) / 3
    assert report["abo"] == pytest.approx((0.6 + 0.3 + 1.0) / 3) and report["instances"] == 3
    # a truth without any prediction scores 0
    alone = score_image(truths[:1], [1], [False], np.zeros((0, 20, 20), bool), [], [])
    assert mask_ap_report([alone], ["a"])["abo"] == 0.0


# ----------------------------------------------------------------------------- targets


def test_gt_instance_k_is_the_kth_xml_object(inst_synth):
    split = open_instance_split(inst_synth, "train", "gt", training=True)
    dataset = split.dataset
    checked = 0
    for image_id in split.ids:
        target = split.target(image_id)
        classes = dataset.mask(image_id)
        png = dataset.instance_mask(image_id)
        assert torch.equal(target.void, torch.from_numpy(png == 255))
        for label, mask in zip(target.labels, target.masks, strict=True):
            pixels = mask.numpy() == 1
            assert pixels.any() and (classes[pixels] == int(label)).all()  # the XML class of object k
            assert (mask.numpy()[png == 255] == 255).all()  # void ignored in every mask
            checked += 1
    assert checked == split.instances > 0


def test_difficult_objects_are_ignored_in_the_others_masks(inst_synth, tmp_path):
    from weakseg.data.annotations import parse_voc_xml, write_voc_xml

    data = tmp_path / "VOC2012"
    shutil.copytree(inst_synth, data)
    dataset = VOCDataset(data, "train")
    image_id = next(i for i in dataset.ids if len(dataset.annotation(i).objects) >= 2)
    path = dataset.annotation_path(image_id)
    ann = parse_voc_xml(path)
    ann.objects[0] = dataclasses.replace(ann.objects[0], difficult=True)
    path.write_text(write_voc_xml(ann))
    split = open_instance_split(data, "train", "gt", training=True)
    target = split.target(image_id)
    assert bool(target.difficult[0]) and not bool(target.difficult[1:].any())
    first = dataset.instance_mask(image_id) == 1
    training = target.training()
    assert len(training["labels"]) == len(target.labels) - 1
    assert (training["masks"].numpy()[:, first] == 255).all()


# ----------------------------------------------------------------------------- the CLI


def _train_args(data, labels, out, *extra):
    return [
        "train",
        "instance",
        "--data",
        str(data),
        "--labels",
        str(labels),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--val-split",
        "",
        "--warmup-steps",
        "3",
        "--device",
        "cpu",
        "--quiet",
        *SMALL,
        *extra,
    ]


def _weights(run) -> dict[str, torch.Tensor]:
    model, _ = load_instance_model(run)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_cli_trains_on_gt_and_evaluates(inst_synth, tmp_path, capsys):
    run = tmp_path / "gt"
    assert main(_train_args(inst_synth, "gt", run)) == 0
    record = _last_json(capsys.readouterr().out)
    assert record["epochs"] == 2 and "loss_mask" in record and math.isfinite(record["loss_mask"])
    info = json.loads((run / "run.json").read_text())
    assert info["kind"] == "instance" and info["labels"] == "gt" and info["classes"] == ["train", "boat", "bird"]
    meta = read_metadata(run)
    assert meta["kind"] == "instance" and meta["extra"]["epoch"] == 2 and meta["config"]["mask_head_dim"] == 32

    assert main(["eval", "instance", "--model", str(run), "--data", str(inst_synth), "--device", "cpu", "--quiet"]) == 0
    report = _last_json(capsys.readouterr().out)
    assert report["split"] == "val" and report["images"] == 4 and report["instances"] > 0
    for key in ("ap25", "ap50", "ap70", "ap75", "coco_ap", "abo"):
        assert 0.0 <= report[key] <= 1.0, key
    assert report["ap25"] >= report["ap50"] >= report["ap70"] >= report["ap75"]


@pytest.mark.slow
def test_cli_trains_on_a_pseudo_folder_and_resumes_exactly(inst_synth, tmp_path, capsys):
    labels = write_pseudo_folder(inst_synth, tmp_path / "pseudo", band=True)
    straight = tmp_path / "straight"
    assert main(_train_args(inst_synth, labels, straight)) == 0
    record = _last_json(capsys.readouterr().out)
    assert record["epochs"] == 2 and record["resumed_from_epoch"] == 0
    info = json.loads((straight / "run.json").read_text())
    assert info["labels"] == str(labels.resolve()) and info["labels_method"] == "hand"

    # the same run killed after epoch 1 was saved, then resumed by the CLI: the same weights
    resumed = tmp_path / "resumed"
    job = InstanceJob(
        data=inst_synth,
        out=resumed,
        labels=str(labels),
        val_split=None,
        min_size=64,
        max_size=128,
        box_batch_size_per_image=32,
        box_head_dim=64,
        mask_head_dim=32,
        mask_head_layers=2,
        train=TrainConfig(epochs=2, batch_size=4, lr=1e-4, weight_decay=1e-4, seed=0, warmup_steps=3),
    )
    setup = prepare_instance(job, CPU)

    def die_after_the_first_epoch(model, epoch):  # called before epoch 2 is saved
        if epoch == 2:
            raise KeyboardInterrupt
        return {}

    setup.on_epoch_end = die_after_the_first_epoch
    with pytest.raises(KeyboardInterrupt):
        fit_rcnn(setup, job, CPU, progress=False)
    assert load_resume(resumed / "resume.pt")["epoch"] == 1
    assert main(_train_args(inst_synth, labels, resumed)) == 0
    assert _last_json(capsys.readouterr().out)["resumed_from_epoch"] == 1
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_eval_scores_a_label_folder_against_the_true_masks(inst_synth, tmp_path, capsys):
    exact = write_pseudo_folder(inst_synth, tmp_path / "exact")
    assert main(["eval", "instance", "--labels", str(exact), "--quiet"]) == 0  # data and split from the manifest
    report = _last_json(capsys.readouterr().out)
    assert report["split"] == "train" and report["images"] == 8 and report["images_without_labels"] == 0
    for key in ("ap25", "ap50", "ap70", "ap75", "coco_ap", "abo"):
        assert report[key] == pytest.approx(1.0), key  # the true masks themselves

    boxes = write_pseudo_folder(inst_synth, tmp_path / "boxes", filled_boxes=True)
    assert main(["eval", "instance", "--labels", str(boxes), "--data", str(inst_synth), "--quiet"]) == 0
    report = _last_json(capsys.readouterr().out)
    assert 0.3 < report["abo"] < 1.0 and report["ap25"] >= report["ap70"]


def test_bad_label_folders_are_one_line_exit_2(inst_synth, tmp_path, capsys):
    empty = tmp_path / "no_instances"
    empty.mkdir()
    assert main(_train_args(inst_synth, empty, tmp_path / "r1")) == 2
    assert "no instances/ folder" in _error_line(capsys)
    assert main(["eval", "instance", "--labels", str(empty), "--data", str(inst_synth), "--quiet"]) == 2
    assert "no instances/ folder" in _error_line(capsys)

    bad = write_pseudo_folder(inst_synth, tmp_path / "bad")
    image_id = sorted(p.stem for p in (bad / "instances").glob("*.json"))[0]
    doc = json.loads((bad / "instances" / f"{image_id}.json").read_text())
    doc["instances"] = doc["instances"][1:]  # the PNG still holds instance 1
    (bad / "instances" / f"{image_id}.json").write_text(json.dumps(doc))
    assert main(_train_args(inst_synth, bad, tmp_path / "r2")) == 2
    line = _error_line(capsys)
    assert f"{image_id}.png: instance ids [1] are not in {image_id}.json" in line

    original = write_pseudo_folder(inst_synth, tmp_path / "zebra")
    doc = json.loads((original / "instances" / f"{image_id}.json").read_text())
    doc["instances"][0]["class"] = "zebra"
    (original / "instances" / f"{image_id}.json").write_text(json.dumps(doc))
    assert main(_train_args(inst_synth, original, tmp_path / "r3")) == 2
    line = _error_line(capsys)
    assert f"{image_id}.json: instance 0: unknown class 'zebra'" in line


@pytest.mark.slow
def test_box_table_trains_every_row_scores_it_and_a_rerun_recomputes_nothing(inst_synth, tmp_path, monkeypatch, capsys):
    """benchmarks/box_table.py --train end to end on tiny Mask R-CNNs: the pseudo half scores the true masks (as a
    pseudo folder) 1.0 and filled boxes lower; every row gets a trained Mask R-CNN scored on val, weak/full is the
    row's metric over the `full` row's, the label cost is boxes over full masks; a second run trains and scores
    nothing (the evaluators would fail) and writes the same table."""
    import sys

    import benchmarks.box_table as box_table
    from weakseg.label_cost import SECONDS_PER_IMAGE

    exact = write_pseudo_folder(inst_synth, tmp_path / "exact")
    boxes = write_pseudo_folder(inst_synth, tmp_path / "boxes", filled_boxes=True)
    out = tmp_path / "table.json"
    argv = ["box_table.py", "--data", str(inst_synth), "--pseudo", f"exact={exact}", f"box={boxes}", "--train",
            "--runs", str(tmp_path / "runs"), "--out", str(out), "--epochs", "1", "--warmup-steps", "2",
            "--threads", "1", "--device", "cpu", "--quiet", *SMALL]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    box_table.main()
    first = json.loads(out.read_text())["table"]
    rows = first["rows"]
    assert set(rows) == {"full", "exact", "box"} and first["train_images"] == 8
    for key in box_table.METRICS:
        assert rows["exact"]["pseudo"][key] == pytest.approx(1.0), key
    assert rows["box"]["pseudo"]["abo"] < 1.0
    box_cost = SECONDS_PER_IMAGE["box"] / SECONDS_PER_IMAGE["full"]
    assert rows["full"]["label_cost_ratio"] == pytest.approx(1.0)
    for name in ("exact", "box"):
        assert rows[name]["label_cost_ratio"] == pytest.approx(box_cost)
    full = rows["full"]["mask_rcnn"]
    assert full["images"] == 4 and (tmp_path / "runs" / "full" / "model.safetensors").is_file()
    for name, row in rows.items():
        trained = row["mask_rcnn"]
        assert all(0.0 <= trained[k] <= 1.0 for k in box_table.METRICS), name
        history = json.loads((tmp_path / "runs" / name / "run.json").read_text())["history"]
        assert trained["train_seconds"] > 0, name
        assert trained["train_seconds"] == pytest.approx(sum(e["seconds"] for e in history), abs=0.1), name
        for k in box_table.METRICS:
            expected = trained[k] / full[k] if full[k] else None
            assert row["weak_over_full"][k] == (pytest.approx(expected) if expected is not None else None), (name, k)
    assert [line.split(" | ")[0] for line in first["markdown"].splitlines()[2:]] == ["| full", "| exact", "| box"]
    capsys.readouterr()

    def no_scoring(*args, **kwargs):
        raise AssertionError("scored again though nothing changed")

    monkeypatch.setattr(box_table, "evaluate_instances", no_scoring)
    monkeypatch.setattr(box_table, "evaluate_label_folder", no_scoring)
    box_table.main()
    assert json.loads(out.read_text())["table"] == first
    for name in rows:
        assert json.loads((tmp_path / "runs" / name / "run.json").read_text())["train"]["epochs"] == 1


def test_box_table_figure_shows_each_folders_instances(inst_synth, tmp_path, monkeypatch):
    """--figure writes one row per image (image, true instances, each folder's instances over the image), each cell
    the folder's own PNG drawn over its image, without training anything."""
    import sys

    import benchmarks.box_table as box_table
    from weakseg.report.overlay import mask_overlay

    exact = write_pseudo_folder(inst_synth, tmp_path / "exact")
    boxes = write_pseudo_folder(inst_synth, tmp_path / "boxes", filled_boxes=True)
    figure = tmp_path / "fig" / "masks.png"
    argv = ["box_table.py", "--data", str(inst_synth), "--pseudo", f"exact={exact}", f"box={boxes}",
            "--out", str(tmp_path / "table.json"), "--figure", str(figure), "--figure-images", "3", "--quiet"]
    monkeypatch.setattr(sys, "argv", argv)
    box_table.main()
    png = np.asarray(Image.open(figure).convert("RGB"))
    dataset = VOCDataset(inst_synth, "train")
    h, w = dataset.image(dataset.ids[0]).shape[:2]
    pad, rows = 4, 3
    assert png.shape[1] == pad + 4 * (w + pad)
    top = png.shape[0] - rows * (h + pad)  # below the column captions
    for i, image_id in enumerate(dataset.ids[:rows]):
        image = dataset.image(image_id)
        y = top + i * (h + pad)
        cells = [png[y : y + h, pad + j * (w + pad) : pad + j * (w + pad) + w] for j in range(4)]
        assert np.array_equal(cells[0], image)
        assert np.array_equal(cells[1], mask_overlay(image, dataset.instance_mask(image_id), alpha=0.6))
        for j, folder in ((2, exact), (3, boxes)):
            own = np.asarray(Image.open(folder / "instances" / f"{image_id}.png"))
            assert np.array_equal(cells[j], mask_overlay(image, own, alpha=0.6)), (image_id, folder.name)
        assert not np.array_equal(cells[2], cells[3])
