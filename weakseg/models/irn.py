"""IRN (Ahn et al., CVPR 2019, "inter-pixel relation network"): a class-boundary branch and a displacement-field
branch on a frozen CAM classifier's backbone, both at output stride 4 (the authors' `net/resnet50_irn.py`).

The backbone is the classifier's named stages (`stages`, `stage_outputs`; weakseg.models.contract), frozen and
kept in eval mode, its features detached, as in IRN. Channel counts and strides are read from the model with
one probe forward, so ResNet-18/34/50/101 (resnet_cam) and EfficientNet-Lite (efficientnet_cam) all fit.

Boundary branch: every stage -> 1x1 conv to `edge_width` (32, the authors'), GroupNorm, brought to stride 4
(bilinear upsampling by the stride ratio then cropped, as the authors; a stage finer than stride 4, such as
EfficientNet-Lite's stride-2 stem, is average-pooled to stride 4 first), ReLU; concatenated; a 1x1 conv with bias
gives the boundary logit. Displacement branch: the stages at stride <= 4 ("fine") -> widths w/4, w/2; the others
("coarse") -> w each at stride 8, fused by a 1x1 conv to w and upsampled x2; with the fine ones a 1x1 conv to w
and a last 1x1 conv to the 2-channel field (dy, dx) in stride-4 cells. The authors' w is 256 on ResNet-50;
here w = the penultimate stage's channels / 4 (ResNet-50: 1024 -> 256, ResNet-18: 256 -> 64, Lite0: 112 -> 32),
rounded to 16 and clamped to 32..256. `mean_shift` holds the mean displacement over the training images,
measured after training (the authors' MeanShift); inference may subtract it.

Checkpoints are safetensors files of kind "irn" whose config carries the classifier's config too, so one file
rebuilds the whole network (no pickle).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from weakseg.errors import CheckpointError
from weakseg.models.checkpoint import load_weights, read_metadata, save_weights
from weakseg.models.resnet_cam import CAMClassifier, ClassifierConfig

KIND = "irn"
OUTPUT_STRIDE = 4
COARSE_STRIDE = 8
PROBE_SIZE = 64  # a multiple of every backbone stride (<= 32), so stride = PROBE_SIZE / probed size exactly


@dataclass(frozen=True)
class IRNConfig:
    """Branch widths and the training crop (inference pads smaller images to it, as the authors pad to 512)."""

    edge_width: int = 32  # channels per stage in the boundary branch (the authors' 32)
    disp_width: int = 0  # w of the displacement branch; 0: default_disp_width(backbone channels)
    crop: int = 512  # the training crop side in pixels

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for JSON."""
        return asdict(self)


