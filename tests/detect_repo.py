"""A model repository for the detection serving tests: a tiny MobileNetV3-FPN Faster R-CNN ('det') and Mask R-CNN
('inst'), random weights from fixed seeds with BatchNorm statistics settled on a few images (so their outputs
depend on the image and their scores do not tie), exported by `weakseg export` at 64 px."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from weakseg.export import ExportOptions, ServingOptions, export_model

CLASSES = ["cat", "dog"]
SIZE = 64  # export (trace) size and test image side
MIN_SIZE = 128  # the detectors' input size: at 64 px MobileNetV3's stride-32 levels would be 2x2


def scene(seed: int, height: int = SIZE, width: int = SIZE) -> np.ndarray:
    """A uint8 HxWx3 image: smooth noise with two flat rectangles."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((1, 3, max(2, height // 8), max(2, width // 8)), dtype=np.float32))
    img = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[0]
    img = img.permute(1, 2, 0).numpy() * 0.6
    img[height // 8 : height // 2, width // 10 : width // 2] = (0.9, 0.3, 0.2)
    img[height // 3 : height * 7 // 8, width // 2 : width * 15 // 16] = (0.2, 0.8, 0.9)
    return np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)


def settle_batchnorm(model: torch.nn.Module, images: list[np.ndarray]) -> None:
    """Set every BatchNorm's running statistics to the backbone's batch statistics on images (then eval mode)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one pass sets the statistics
    x = [torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in images]
    model.backbone.train()
    with torch.no_grad():
        model.backbone(model.transform(x)[0].tensors)
    for m in norms:
        m.momentum = 0.1
    model.eval()


def save_tiny_models(root: Path) -> tuple[Path, Path]:
    """Write root/det.safetensors (Faster R-CNN) and root/inst.safetensors (Mask R-CNN); return both paths."""
    from weakseg.models.detector import DetectorConfig, build_detector, save_detector
    from weakseg.models.instance import InstanceConfig, build_instance_model, save_instance_model

    images = [scene(s) for s in range(4)]
    torch.manual_seed(0)
    det_config = DetectorConfig(classes=tuple(CLASSES), min_size=MIN_SIZE, max_size=MIN_SIZE, box_head_dim=64)
    det = build_detector(det_config)
    settle_batchnorm(det, images)
    save_detector(root / "det.safetensors", det, det_config)
    torch.manual_seed(1)
    inst_config = InstanceConfig(
        classes=tuple(CLASSES),
        min_size=MIN_SIZE,
        max_size=MIN_SIZE,
        box_head_dim=64,
        mask_head_dim=16,
        mask_head_layers=1,
    )
    inst = build_instance_model(inst_config)
    settle_batchnorm(inst, images)
    save_instance_model(root / "inst.safetensors", inst, inst_config)
    return root / "det.safetensors", root / "inst.safetensors"


def build_detection_repo(root: Path) -> Path:
    """Export 'det' and 'inst' into root/repo (CPU instances); return the repository path."""
    det, inst = save_tiny_models(root)
    repo = root / "repo"
    options = ExportOptions(input_size=SIZE, serving=ServingOptions(instance_kind="cpu"))
    export_model(det, repo, "det", options)
    export_model(inst, repo, "inst", options)
    return repo


def ort_detect(repo: Path, name: str, image: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of <repo>/<name>/1/model.onnx on one uint8 HxWx3 image, run directly with onnxruntime (CPU)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(repo / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"pixels": image}), strict=True))
