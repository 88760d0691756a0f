"""The detector (issue 14 item 1) end to end: EfficientNet-Lite FPN with the real ImageNet weights, `weakseg train
detector` through the CLI with exact resume and per-epoch checkpoints, `weakseg eval detector`, and bad input
(no Annotations/, a box outside the image, an unknown class, --pretrained with a torchvision arch) as one-line
exit-2 errors."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from cli.main import main
from training.detector import DetectorJob, detection_loss, prepare_detector
from weakseg.data.annotations import ObjectBox, parse_voc_xml, write_voc_xml
from weakseg.engine import TrainConfig, fit
from weakseg.models.checkpoint import load_resume, read_metadata
from weakseg.models.detector import DetectorConfig, build_detector, load_detector, save_detector

CPU = torch.device("cpu")
# tiny and quick: 64 px images at their own size, 32 sampled RoIs, 2 steps of 4 images per epoch
SMALL = [
    "--min-size",
    "64",
    "--max-size",
    "128",
    "--box-batch-size-per-image",
    "32",
    "--box-head-dim",
    "64",
    "--batch-size",
    "4",
]
SMALL_TRAIN = dict(epochs=2, batch_size=4, lr=1e-4, weight_decay=1e-4, optimizer="adamw", seed=0, warmup_steps=3)


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def det_synth(tmp_path_factory):
    """8 train / 4 val images at 64 px, 3 classes."""
    from weakseg.data.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("detsynth") / "VOC2012"
    generate(SynthConfig(seed=5, train=8, val=4, ood=0, classes=3, size=64), out, progress=False)
    return out


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _train_args(data, out, *extra):
    return [
        "train",
        "detector",
        "--data",
        str(data),
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
    model, _ = load_detector(run)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_cli_training_resumes_exactly_and_checkpoints_every_epoch(det_synth, tmp_path, capsys):
    straight = tmp_path / "straight"
    assert main(_train_args(det_synth, straight)) == 0
    record = _last_json(capsys.readouterr().out)
    assert record["epochs"] == 2 and record["resumed_from_epoch"] == 0
    assert {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"} <= set(record)

    # the same run, killed after epoch 1 was saved (before epoch 2 is), then resumed by the CLI
    resumed = tmp_path / "resumed"
    job = DetectorJob(
        data=det_synth,
        out=resumed,
        val_split=None,
        min_size=64,
        max_size=128,
        box_batch_size_per_image=32,
        box_head_dim=64,
        train=TrainConfig(**SMALL_TRAIN),
    )
    setup = prepare_detector(job, CPU)

    def die_after_the_first_epoch(model, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return {}

    with pytest.raises(KeyboardInterrupt):
        fit(
            setup.model,
            setup.loader,
            detection_loss(CPU),
            job.train,
            resumed,
            setup.save,
            device=CPU,
            head_params=setup.head_params,
            run_info=setup.run_info,
            progress=False,
            on_epoch_end=die_after_the_first_epoch,
        )
    assert read_metadata(resumed)["extra"]["epoch"] == 1 and load_resume(resumed / "resume.pt")["epoch"] == 1
    assert main(_train_args(det_synth, resumed)) == 0
    assert _last_json(capsys.readouterr().out)["resumed_from_epoch"] == 1

    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    first = json.loads((straight / "run.json").read_text())
    assert [h["epoch"] for h in json.loads((resumed / "run.json").read_text())["history"]] == [1, 2]
    assert first["arch"] == "mobilenet_v3" and first["classes"] == ["train", "boat", "bird"]
    meta = read_metadata(straight)
    assert meta["kind"] == "detector" and meta["extra"]["epoch"] == 2
    assert (meta["config"]["arch"], meta["config"]["min_size"], meta["config"]["max_size"]) == ("mobilenet_v3", 64, 128)

    # eval: the JSON on the last line of stdout
    assert (
        main(
            [
                "eval",
                "detector",
                "--model",
                str(straight),
                "--data",
                str(det_synth),
                "--split",
                "val",
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        == 0
    )
    report = _last_json(capsys.readouterr().out)
    assert report["images"] == 4 and report["difficult"] == 0 and report["split"] == "val"
    assert set(report["voc_ap50_per_class"]) == {"train", "boat", "bird"}
    for key in ("coco_ap", "coco_ap50", "coco_ap75"):
        assert report[key] is None or 0.0 <= report[key] <= 1.0

    # a dataset with other classes than the detector's is refused in one line
    other = _copy(det_synth, tmp_path)
    (other / "classes.txt").write_text("train\nboat\nbird\ncow\n")
    assert main(["eval", "detector", "--model", str(straight), "--data", str(other), "--device", "cpu", "--quiet"]) == 2
    assert "detector classes ['train', 'boat', 'bird'] differ from the dataset's" in _error_line(capsys)


@pytest.mark.parametrize("arch", ["mobilenet_v3", "resnet50", "efficientnet-lite1"])
def test_every_arch_builds_for_the_dataset_classes_and_input_size(arch):
    config = DetectorConfig(arch=arch, classes=("a", "b", "c"), min_size=96, max_size=160, box_head_dim=64)
    model = build_detector(config)
    assert model.roi_heads.box_predictor.cls_score.out_features == 4  # background + 3
    assert (model.transform.min_size, model.transform.max_size) == ((96,), 160)
    model.eval()
    with torch.no_grad():
        (out,) = model([torch.rand(3, 80, 120)])
    assert out["boxes"].shape[1] == 4 and len(out["boxes"]) <= 100
    if out["boxes"].numel():
        assert out["boxes"][:, 2].max() <= 120 and out["boxes"][:, 3].max() <= 80  # in the input image's pixels
    with pytest.raises(ValueError, match="torchvision's"):
        DetectorConfig(arch="mobilenet_v3", classes=("a",), pretrained_backbone=True)


def test_lite_fpn_backbone_loads_every_imagenet_tensor_and_keeps_them_frozen(tmp_path):
    from timm.layers import FrozenBatchNormAct2d

    from weakseg.models.efficientnet_cam import EfficientNetCAM, weights_package_file
    from weakseg.models.resnet_cam import ClassifierConfig

    config = DetectorConfig(
        arch="efficientnet-lite0",
        classes=("a", "b"),
        min_size=64,
        max_size=128,
        pretrained_backbone=True,
        box_batch_size_per_image=32,
        box_head_dim=64,
    )
    model = build_detector(config, "efficientnet-lite0")
    imagenet = torch.load(weights_package_file("efficientnet-lite0"), map_location="cpu", weights_only=True)
    package_to_own = EfficientNetCAM(ClassifierConfig(num_classes=1, arch="efficientnet-lite0")).backbone_key_maps()[
        "package"
    ]
    state = model.state_dict()
    matched = 0
    for key, value in imagenet.items():
        if key.startswith("_fc."):
            continue  # the ImageNet classifier is not part of a detector
        own = "backbone.body." + package_to_own[key]
        if own not in state:
            assert key.endswith("num_batches_tracked"), key  # FrozenBatchNorm keeps no step counter
            continue
        assert torch.equal(state[own], value.to(state[own].dtype)), key
        matched += 1
    assert matched == sum(1 for k in state if k.startswith("backbone.body."))  # and nothing in the body is left out
    assert matched == 245  # Lite0: every conv and BatchNorm tensor (num_batches_tracked aside) of the package file
    body = model.backbone.body
    assert sum(isinstance(m, FrozenBatchNormAct2d) for m in body.modules()) > 40
    assert not any(p.requires_grad for p in body.stem.parameters())

    # a training step changes the trainable convolutions, never the frozen statistics
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    optim = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    targets = [{"boxes": torch.tensor([[5.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1])}] * 2
    loss = torch.stack(list(model(images, targets).values())).sum()
    optim.zero_grad()
    loss.backward()
    optim.step()
    after = model.state_dict()
    assert torch.equal(
        after["backbone.body.layer2.0.0.bn1.running_mean"], before["backbone.body.layer2.0.0.bn1.running_mean"]
    )
    assert torch.equal(after["backbone.body.stem.0.weight"], before["backbone.body.stem.0.weight"])
    assert not torch.equal(
        after["backbone.body.layer2.0.0.conv_pw.weight"], before["backbone.body.layer2.0.0.conv_pw.weight"]
    )

    # the checkpoint rebuilds the same network (frozen structure included) without the weights package
    save_detector(tmp_path / "model.safetensors", model.eval(), config)
    loaded, loaded_config = load_detector(tmp_path / "model.safetensors")
    assert loaded_config == config
    with torch.no_grad():
        want, got = model(images[:1])[0], loaded(images[:1])[0]
    assert torch.equal(want["boxes"], got["boxes"]) and torch.equal(want["scores"], got["scores"])


@pytest.mark.slow
def test_cli_trains_the_pretrained_lite_detector(det_synth, tmp_path, capsys):
    out = tmp_path / "lite"
    args = _train_args(det_synth, out, "--arch", "efficientnet-lite0", "--pretrained", "efficientnet-lite0")
    args[args.index("--epochs") + 1] = "1"
    assert main(args) == 0
    assert _last_json(capsys.readouterr().out)["epochs"] == 1
    meta = read_metadata(out)
    assert meta["config"]["arch"] == "efficientnet-lite0" and meta["config"]["pretrained_backbone"] is True
    assert json.loads((out / "run.json").read_text())["pretrained"] == "efficientnet-lite0"


def _copy(det_synth, tmp_path):
    root = tmp_path / "VOC2012"
    shutil.copytree(det_synth, root)
    return root


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_box_less_training_images_are_skipped_and_counted(det_synth, tmp_path, capsys):
    root = _copy(det_synth, tmp_path)
    first = (root / "ImageSets" / "Main" / "train.txt").read_text().split()[0]
    xml = root / "Annotations" / f"{first}.xml"
    ann = parse_voc_xml(xml)
    ann.objects = []
    xml.write_text(write_voc_xml(ann))
    args = _train_args(root, tmp_path / "run")
    args.remove("--quiet")
    args[args.index("--epochs") + 1] = "1"
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"note: 1 of 8 images of split 'train' have no (non-difficult) box and are left out: {first}" in out
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["skipped_without_boxes"] == 1 and record["train_images"] == 7


def test_bad_input_is_one_line_naming_the_file_and_exit_2(det_synth, tmp_path, capsys):
    root = _copy(det_synth, tmp_path)
    first = (root / "ImageSets" / "Main" / "train.txt").read_text().split()[0]
    xml = root / "Annotations" / f"{first}.xml"
    ann = parse_voc_xml(xml)
    good = xml.read_text()

    # a box outside the 64 x 64 image
    outside = ObjectBox(ann.objects[0].name, 10, 10, 70, 30)
    xml.write_text(write_voc_xml(dataclasses.replace(ann, objects=[outside])))
    assert main(_train_args(root, tmp_path / "a")) == 2
    line = _error_line(capsys)
    assert str(xml) in line and "(10,10,70,30)" in line and "outside the 64x64 image" in line

    # a class the dataset does not have
    xml.write_text(good.replace(f"<name>{ann.objects[0].name}</name>", "<name>unicorn</name>", 1))
    assert main(_train_args(root, tmp_path / "b")) == 2
    line = _error_line(capsys)
    assert str(xml) in line and "unknown class name 'unicorn'" in line
    xml.write_text(good)

    # --pretrained for an arch whose weights would be downloaded
    assert main(_train_args(root, tmp_path / "c", "--arch", "resnet50", "--pretrained", "imagenet")) == 2
    assert "needs an EfficientNet-Lite arch" in _error_line(capsys)

    # no Annotations/ folder at all
    shutil.rmtree(root / "Annotations")
    assert main(_train_args(root, tmp_path / "d")) == 2
    line = _error_line(capsys)
    assert str(root) in line and "no Annotations/ folder" in line
    assert not (tmp_path / "d").exists()  # nothing written