def group_count(channels: int) -> int:
    """GroupNorm groups for a width: about 8 channels a group, 1..16 groups, dividing the width (the authors'
    4 for 32, 8 for 64, 16 for 128 and 256)."""
    g = max(1, min(16, channels // 8))
    while channels % g:
        g -= 1
    return g


def default_disp_width(stage_channels: list[int]) -> int:
    """The displacement branch width w: penultimate stage channels / 4, rounded to 16, within 32..256."""
    return int(min(256, max(32, 16 * round(stage_channels[-2] / 64))))


def probe_stages(backbone: CAMClassifier) -> tuple[list[int], list[int]]:
    """(channels, strides) of each named stage of the backbone, from one forward of a zero image."""
    param = next(backbone.parameters())
    x = torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE, dtype=param.dtype, device=param.device)
    with torch.no_grad():
        was_training = backbone.training
        backbone.eval()
        _, outs = backbone.stage_outputs(x, keep=tuple(backbone.stages))
        backbone.train(was_training)
    channels = [int(outs[s].shape[1]) for s in backbone.stages]
    strides = [PROBE_SIZE // int(outs[s].shape[2]) for s in backbone.stages]
    return channels, strides


def _unit(c_in: int, c_out: int, stride: int, target: int) -> nn.Sequential:
    """1x1 conv + GroupNorm (+ resampling from `stride` to `target`) + ReLU, the authors' branch unit."""
    layers: list[nn.Module] = []
    if stride < target:
        layers.append(nn.AvgPool2d(target // stride, target // stride, ceil_mode=True))
    layers += [nn.Conv2d(c_in, c_out, 1, bias=False), nn.GroupNorm(group_count(c_out), c_out)]
    if stride > target:
        layers.append(nn.Upsample(scale_factor=stride // target, mode="bilinear", align_corners=False))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class IRN(nn.Module):
    """Boundary and displacement branches on a frozen CAM classifier backbone; forward gives both at stride 4."""

    mean_shift: torch.Tensor

    def __init__(self, backbone: CAMClassifier, config: IRNConfig | None = None) -> None:
        super().__init__()
        config = config or IRNConfig()
        self.backbone = backbone
        backbone.requires_grad_(False)
        self.stage_names = tuple(backbone.stages)
        self.stage_channels, self.stage_strides = probe_stages(backbone)
        fine = [i for i, s in enumerate(self.stage_strides) if s <= OUTPUT_STRIDE]
        coarse = [i for i, s in enumerate(self.stage_strides) if s > OUTPUT_STRIDE]
        if not fine or not coarse:
            raise ValueError(
                f"IRN needs stages at stride <= 4 and > 4; the backbone's strides are {self.stage_strides}"
            )
        if any(s < COARSE_STRIDE for i, s in enumerate(self.stage_strides) if i in coarse):
            raise ValueError(f"IRN's coarse stages must be at stride >= 8, got strides {self.stage_strides}")
        w = config.disp_width or default_disp_width(self.stage_channels)
        if w % 4:
            raise ValueError(f"disp_width must be a multiple of 4, got {w}")
        self.config = IRNConfig(edge_width=config.edge_width, disp_width=w, crop=config.crop)
        self.fine, self.coarse = fine, coarse
        ch, st, ew = self.stage_channels, self.stage_strides, config.edge_width
        self.edge_units = nn.ModuleList([_unit(ch[i], ew, st[i], OUTPUT_STRIDE) for i in range(len(ch))])
        self.edge_out = nn.Conv2d(ew * len(ch), 1, 1, bias=True)
        fine_widths = [w // 2 ** (len(fine) - j) for j in range(len(fine))]  # two fine stages: w/4, w/2 (authors)
        self.disp_fine = nn.ModuleList(
            [_unit(ch[i], fw, st[i], OUTPUT_STRIDE) for i, fw in zip(fine, fine_widths, strict=True)]
        )
        self.disp_coarse = nn.ModuleList([_unit(ch[i], w, st[i], COARSE_STRIDE) for i in coarse])
        self.disp_fuse = nn.Sequential(
            nn.Conv2d(w * len(coarse), w, 1, bias=False),
            nn.GroupNorm(group_count(w), w),
            nn.Upsample(scale_factor=COARSE_STRIDE // OUTPUT_STRIDE, mode="bilinear", align_corners=False),
            nn.ReLU(inplace=True),
        )
        self.disp_out = nn.Sequential(
            nn.Conv2d(sum(fine_widths) + w, w, 1, bias=False),
            nn.GroupNorm(group_count(w), w),
            nn.ReLU(inplace=True),
            nn.Conv2d(w, 2, 1, bias=False),
        )
        self.register_buffer("mean_shift", torch.zeros(2))
        self.classes: list[str] = []
        self.train(self.training)

    def train(self, mode: bool = True) -> IRN:
        """Like nn.Module.train, but the frozen backbone stays in eval mode (its BatchNorm statistics), as IRN."""
        super().train(mode)
        self.backbone.eval()
        return self

    def edge_parameters(self) -> list[nn.Parameter]:
        """The boundary branch's parameters (the authors' lr x1 group)."""
        return [*self.edge_units.parameters(), *self.edge_out.parameters()]

    def displacement_parameters(self) -> list[nn.Parameter]:
        """The displacement branch's parameters (the authors' lr x10 group)."""
        return [
            *self.disp_fine.parameters(),
            *self.disp_coarse.parameters(),
            *self.disp_fuse.parameters(),
            *self.disp_out.parameters(),
        ]

    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The backbone's stage outputs for float RGB [N,3,H,W] in [0,1], detached (no graph through the backbone)."""
        with torch.no_grad():
            _, outs = self.backbone.stage_outputs(x, keep=self.stage_names)
        return [outs[s].detach() for s in self.stage_names]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Boundary logits [N,1,h,w] and displacement [N,2,h,w] (dy, dx in stride-4 cells), h = ceil(H/4)."""
        h4, w4 = math.ceil(x.shape[2] / OUTPUT_STRIDE), math.ceil(x.shape[3] / OUTPUT_STRIDE)
        h8, w8 = math.ceil(x.shape[2] / COARSE_STRIDE), math.ceil(x.shape[3] / COARSE_STRIDE)
        feats = self.stage_features(x)
        edges = [unit(f)[..., :h4, :w4] for unit, f in zip(self.edge_units, feats, strict=True)]
        edge = self.edge_out(torch.cat(edges, dim=1))
        fine = [unit(feats[i])[..., :h4, :w4] for unit, i in zip(self.disp_fine, self.fine, strict=True)]
        coarse = [unit(feats[i])[..., :h8, :w8] for unit, i in zip(self.disp_coarse, self.coarse, strict=True)]
        up = self.disp_fuse(torch.cat(coarse, dim=1))[..., :h4, :w4]
        disp = self.disp_out(torch.cat([*fine, up], dim=1))
        return edge, disp


def save_irn(path: str | os.PathLike, model: IRN, classes: list[str], extra: dict[str, Any] | None = None) -> None:
    """Save an IRN with its own config, its backbone classifier's config and the class names (safetensors)."""
    config = {"irn": model.config.to_dict(), "classifier": model.backbone.config.to_dict(), "classes": list(classes)}
    save_weights(path, model, KIND, config, extra)


def load_irn(path: str | os.PathLike, device: torch.device | str = "cpu") -> IRN:
    """Load an IRN (eval mode, no parameter gradients) from a run folder or .safetensors file; `.classes` set."""
    from weakseg.models.classifier_io import build_classifier_model

    meta = read_metadata(path)
    if meta["kind"] != KIND:
        raise CheckpointError(f"{path}: is a {meta['kind']} checkpoint, expected an irn")
    cfg = meta["config"]
    try:
        classifier = build_classifier_model(ClassifierConfig(**cfg["classifier"]))
        model = IRN(classifier, IRNConfig(**cfg["irn"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: unusable irn config ({e})") from e
    load_weights(path, model)
    model.classes = list(cfg.get("classes") or [])
    model.eval().requires_grad_(False)
    return model.to(device)
