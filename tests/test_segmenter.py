"""Segmenter training on pseudo labels and true masks, the 255 rule, evaluation, prediction, checkpoints, label cost."""

import json

import numpy as np
import pytest
import torch

from training.segmenter import SegmenterJob, masked_cross_entropy, train_segmenter
from weakseg.data.classes import voc_palette
from weakseg.engine import TrainConfig
from weakseg.errors import CheckpointError, DataError
from weakseg.io import atomic_save_png, atomic_write_json, read_label_png
from weakseg.label_cost import SupervisionRatio, cost_fraction, ratio_sentence
from weakseg.models.checkpoint import read_metadata, save_weights
from weakseg.models.segmenter_io import load_segmenter

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def gt_run(tiny_synth, tmp_path_factory):
    """LR-ASPP trained 10 epochs on tiny_synth's true masks (the fully supervised recipe)."""
    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("seg") / "gt"
    train_segmenter(SegmenterJob(data=tiny_synth, labels="gt", out=out, crop=64,
                                 train=TrainConfig(epochs=10, batch_size=8, lr=5e-3)), CPU, progress=False)
    return out


@pytest.fixture(scope="module")
def pseudo_folder(tiny_synth, tmp_path_factory):
    """A pseudo-label folder like the pseudo job's: true masks with a random third of each image set to 255, and
    a manifest naming CAM; a quarter of the train images have no label."""
    from weakseg.data.voc import VOCDataset

    out = tmp_path_factory.mktemp("pseudo") / "cam"
    dataset = VOCDataset(tiny_synth, "train")
    rng = np.random.default_rng(0)
    for image_id in dataset.ids[: 3 * len(dataset.ids) // 4]:
        label = dataset.mask(image_id).copy()
        label[rng.random(label.shape) < 0.33] = 255
        atomic_save_png(out / "labels" / f"{image_id}.png", label, palette=voc_palette())
    atomic_write_json(out / "manifest.json", {"method": {"method": "cam"}, "classes": dataset.classes})
    return out


def test_training_reduces_the_loss_and_beats_a_constant_predictor(gt_run, tiny_synth):
    from weakseg.data.voc import VOCDataset
    from weakseg.metrics.confusion import ConfusionAccumulator, miou
    from weakseg.models.segmenter_eval import evaluate_segmenter

    history = json.loads((gt_run / "run.json").read_text())["history"]
    assert len(history) == 10 and history[-1]["loss"] < 0.6 * history[0]["loss"]
    model, classes = load_segmenter(gt_run)
    val = VOCDataset(tiny_synth, "val")
    constant = ConfusionAccumulator(len(classes) + 1)
    for image_id in val.ids:  # the best constant predictor: background everywhere
        gt = val.mask(image_id)
        constant.add(gt, np.zeros_like(gt))
    result = evaluate_segmenter(model, val, CPU)
    assert result.images == len(val.ids)
    assert result.miou > miou(constant.matrix) + 0.15
    assert set(result.to_json()) >= {"miou", "pixel_acc", "per_class"}
    assert list(result.per_class) == ["background", *classes]


def test_ignored_pixels_never_contribute_to_the_loss():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 8, 8, requires_grad=True)
    label = torch.randint(0, 5, (2, 8, 8))
    label[0, :4] = 255
    label[1] = 255
    loss = masked_cross_entropy(logits, label)
    loss.backward()
    ignored = (label == 255)[:, None].expand_as(logits)
    assert torch.all(logits.grad[ignored] == 0) and torch.any(logits.grad[~ignored] != 0)
    changed = logits.detach().clone()
    changed[ignored] = 1e4 * torch.randn(int(ignored.sum()))
    assert torch.allclose(masked_cross_entropy(changed, label), loss.detach())
    expected = torch.nn.functional.cross_entropy(logits.detach()[0].permute(1, 2, 0)[4:].reshape(-1, 5), label[0, 4:].reshape(-1))
    assert torch.allclose(loss.detach(), expected)
    all_ignored = masked_cross_entropy(logits, torch.full_like(label, 255))
    assert all_ignored.item() == 0.0 and all_ignored.requires_grad


