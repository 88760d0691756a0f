"""RIB (dissertation 3.4): L_RIB, GNDRP, per-image adaptation that never touches the caller's model, reproducibility."""

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from weakseg.attribution import CAM, RIB, MultiScale, compute_maps
from weakseg.attribution.base import AttributionMethod
from weakseg.attribution.gndrp import gap, gndrp
from weakseg.attribution.rib import companion_pool, rib_loss
from weakseg.data.augment import to_tensor
from weakseg.data.voc import VOCDataset
from weakseg.errors import WeaksegError
from weakseg.models.classifier_io import save_classifier
from weakseg.models.resnet_cam import CAMClassifier, ClassifierConfig

REPO = Path(__file__).resolve().parents[1]
TWO_SCALES = MultiScale(scales=(1.0, 0.5), flip=True)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = CAMClassifier(ClassifierConfig(num_classes=4, arch="resnet18", output_stride=8))
    for bn in m.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.1, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
    return m.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def sample(tiny_synth):
    ds = VOCDataset(tiny_synth, "train", labels="auto")
    image_id = ds.ids[3]
    image = F.interpolate(to_tensor(ds.image(image_id))[None], size=(40, 40), mode="bilinear", align_corners=False)[0]
    return image_id, image, [c - 1 for c in ds.label_ids(image_id)]  # downsized: keeps the tests fast


def _rib(data, **kw):
    return RIB(**{"data": str(data), "steps": 2, "batch": 3, "crop": 24, "lr": 1e-2, **kw})


def test_lrib_gradient_vanishes_above_the_margin():
    logits = torch.tensor([[5.0, 700.0, 3.0, 650.0]], requires_grad=True)
    targets = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    rib_loss(logits, targets, margin=600.0).backward()
    assert logits.grad.tolist() == [[-1.0, 0.0, 0.0, 0.0]]  # present and below m: -1; above m or absent: 0
    logits.grad = None
    rib_loss(logits, targets, margin=600.0, mode="stop").backward()
    assert logits.grad.tolist() == [[-1.0, -1.0, 0.0, 0.0]]  # the code's variant does not clamp


def test_gndrp_pools_only_locations_at_or_below_tau():
    cams = torch.tensor([[[[10.0, 4.0], [2.0, -6.0]]]], requires_grad=True)  # normalised ReLU'd: 1, .4, .2, 0
    pooled = gndrp(cams, tau=0.4)
    assert pooled.item() == pytest.approx((4.0 + 2.0 - 6.0) / 3)  # U_tau = {.4, .2, 0}: the peak is left out
    pooled.sum().backward()
    expected = torch.tensor([[0.0, 1 / 3], [1 / 3, 1 / 3]])  # no gradient reaches the excluded location
    assert torch.allclose(cams.grad[0, 0], expected) and cams.grad[0, 0, 0, 0] == 0
    code = gndrp(cams.detach(), tau=0.4, mode="masked_mean")  # raw map / own max < tau, averaged over all 4
    assert code.item() == pytest.approx((2.0 - 6.0) / 4)
    assert gap(cams.detach()).item() == pytest.approx(10.0 / 4)


def test_callers_model_is_bit_identical_after_rib(model, tiny_synth, sample):
    image_id, image, classes = sample
    before = {k: v.clone() for k, v in model.state_dict().items()}
    method = _rib(tiny_synth)
    maps = compute_maps(method, model, image, classes, TWO_SCALES, image_key=image_id)
    assert maps.shape == (len(classes), 40, 40)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())
    cam = compute_maps(CAM(), model, image, classes, TWO_SCALES)
    assert not torch.allclose(maps, cam, atol=1e-3)  # the copies did adapt


@dataclass(frozen=True)
class _SumOverModels(AttributionMethod):
    """sum_k CAM(x; theta_k) over given models (a reference for RIB's aggregation)."""

    models: tuple
    name = "sum-over-models"

    def scale_maps(self, model, x, classes, *, image_key=""):
        return sum(CAM().scale_maps(m, x, classes) for m in self.models)


