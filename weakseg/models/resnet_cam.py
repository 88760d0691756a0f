"""CAM-ready ResNet classifier (IRN style): strided backbone, global average pooling, bias-free 1x1 head.

Because the head is linear and bias-free, logits = GAP(head(features)), so one forward pass yields both
the logits and the class activation maps (Eq. 2.1 before normalisation).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture of a CAM classifier; stored inside every checkpoint."""

    num_classes: int
    arch: str = "resnet18"  # resnet18 | resnet50 | resnet101 | efficientnet-lite0|1|2 (weakseg.models.efficientnet_cam)
    output_stride: int = 8  # 8, 16 or 32
    head: str = "cam"  # cam (1x1 bias-free conv) | fickle (k x k conv with stochastic selection)
    fickle_kernel: int = 3
    fickle_drop: float = 0.9

    def to_dict(self) -> dict:
        """Plain-dict form for JSON."""
        return asdict(self)


def _backbone(arch: str, output_stride: int) -> torchvision.models.ResNet:
    """A torchvision ResNet whose last stages keep stride 1 (no dilation, as IRN) to reach output_stride."""
    builders = {
        "resnet18": torchvision.models.resnet18,
        "resnet50": torchvision.models.resnet50,
        "resnet101": torchvision.models.resnet101,
    }
    if arch not in builders:
        raise ValueError(f"unknown arch {arch!r}; choose from {sorted(builders)}")
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    net = builders[arch](weights=None)
    unstrided = {32: [], 16: [net.layer4], 8: [net.layer3, net.layer4]}[output_stride]
    for layer in unstrided:
        block = layer[0]
        strided_conv = block.conv2 if hasattr(block, "conv3") else block.conv1  # Bottleneck strides conv2
        strided_conv.stride = (1, 1)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)
    return net


class Normalize(nn.Module):
    """Maps float RGB in [0,1] to ImageNet-normalised input (kept inside the model for export)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self, mean: tuple[float, float, float] = IMAGENET_MEAN, std: tuple[float, float, float] = IMAGENET_STD
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class CAMClassifier(nn.Module):
    """ResNet feature extractor f, GAP and a bias-free 1x1 classification layer w (Eq. 2.1).

    Inputs are float RGB in [0, 1], shape [N,3,H,W]; normalisation happens inside. Implements
    weakseg.models.contract.CAMModel. Another backbone family (weakseg.models.efficientnet_cam) subclasses it and
    overrides `_build_backbone`, `input_mean`/`input_std` and `load_backbone_state`; the rest runs on STAGES.
    """

    stages: tuple[str, ...] = STAGES
    input_mean: tuple[float, float, float] = IMAGENET_MEAN
    input_std: tuple[float, float, float] = IMAGENET_STD

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.normalize = Normalize(self.input_mean, self.input_std)
        self.feature_dim = self._build_backbone(config)
        self.classifier: nn.Module
        if config.head == "cam":
            self.classifier = nn.Conv2d(self.feature_dim, config.num_classes, 1, bias=False)
        elif config.head == "fickle":
            from weakseg.models.fickle_head import FickleHead

            self.classifier = FickleHead(self.feature_dim, config.num_classes, config.fickle_kernel, config.fickle_drop)
        else:
            raise ValueError(f"unknown head {config.head!r}")

    def _build_backbone(self, config: ClassifierConfig) -> int:
        """Set the modules named in STAGES from a torchvision ResNet; return the last feature map's channels."""
        net = _backbone(config.arch, config.output_stride)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        return net.fc.in_features

    @property
    def num_classes(self) -> int:
        """Number of classes C."""
        return self.config.num_classes

    def stage_outputs(
        self, x: torch.Tensor, keep: tuple[str, ...] = ()
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Run the backbone; return the last feature map and the outputs of the stages named in keep."""
        out: dict[str, torch.Tensor] = {}
        h = self.normalize(x)
        for name in STAGES:
            h = getattr(self, name)(h)
            if name in keep:
                out[name] = h
        return h, out

    def forward_from(self, stage: str, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Continue the forward pass from the output of `stage`; return (logits, raw CAMs)."""
        for name in STAGES[STAGES.index(stage) + 1 :]:
            h = getattr(self, name)(h)
        cams = self.class_maps(h)
        return cams.mean(dim=(2, 3)), cams

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate feature map f(x) of shape [N, D, H/os, W/os]."""
        return self.stage_outputs(x)[0]

    def class_maps(self, feats: torch.Tensor) -> torch.Tensor:
        """Raw (un-ReLU'd, unnormalised) class activation maps w_c^T f(x): [N, C, h, w]."""
        return self.classifier(feats)

    def logits_and_cams(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward pass giving logits [N,C] and raw CAMs [N,C,h,w]; logits = GAP(CAMs)."""
        cams = self.class_maps(self.features(x))
        return cams.mean(dim=(2, 3)), cams

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Multi-label logits [N, C]."""
        return self.logits_from_features(self.features(x))

    def logits_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Multi-label logits [N, C] from a feature map f(x) (GAP then the head; the head's own path for FickleNet)."""
        if self.config.head == "cam":
            return self.classifier(F.adaptive_avg_pool2d(feats, 1)).flatten(1)
        return self.class_maps(feats).mean(dim=(2, 3))

    def freeze_for_pretrained(self) -> None:
        """IRN's recipe when starting from pretrained weights: freeze the stem and BatchNorm layers."""
        for p in self.stem.parameters():
            p.requires_grad_(False)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                for p in m.parameters():
                    p.requires_grad_(False)
        self.freeze_batchnorm_stats()

    def freeze_batchnorm_stats(self) -> None:
        """Keep every BatchNorm layer in eval mode (its running statistics) from now on, also under train()."""
        self._bn_frozen = True
        self.train(self.training)

    def train(self, mode: bool = True) -> CAMClassifier:
        """Like nn.Module.train, but frozen BatchNorm layers stay in eval mode."""
        super().train(mode)
        if getattr(self, "_bn_frozen", False):
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def load_backbone_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load a torchvision ResNet state dict (e.g. ImageNet weights) into the backbone; fc is ignored.

        ValueError names the first key that does not fit (unknown, another shape, or missing)."""
        from weakseg.models.state_fit import first_mismatch

        to_torchvision = {"stem.0.": "conv1.", "stem.1.": "bn1."}
        expected, source_to_own = {}, {}
        for key, value in self.state_dict().items():
            if key.startswith("classifier."):
                continue
            src = next((tv + key[len(own) :] for own, tv in to_torchvision.items() if key.startswith(own)), key)
            expected[src], source_to_own[src] = tuple(value.shape), key
        problem = first_mismatch(state, expected, self.config.arch, ignore_prefixes=("fc.",))
        if problem:
            raise ValueError(f"not {self.config.arch} backbone weights (torchvision keys): {problem}")
        self.load_state_dict({source_to_own[k]: v for k, v in state.items() if k in source_to_own}, strict=False)