def test_pseudo_labels_train_resume_and_record_their_supervision(pseudo_folder, tiny_synth, tmp_path):
    out = tmp_path / "run"
    job = SegmenterJob(data=tiny_synth, labels=str(pseudo_folder), out=out, crop=64, val_split=None,
                       train=TrainConfig(epochs=1, batch_size=12))
    train_segmenter(job, CPU, progress=False)
    job.train.epochs = 2
    result = train_segmenter(job, CPU, progress=False)
    assert result.resumed_from_epoch == 1 and [h["epoch"] for h in result.history] == [1, 2]
    assert all(h["labelled"] < 0.75 for h in result.history)  # the 255 third (and crop padding) is not labelled
    extra = read_metadata(out)["extra"]
    assert extra["supervision"] == "class" and extra["train_images"] == 36 and extra["labels_method"] == {"method": "cam"}
    job.labels = "gt"  # resuming with other labels is refused
    with pytest.raises(Exception, match="different configuration"):
        train_segmenter(job, CPU, progress=False)


def test_bad_label_folders_name_the_culprit(pseudo_folder, tiny_synth, tmp_path):
    from weakseg.data.segmentation import labelled_split

    with pytest.raises(DataError, match="not found"):
        labelled_split(tiny_synth, "train", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no label PNG"):
        labelled_split(tiny_synth, "train", tmp_path / "empty")
    split = labelled_split(tiny_synth, "train", pseudo_folder)
    assert len(split.ids) == 36 and split.missing == 12
    bad = tmp_path / "bad" / "labels"
    label = read_label_png(pseudo_folder / "labels" / f"{split.ids[0]}.png").copy()
    label[0, 0] = 9  # tiny_synth has 4 classes
    atomic_save_png(bad / f"{split.ids[0]}.png", label)
    with pytest.raises(DataError, match=f"{split.ids[0]}.png: label values \\[9\\]"):
        labelled_split(tiny_synth, "train", bad).label(split.ids[0])
    atomic_write_json(bad.parent / "manifest.json", {"method": {"method": "cam"}, "classes": ["a", "b"]})
    with pytest.raises(DataError, match="classes"):
        labelled_split(tiny_synth, "train", bad.parent)


def test_corrupt_and_mismatched_segmenter_checkpoints_give_clear_errors(gt_run, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_segmenter(bad)
    meta = read_metadata(gt_run)
    wrong_kind = tmp_path / "clf.safetensors"
    save_weights(wrong_kind, torch.nn.Linear(2, 2), "classifier", {"num_classes": 4})
    with pytest.raises(CheckpointError, match="expected a segmenter"):
        load_segmenter(wrong_kind)
    other_arch = tmp_path / "other.safetensors"
    save_weights(other_arch, torch.nn.Linear(2, 2), "segmenter", meta["config"])
    with pytest.raises(CheckpointError, match="do not match"):
        load_segmenter(other_arch)
    few_classes = tmp_path / "few.safetensors"
    save_weights(few_classes, torch.nn.Linear(2, 2), "segmenter", {**meta["config"], "classes": ["a"]})
    with pytest.raises(CheckpointError, match="names 1 classes"):
        load_segmenter(few_classes)
    truncated = tmp_path / "trunc.safetensors"
    data = (gt_run / "model.safetensors").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_segmenter(truncated)


def test_backbone_from_a_local_file_and_never_a_download(tmp_path):
    import torchvision

    from weakseg.models.segmenter import Segmenter, SegmenterConfig
    from weakseg.models.segmenter_io import load_segmenter_backbone

    reference = torchvision.models.mobilenet_v3_large(weights=None)
    path = tmp_path / "mnv3.pth"
    torch.save(reference.state_dict(), path)
    model = Segmenter(SegmenterConfig(num_classes=3))
    load_segmenter_backbone(model, path)
    assert torch.equal(model.net.backbone["0"][0].weight, reference.features[0][0].weight)
    assert torch.equal(model.net.backbone["16"][0].weight, reference.features[16][0].weight)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(CheckpointError, match="r18.pth"):
        load_segmenter_backbone(model, tmp_path / "r18.pth")
    with pytest.raises(CheckpointError, match="never downloaded"):
        load_segmenter_backbone(model, tmp_path / "imagenet")


def test_cli_eval_states_the_ratio_and_predict_writes_masks(gt_run, pseudo_folder, tiny_synth, tmp_path, capsys):
    from cli.main import main

    weak = tmp_path / "weak"
    assert main(["train", "segmenter", "--data", str(tiny_synth), "--labels", str(pseudo_folder), "--out", str(weak),
                 "--epochs", "1", "--batch-size", "12", "--crop", "64", "--val-split", "", "--quiet", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["eval", "segmenter", "--model", str(weak), "--data", str(tiny_synth), "--full-model", str(gt_run),
                 "--limit", "4", "--quiet", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["images"] == 4 and result["split"] == "val"
    assert lines[-2] == result["ratio"]["sentence"] and lines[-2].endswith("% of full supervision at 8.3% of its label cost")
    # recounted by hand: both models' masks on the first 4 val images (the CLI's default split) against their masks
    from weakseg.data.voc import VOCDataset
    from weakseg.models.segmenter_infer import InferenceConfig, segment
    from tests.metric_reference import confusion_by_hand, reference_scores

    val = VOCDataset(tiny_synth, "val")
    scores = {}
    for name, run in (("weak", weak), ("full", gt_run)):
        model, classes = load_segmenter(run)
        pairs = [(val.mask(i), segment(model, val.image(i), CPU, InferenceConfig())) for i in val.ids[:4]]
        scores[name] = reference_scores(confusion_by_hand(pairs, len(classes) + 1))
    assert result["miou"] == pytest.approx(scores["weak"]["miou"], abs=1e-12)
    assert result["pixel_acc"] == pytest.approx(scores["weak"]["pixel_acc"], abs=1e-12)
    np.testing.assert_allclose([np.nan if v is None else v for v in result["per_class"].values()],
                               scores["weak"]["per_class"], atol=1e-12)
    assert result["ratio"]["full_miou"] == pytest.approx(scores["full"]["miou"], abs=1e-12)
    assert result["ratio"]["performance_ratio"] == pytest.approx(scores["weak"]["miou"] / scores["full"]["miou"])
    assert lines[-2].startswith(f"{100 * scores['weak']['miou'] / scores['full']['miou']:.1f}% of full supervision")

    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    Image.new("RGB", (90, 70), (200, 30, 30)).save(images / "a.jpg")
    Image.new("RGB", (41, 77), (20, 30, 230)).save(images / "b.png")
    out = tmp_path / "masks"
    assert main(["predict", "--model", str(gt_run), "--images", str(images), "--out", str(out), "--overlay",
                 "--device", "cpu"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["written"] == 2
    assert read_label_png(out / "a.png").shape == (70, 90) and read_label_png(out / "b.png").shape == (77, 41)
    assert (out / "overlays" / "b.png").is_file()
    (images / "c.png").write_bytes(b"not an image")
    assert main(["predict", "--model", str(gt_run), "--images", str(images), "--out", str(out), "--device", "cpu"]) == 2
    assert "c.png" in capsys.readouterr().err


def test_label_cost_sentence():
    assert ratio_sentence(0.623, 0.7, "class") == "89.0% of full supervision at 8.3% of its label cost"
    assert round(cost_fraction("box"), 3) == 0.159
    ratio = SupervisionRatio(0.6, 0.8, "class", images=100, reviewed=50)
    assert ratio.cost == pytest.approx((20.0 * 100 + 20.0 * 50) / (239.7 * 100))
    assert ratio.to_json()["sentence"] == "75.0% of full supervision at 12.5% of its label cost"
    with pytest.raises(Exception, match="unknown supervision"):
        cost_fraction("pixels")