def test_map_is_the_sum_of_cams_of_one_adaptation_reused_across_scales(model, tiny_synth, sample):
    image_id, image, classes = sample
    method = _rib(tiny_synth, pooling="gap", steps=1)
    got = compute_maps(method, model, image, classes, TWO_SCALES, image_key=image_id)
    x = torch.stack([image, image.flip(-1)])  # the first scale (1.0) with its flip: what the adaptation sees
    models = method.adapt(model, x, torch.tensor(classes), image_key=image_id)
    assert len(models) == 2 and models[0] is model
    expected = compute_maps(_SumOverModels(tuple(models)), model, image, classes, TWO_SCALES)
    assert torch.allclose(got, expected, atol=1e-5)
    again = compute_maps(method, model, image, classes, TWO_SCALES, image_key=image_id)  # a new call adapts anew
    assert torch.equal(got, again)


def test_options_change_the_adaptation(model, tiny_synth, sample):
    image_id, image, classes = sample
    maps = {name: compute_maps(_rib(tiny_synth, steps=1, **kw), model, image, classes, MultiScale(scales=(1.0,)), image_key=image_id)
            for name, kw in [("gndrp", {}), ("gap", {"pooling": "gap"}), ("seed", {"seed": 1})]}
    for name in ("gap", "seed"):
        assert not torch.allclose(maps["gndrp"], maps[name], atol=1e-4), name
    stopped = _rib(tiny_synth, margin_mode="stop", margin=-1e9)  # stops before the first update: plain CAM
    x = torch.stack([image, image.flip(-1)])
    assert len(stopped.adapt(model, x, torch.tensor(classes), image_key=image_id)) == 1
    cam = compute_maps(CAM(), model, image, classes, MultiScale(scales=(1.0,)))
    assert torch.allclose(compute_maps(stopped, model, image, classes, MultiScale(scales=(1.0,)), image_key=image_id), cam, atol=1e-5)


def test_companions_exclude_the_image_and_optionally_its_classes(tiny_synth, sample):
    image_id, _, classes = sample
    pool = companion_pool(str(tiny_synth), "train", "auto")
    anyone = pool.candidates(image_id, None)
    disjoint = pool.candidates(image_id, classes)
    assert image_id not in anyone and len(anyone) == len(pool.ids) - 1
    assert 0 < len(disjoint) < len(anyone)
    rows = {i: pool.labels[n] for n, i in enumerate(pool.ids.tolist())}
    assert all(rows[i][classes].sum() == 0 for i in disjoint.tolist())
    with pytest.raises(WeaksegError, match="--rib-data"):
        companion_pool("", "train", "auto")


SCRIPT = """
import json, sys, torch, numpy as np
torch.set_num_threads(1)
from weakseg.attribution import RIB, MultiScale, compute_maps
from weakseg.data.augment import to_tensor
from weakseg.data.voc import VOCDataset
from weakseg.models.classifier_io import load_classifier
args = json.loads(sys.argv[1])
model, _ = load_classifier(args["model"])
ds = VOCDataset(args["data"], "train", labels="auto")
image = torch.nn.functional.interpolate(to_tensor(ds.image(args["id"]))[None], size=(40, 40), mode="bilinear", align_corners=False)[0]
maps = compute_maps(RIB(**args["rib"]), model, image, args["classes"], MultiScale(scales=(1.0, 0.5)), image_key=args["id"])
np.save(args["out"], maps.numpy())
"""


def test_same_image_gives_the_same_map_in_two_processes(model, tiny_synth, sample, tmp_path):
    image_id, image, classes = sample
    weights = tmp_path / "model.safetensors"
    save_classifier(weights, model, ["a", "b", "c", "d"])
    params = {"data": str(tiny_synth), "steps": 2, "batch": 3, "crop": 24, "lr": 1e-2}
    args = {"model": str(weights), "data": str(tiny_synth), "id": image_id, "classes": classes, "rib": params,
            "out": str(tmp_path / "child.npy")}
    subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(args)], cwd=REPO, check=True, timeout=120)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = compute_maps(RIB(**params), model, image, classes, MultiScale(scales=(1.0, 0.5)), image_key=image_id)
    finally:
        torch.set_num_threads(threads)
    child = np.load(tmp_path / "child.npy")
    assert np.array_equal(child, here.numpy())
