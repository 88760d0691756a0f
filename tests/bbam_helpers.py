"""A tiny torchvision Faster R-CNN for the BBAM tests (no download, a forward in milliseconds) and a test image."""

from __future__ import annotations

import torch
from torch import nn

NUM_CLASSES = 3  # background + 2 classes


def tiny_detector(seed: int = 0, num_classes: int = NUM_CLASSES) -> nn.Module:
    """A seeded FasterRCNN over a 2-conv backbone (stride 4, 8 channels) at 96..128 px input, in train mode with
    trainable parameters (as a caller would hand it over); random weights (see fit_box_heads)."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    torch.manual_seed(seed)
    backbone = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.ReLU(),
    )
    backbone.out_channels = 8  # type: ignore[assignment]
    model = FasterRCNN(
        backbone,
        min_size=96,
        max_size=128,
        rpn_anchor_generator=AnchorGenerator(((16, 32),), ((0.5, 1.0, 2.0),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], output_size=4, sampling_ratio=2),
        box_head=TwoMLPHead(8 * 4 * 4, 32),
        box_predictor=FastRCNNPredictor(32, num_classes),
        image_mean=[0.45, 0.45, 0.4],
        image_std=[0.25, 0.25, 0.25],
    )
    with torch.no_grad():
        bn = backbone[1]
        bn.running_mean.uniform_(-0.2, 0.2)  # non-trivial running statistics: eval mode must use them
        bn.running_var.uniform_(0.5, 1.5)
    return model.train()


def fit_box_heads(
    detector: nn.Module,
    images: list[torch.Tensor],
    boxes: list[torch.Tensor],
    labels: list[torch.Tensor],
    steps: int = 150,
    seed: int = 0,
) -> nn.Module:
    """Brief training of the box predictor only (cls_score, bbox_pred) on the pooled features of jittered proposals
    around the given boxes (their class and regression targets) and of random background boxes (class 0); the
    backbone and box head keep their random weights. Makes positives exist and the heads depend on the image."""
    from torchvision.ops import box_iou

    from weakseg.attribution import bbam

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    feats, classes, targets = [], [], []
    was_training = detector.training
    detector.eval()
    heads = detector.roi_heads
    with torch.no_grad():
        for image, bx, lb in zip(images, boxes, labels, strict=True):
            prep = bbam._prepare(detector, image, "mean")
            h, w = image.shape[-2:]
            scale = torch.tensor([prep.ratio_w, prep.ratio_h] * 2)
            props = bbam.jitter_proposals(bx, 200, 0.3, h, w, g).float().reshape(-1, 4)
            xy = torch.rand((200, 2), generator=g) * torch.tensor([w * 0.7, h * 0.7])
            wh = torch.rand((200, 2), generator=g) * torch.tensor([w * 0.3, h * 0.3]) + 4
            props = torch.cat([props, torch.cat([xy, (xy + wh).minimum(torch.tensor([w, h]))], 1)]) * scale
            gt = bx.float() * scale
            iou = box_iou(props, gt)
            best_iou, best = iou.max(1)
            cls = torch.where(best_iou > 0.5, lb[best], torch.zeros_like(best))
            features = bbam._features(detector, prep.batch(prep.x[None]))
            feats.append(heads.box_head(heads.box_roi_pool(features, [props], [prep.size])))
            classes.append(cls)
            targets.append(heads.box_coder.encode_single(gt[best], props))
    x, y, t = torch.cat(feats), torch.cat(classes), torch.cat(targets)
    x_mean, x_std = x.mean(0), x.std(0) + 1e-6
    cls_layer = nn.Linear(x.shape[1], heads.box_predictor.cls_score.out_features)
    box_layer = nn.Linear(x.shape[1], heads.box_predictor.bbox_pred.out_features)
    opt = torch.optim.Adam([*cls_layer.parameters(), *box_layer.parameters()], lr=0.05)
    z = (x - x_mean) / x_std
    fg = y > 0
    for _ in range(steps):
        loss = nn.functional.cross_entropy(cls_layer(z), y)
        pred = box_layer(z).reshape(len(z), -1, 4)[fg, y[fg]]
        loss = loss + nn.functional.smooth_l1_loss(pred, t[fg], beta=1 / 9)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():  # fold the feature standardisation into the predictor's layers
        for layer, target in ((cls_layer, heads.box_predictor.cls_score), (box_layer, heads.box_predictor.bbox_pred)):
            target.weight.copy_(layer.weight / x_std)
            target.bias.copy_(layer.bias - (layer.weight * (x_mean / x_std)).sum(1))
    return detector.train(was_training)


def scene_image(height: int = 48, width: int = 64, seed: int = 0) -> torch.Tensor:
    """A float [3, H, W] image in [0, 1]: smooth noise with two bright rectangles (the objects)."""
    g = torch.Generator().manual_seed(seed)
    img = torch.rand((3, height // 4, width // 4), generator=g)
    img = torch.nn.functional.interpolate(img[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    img = img * 0.5
    img[:, 8:30, 6:28] = torch.tensor([0.9, 0.3, 0.2])[:, None, None]
    img[:, 20:44, 34:60] = torch.tensor([0.2, 0.8, 0.9])[:, None, None]
    return img.clamp(0, 1)


BOXES = torch.tensor([[6.0, 8.0, 28.0, 30.0], [34.0, 20.0, 60.0, 44.0]])
LABELS = torch.tensor([1, 2])
