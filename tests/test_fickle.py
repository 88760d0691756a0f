"""FickleNet (dissertation 3.2.1): the map-expansion head against a naive per-window implementation, training with
`--head fickle`, and stochastic inference that runs the backbone once per view."""

import json

import pytest
import torch
import torch.nn.functional as F

from cli.main import main
from weakseg.attribution import CAM, FickleNet, MultiScale, compute_maps
from weakseg.errors import WeaksegError
from weakseg.models.classifier_io import load_classifier
from weakseg.models.fickle_head import FickleHead, centre_mask, expand_windows
from weakseg.models.resnet_cam import CAMClassifier, ClassifierConfig


def _naive(feats, weight, keep):
    """Fig. 3.2(a): for every sliding-window position, drop units of its own window, then convolve that window."""
    n, d, h, w = feats.shape
    k = weight.shape[-1]
    padded = F.pad(feats, (k // 2,) * 4)
    out = torch.zeros(n, weight.shape[0], h, w, dtype=feats.dtype)
    for i in range(h):
        for j in range(w):
            window = padded[:, :, i:i + k, j:j + k] * keep[:, :, i * k:(i + 1) * k, j * k:(j + 1) * k]
            out[:, :, i, j] = torch.einsum("ndab,cdab->nc", window, weight)
    return out


@pytest.mark.parametrize("kernel,mode", [(3, "spatial"), (3, "element"), (5, "spatial")])
def test_expansion_equals_naive_per_window_dropout_and_convolution(kernel, mode):
    torch.manual_seed(0)
    head = FickleHead(in_channels=6, num_classes=3, kernel=kernel, drop=0.6).double()
    feats = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    expanded = expand_windows(feats, kernel)
    assert expanded.shape == (2, 6, 5 * kernel, 7 * kernel)
    mask = head.sample_mask(tuple(expanded.shape), torch.Generator().manual_seed(1), mode=mode).double()
    assert mask.shape[1] == (1 if mode == "spatial" else 6)
    assert 0.2 < (mask[:, :, ~centre_mask(5, 7, kernel)] > 0).double().mean() < 0.6  # ~40% kept outside the centres
    fast = head.selected_maps(expanded, mask)
    slow = _naive(feats, head.weight.detach(), mask.expand_as(expanded))
    assert torch.allclose(fast, slow, atol=1e-10)
    full = torch.ones_like(mask)  # selecting every unit is the plain same-padded k x k convolution
    assert torch.allclose(head.selected_maps(expanded, full), head.expected_maps(feats), atol=1e-10)


def test_centres_are_never_dropped_and_modes_differ():
    torch.manual_seed(0)
    head = FickleHead(8, 2, kernel=3, drop=0.9)
    mask = head.sample_mask((1, 8, 12, 12), torch.Generator().manual_seed(0))
    assert (mask[:, :, centre_mask(4, 4, 3)] == 1).all()
    values = mask[:, :, ~centre_mask(4, 4, 3)].unique()
    assert len(values) == 2 and values[0] == 0 and values[1] == pytest.approx(10.0)  # dropped, or kept x 1/(1-p)
    feats = torch.randn(2, 8, 4, 4)
    head.train()
    assert not torch.allclose(head(feats), head(feats))  # a new selection at every training forward
    head.eval()
    assert torch.equal(head(feats), head.expected_maps(feats))  # eval mode is the deterministic expectation


def _fickle_model():
    torch.manual_seed(0)
    return CAMClassifier(ClassifierConfig(num_classes=4, head="fickle")).eval().requires_grad_(False)


def test_inference_runs_the_backbone_once_per_view_and_is_seeded():
    model = _fickle_model()
    image = torch.rand(3, 40, 48, generator=torch.Generator().manual_seed(2))
    calls = []
    model.stem.register_forward_hook(lambda *a: calls.append(1))
    ms = MultiScale(scales=(1.0, 0.5), flip=True)
    maps = compute_maps(FickleNet(samples=30), model, image, [0, 2], ms, image_key="img")
    assert len(calls) == 2  # one backbone pass per scale (image and flip batched), not one per sample
    assert maps.shape == (2, 40, 48) and 0 <= maps.min() and maps.max() <= 1 + 1e-6
    assert torch.equal(maps, compute_maps(FickleNet(samples=30), model, image, [0, 2], ms, image_key="img"))
    assert not torch.equal(maps, compute_maps(FickleNet(samples=30, seed=1), model, image, [0, 2], ms, image_key="img"))
    for other_method in (FickleNet(samples=30, aggregate="vote"), FickleNet(samples=30, aggregate="mean"),
                         FickleNet(samples=30, mask="element")):
        other = compute_maps(other_method, model, image, [0, 2], ms, image_key="img")
        assert other.shape == maps.shape and not torch.allclose(other, maps)
    with pytest.raises(WeaksegError, match="--head fickle"):
        compute_maps(FickleNet(), CAMClassifier(ClassifierConfig(num_classes=4)).eval(), image, [0], ms)


def test_train_with_fickle_head_then_pseudo_labels_from_the_cli(tiny_synth, tmp_path, capsys):
    run = tmp_path / "fickle_run"
    assert main(["train", "classifier", "--data", str(tiny_synth), "--out", str(run), "--head", "fickle",
                 "--fickle-drop", "0.5", "--epochs", "1", "--batch-size", "16", "--crop", "48", "--val-split", "",
                 "--quiet", "--device", "cpu"]) == 0
    model, classes = load_classifier(run)
    assert isinstance(model.classifier, FickleHead) and model.classifier.drop == 0.5 and len(classes) == 4
    train = json.loads((run / "run.json").read_text())["train"]  # from scratch: lr 1e-3, head x1
    assert train["lr"] == 1e-3 and train["head_lr_mult"] == 1.0
    capsys.readouterr()
    out = tmp_path / "pseudo"
    rc = main(["pseudo", "--model", str(run), "--data", str(tiny_synth), "--out", str(out), "--method", "fickle",
               "--fickle-samples", "8", "--limit", "2", "--scales", "1.0", "--workers", "0", "--quiet", "--device", "cpu"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and summary["succeeded"] == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == {"method": "fickle", "samples": 8, "aggregate": "max", "threshold": 0.5, "seed": 0,
                                  "mask": "spatial"}
    # the trained k x k head also serves plain CAM (its deterministic expectation)
    image = torch.rand(3, 32, 32)
    assert compute_maps(CAM(), model, image, [1], MultiScale(scales=(1.0,))).shape == (1, 32, 32)
