"""A model repository for serving tests: an untrained LR-ASPP segmenter and a CAM classifier (fixed seeds,
non-trivial BatchNorm statistics) exported by `weakseg.export`, and helpers to start a server on loopback."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from weakseg.export import ExportOptions, ServingOptions, export_model

CLASSES = ["train", "boat", "bird"]
SIZE = 64
HEAD_SCALE = 100.0  # the random classifier's head is scaled up (see build_repository)


def _settle_batchnorm(model: torch.nn.Module, size: int) -> None:
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(4, 3, size, size))
    model.eval()


def build_repository(root: Path) -> Path:
    """Export a segmenter ('seg') and a classifier ('cam') into root/repo; return the repository path."""
    from weakseg.models.classifier_io import save_classifier
    from weakseg.models.resnet_cam import CAMClassifier, ClassifierConfig
    from weakseg.models.segmenter import Segmenter, SegmenterConfig
    from weakseg.models.segmenter_io import save_segmenter

    torch.manual_seed(0)
    seg = Segmenter(SegmenterConfig(num_classes=len(CLASSES) + 1))
    _settle_batchnorm(seg, SIZE)
    save_segmenter(root / "seg.safetensors", seg, CLASSES)
    clf = CAMClassifier(ClassifierConfig(num_classes=len(CLASSES)))
    _settle_batchnorm(clf, SIZE)
    with torch.no_grad():  # logits of a trained network's order (~10, not ~0.1), so AdvCAM's climb moves the maps
        clf.classifier.weight.mul_(HEAD_SCALE)
    save_classifier(root / "cam.safetensors", clf, CLASSES)
    repo = root / "repo"
    options = ExportOptions(input_size=SIZE, serving=ServingOptions(instance_kind="cpu", max_queue_delay_us=5000))
    export_model(root / "seg.safetensors", repo, "seg", options)
    export_model(root / "cam.safetensors", repo, "cam", options)
    return repo


@contextmanager
def running_server(backend, **config):
    """A WeaksegServer on a free loopback port; yields it, stops it afterwards."""
    from serving.server import ServerConfig, WeaksegServer

    server = WeaksegServer(backend, ServerConfig(port=0, grace_s=2.0, health_poll_s=0.2, **config))
    server.start()
    try:
        yield server
    finally:
        server.stop(1.0)


@pytest.fixture(scope="session")
def serving_repo(tmp_path_factory) -> Path:
    """The exported repository (segmenter 'seg', classifier 'cam'), built once per test session."""
    torch.set_num_threads(2)
    return build_repository(tmp_path_factory.mktemp("serving"))


def raw_image(array: np.ndarray):
    """A weakseg.v1 Image message with a raw uint8 HxWx3 tensor."""
    from serving.api import segmentation_pb2 as pb

    h, w, c = array.shape
    return pb.Image(raw=pb.RawImage(data=np.ascontiguousarray(array).tobytes(), height=h, width=w, channels=c))


def ort_run(repo: Path, name: str, pixels: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of <repo>/<name>/1/model.onnx run directly with onnxruntime (CPU)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(repo / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"pixels": pixels})))
