"""RIB against a reference written from the dissertation (3.4) in the test, not from weakseg.attribution.rib.

theta_k = theta_{k-1} - lr * grad L_RIB, L_RIB = -sum_rows sum_c t_c min(m, y^c), y = GNDRP of the raw class maps
(mean over the locations whose normalised CAM is <= tau, the selection held constant), on a batch of the image
with its flip plus B-1 companions; the map is sum_{k=0..K} CAM(x; theta_k), flipped back, summed over scales,
ReLU'd and divided by its maximum. The companion pool is made deterministic so no random draw has to be
replayed: one companion image, left-right symmetric, at the crop size, with rescaling switched off, so every
augmented companion equals the image itself whatever flip or offset is drawn.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from weakseg.attribution import RIB, MultiScale, compute_maps
from weakseg.data.annotations import Annotation, ObjectBox, write_voc_xml
from tests.conftest import random_bn_classifier

CLASSES = ["cat", "dog", "car", "boat"]
SIZE = 40
TARGET = [0, 2]  # 0-based classes of the explained image
COMPANION = [1, 3]  # the companion's classes


def gndrp_by_hand(cams: torch.Tensor, tau: float) -> torch.Tensor:
    """[N,C] logits: per row and class, the mean of the raw map over {u : relu(cam)(u) / max relu(cam) <= tau}."""
    rows = []
    for n in range(cams.shape[0]):
        row = []
        for c in range(cams.shape[1]):
            cam = cams[n, c]
            pos = cam.detach().clamp_min(0)
            low = (pos / max(float(pos.max()), 1e-5)) <= tau  # a constant selection: no gradient through it
            row.append(cam[low].mean() if bool(low.any()) else cam.sum() * 0)
        rows.append(torch.stack(row))
    return torch.stack(rows)


def rib_maps_by_hand(model, image: torch.Tensor, classes: list[int], companions: torch.Tensor, companion_labels,
                     steps: int, lr: float, margin: float, tau: float, scales: tuple[float, ...]) -> torch.Tensor:
    """Maps [K,H,W] of RIB with flip, adapting a copy on the first scale and summing CAMs of theta_0..theta_K."""
    H, W = image.shape[-2:]
    batches = []
    for s in scales:
        x = image[None] if s == 1.0 else F.interpolate(image[None], size=(round(H * s), round(W * s)),
                                                       mode="bilinear", align_corners=False)
        batches.append(torch.cat([x, x.flip(-1)]))
    target = torch.zeros(2, len(CLASSES))
    target[:, classes] = 1.0
    theta = copy.deepcopy(model).eval()
    sums: list[torch.Tensor] = [0] * len(batches)  # per scale: sum over k of ReLU(CAM) at feature resolution
    for k in range(steps + 1):
        with torch.no_grad():
            for i, batch in enumerate(batches):
                sums[i] = sums[i] + F.relu(theta.logits_and_cams(batch)[1][:, classes])
        if k == steps:
            break
        theta.zero_grad(set_to_none=True)
        theta.requires_grad_(True)
        with torch.enable_grad():
            own = gndrp_by_hand(theta.logits_and_cams(batches[0])[1], tau)
            loss = -(target * torch.clamp(own, max=margin)).sum()
            if len(companions):
                pooled = gndrp_by_hand(theta.logits_and_cams(companions)[1], tau)
                loss = loss - (companion_labels * torch.clamp(pooled, max=margin)).sum()
            loss.backward()
        with torch.no_grad():
            for p in theta.parameters():
                if p.grad is not None:
                    p -= lr * p.grad
        theta.requires_grad_(False)
    out = torch.zeros(len(classes), H, W)
    for total in sums:
        merged = total[:1] + total[1:].flip(-1)
        out += F.interpolate(merged, size=(H, W), mode="bilinear", align_corners=False)[0]
    out = F.relu(out)
    return out / out.flatten(1).amax(1).clamp_min(1e-5)[:, None, None]


def write_sample(root: Path, image_id: str, pixels: np.ndarray, classes: list[int]) -> None:
    """One PNG image and its XML (whole-image boxes of its classes) in a VOC2012 folder."""
    Image.fromarray(pixels).save(root / "JPEGImages" / f"{image_id}.png")
    boxes = [ObjectBox(CLASSES[c], 1, 1, SIZE, SIZE) for c in classes]
    (root / "Annotations" / f"{image_id}.xml").write_text(
        write_voc_xml(Annotation(filename=f"{image_id}.png", width=SIZE, height=SIZE, objects=boxes)))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(dataset root, the explained image as [3,H,W] in [0,1], the symmetric companion as [3,H,W])."""
    root = tmp_path_factory.mktemp("rib_ref") / "VOC2012"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    rng = np.random.default_rng(5)
    target = rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
    half = rng.integers(0, 256, size=(SIZE, SIZE // 2, 3), dtype=np.uint8)
    companion = np.concatenate([half, half[:, ::-1]], axis=1)  # left-right symmetric: a flip changes nothing
    assert np.array_equal(companion, companion[:, ::-1])
    write_sample(root, "target", target, TARGET)
    write_sample(root, "companion", companion, COMPANION)
    (root / "ImageSets/Segmentation/train.txt").write_text("target\ncompanion\n")  # the image is in its own split
    as_tensor = lambda a: torch.from_numpy(a).permute(2, 0, 1).float() / 255.0  # noqa: E731
    return root, as_tensor(target), as_tensor(companion)


STEPS, LR, TAU, SCALES = 3, 0.05, 0.4, (1.0, 0.5)
CASES = [(1, 600.0), (3, 600.0), (3, 0.02)]  # (B, m): no companions; two companion draws; a margin that caps logits


@pytest.fixture(scope="module")
def references(setup) -> dict:
    """The reference maps of every case, and plain CAM (K=0), for the model random_bn_classifier gives."""
    _, image, companion = setup
    torch.manual_seed(0)
    model = random_bn_classifier(num_classes=len(CLASSES))
    out = {}
    for batch, margin in [*CASES, (1, 0)]:
        labels = torch.zeros(batch - 1, len(CLASSES))
        labels[:, COMPANION] = 1.0
        companions = companion[None].repeat(batch - 1, 1, 1, 1)  # the only other image of the split, B-1 times
        steps = STEPS if margin else 0
        out[batch, margin] = rib_maps_by_hand(model, image, TARGET, companions, labels, steps, LR, margin, TAU, SCALES)
    return out


@pytest.mark.parametrize("batch,margin", CASES)
def test_rib_maps_equal_the_reference(setup, references, batch: int, margin: float) -> None:
    root, image, _ = setup
    torch.manual_seed(0)
    model = random_bn_classifier(num_classes=len(CLASSES))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rib = RIB(data=str(root), split="train", labels="xml", steps=STEPS, lr=LR, batch=batch, margin=margin, tau=TAU,
              crop=SIZE, scale_min=1.0, scale_max=1.0)
    got = compute_maps(rib, model, image, TARGET, MultiScale(scales=SCALES, flip=True), image_key="target")
    assert got.shape == (2, SIZE, SIZE)
    torch.testing.assert_close(got, references[batch, margin], atol=2e-4, rtol=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the caller's model is untouched


def test_the_cases_are_different_computations(references) -> None:
    """Each case checks something of its own: the adaptation, the companions and the margin all move the maps."""
    cam_only = references[1, 0]
    for case in CASES:
        assert (references[case] - cam_only).abs().max() > 0.05, case  # far beyond the 2e-4 tolerance
    assert (references[1, 600.0] - references[3, 600.0]).abs().max() > 1e-3
    assert (references[3, 600.0] - references[3, 0.02]).abs().max() > 1e-3
