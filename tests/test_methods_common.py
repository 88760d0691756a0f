"""What every attribution method promises: maps in [0,1] at image size for the present classes only (so absent
classes get nothing), the same maps for the same seed, CLI flags for every hyper-parameter, and pickling (Ray)."""

import pickle

import numpy as np
import pytest
import torch

from cli.main import build_parser
from cli.method_args import method_from_args
from weakseg.attribution import METHODS, CAM, RIB, AdvCAM, FickleNet, GradCAM, MultiScale, RIBAdvCAM
from weakseg.data.voc import VOCDataset
from weakseg.models.resnet_cam import CAMClassifier, ClassifierConfig
from weakseg.pseudo import LabelConfig, pseudo_label

MS = MultiScale(scales=(1.0, 0.5), flip=True)


def _methods(data):
    rib = {"data": str(data), "steps": 1, "batch": 3, "crop": 32}
    return {
        "cam": (CAM(), None),
        "gradcam": (GradCAM(), None),
        "advcam": (AdvCAM(steps=2), None),
        "advcam-code": (AdvCAM(steps=2, variant="code"), None),
        "rib": (RIB(**rib), RIB(**{**rib, "seed": 1})),
        "fickle": (FickleNet(samples=6), FickleNet(samples=6, seed=1)),
        "rib-advcam": (RIBAdvCAM(**{f"rib_{k}": v for k, v in rib.items()}, advcam_steps=2),
                       RIBAdvCAM(**{f"rib_{k}": v for k, v in rib.items()}, rib_seed=1, advcam_steps=2)),
    }


@pytest.fixture(scope="module")
def models():
    out = {}
    for head in ("cam", "fickle"):
        torch.manual_seed(0)
        out[head] = CAMClassifier(ClassifierConfig(num_classes=4, head=head)).eval().requires_grad_(False)
    return out


@pytest.fixture(scope="module")
def image(tiny_synth):
    ds = VOCDataset(tiny_synth, "train", labels="auto")
    multi = next(i for i in ds.ids if 1 < len(ds.label_ids(i)) < 4)  # some classes present, some absent
    return multi, ds.image(multi)[:48, :40], ds.label_ids(multi)


def test_every_registered_method_is_covered(tiny_synth):
    assert {type(m).name for m, _ in _methods(tiny_synth).values()} == set(METHODS)


@pytest.mark.parametrize("name", ["cam", "gradcam", "advcam", "advcam-code", "rib", "fickle", "rib-advcam"])
def test_maps_in_unit_range_at_image_size_for_present_classes_and_reproducible(name, models, image, tiny_synth):
    method, other_seed = _methods(tiny_synth)[name]
    model = models["fickle" if name == "fickle" else "cam"]
    image_id, pixels, class_ids = image
    run = lambda m: pseudo_label(m, model, pixels, class_ids, MS, LabelConfig(), torch.device("cpu"), image_key=image_id)
    first = run(method)
    maps = first.maps.astype(np.float32)
    assert maps.shape == (len(class_ids), 48, 40)  # one map per present class, none for absent ones
    assert maps.min() >= 0 and np.allclose(maps.reshape(len(class_ids), -1).max(axis=1), 1.0, atol=1e-3)
    assert set(np.unique(first.label)) <= {0, 255, *class_ids}  # an absent class never labels a pixel
    assert np.array_equal(first.maps, run(method).maps)  # deterministic for a fixed seed
    if other_seed is not None:
        assert not np.array_equal(first.maps, run(other_seed).maps)
    assert pickle.loads(pickle.dumps(method)) == method and pickle.loads(pickle.dumps(method)).config() == method.config()


def test_every_hyper_parameter_is_a_cli_flag(tiny_synth):
    parser = build_parser()
    base = ["pseudo", "--model", "m", "--data", "d", "--out", "o"]
    args = parser.parse_args(base + ["--method", "advcam", "--advcam-steps", "3", "--advcam-variant", "code",
                                     "--advcam-restrict", "false", "--advcam-lam", "2.5"])
    assert method_from_args(args) == AdvCAM(steps=3, variant="code", restrict=False, lam=2.5)
    args = parser.parse_args(base + ["--method", "rib", "--rib-data", str(tiny_synth), "--rib-pooling", "gap",
                                     "--rib-margin-mode", "stop", "--rib-disjoint", "true"])
    assert method_from_args(args) == RIB(data=str(tiny_synth), pooling="gap", margin_mode="stop", disjoint=True)
    args = parser.parse_args(base + ["--method", "fickle", "--fickle-samples", "50", "--fickle-aggregate", "vote"])
    assert method_from_args(args) == FickleNet(samples=50, aggregate="vote")
    args = parser.parse_args(base + ["--method", "rib-advcam", "--rib-advcam-rib-data", "x", "--rib-advcam-advcam-xi", "0.01"])
    built = method_from_args(args)
    assert built.parts.adapter == RIB(data="x") and built.parts.inner == AdvCAM(xi=0.01) and built.parts.at == "last"
    with pytest.raises(SystemExit):
        parser.parse_args(base + ["--method", "advcam", "--advcam-variant", "paper"])
