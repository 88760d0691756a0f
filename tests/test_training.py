"""The classifier trainer over the shared engine: learning, checkpoints, exact resume, bad checkpoints."""

import json

import pytest
import torch

from training.classifier import ClassifierJob, train_classifier
from weakseg.engine import TrainConfig
from weakseg.errors import CheckpointError, WeaksegError
from weakseg.models.checkpoint import load_resume, read_metadata
from weakseg.models.classifier_io import load_classifier


def test_training_reduces_loss_and_saves_a_loadable_checkpoint(tiny_classifier):
    history = json.loads((tiny_classifier / "run.json").read_text())["history"]
    assert len(history) == 3
    assert history[-1]["loss"] < history[0]["loss"]
    meta = read_metadata(tiny_classifier)
    assert meta["kind"] == "classifier" and meta["config"]["classes"][0] and meta["config"]["output_stride"] == 8
    model, classes = load_classifier(tiny_classifier)
    assert len(classes) == 4 and not any(p.requires_grad for p in model.parameters())
    assert isinstance(load_resume(tiny_classifier / "resume.pt")["epoch"], int)


def test_engine_resumes_exactly_after_an_interruption(tmp_path):
    """A run killed after epoch 1 and resumed ends bit-identical to an uninterrupted run."""

    from weakseg.data.loading import EpochLoader
    from weakseg.engine import fit

    def make_sample(i, rng):
        x = torch.from_numpy(rng.normal(size=4).astype("float32")) + i % 3
        return {"x": x, "y": torch.tensor([float(i % 2)])}

    def run(out, stop_at=None):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 1))
        loader = EpochLoader(20, make_sample, batch_size=4, seed=5)

        def loss_fn(m, b):
            return torch.nn.functional.binary_cross_entropy_with_logits(m(b["x"]), b["y"]), {"n": len(b["x"])}

        def on_epoch_end(m, epoch):
            if epoch == stop_at:
                raise KeyboardInterrupt  # dies before this epoch is saved
            return {}

        saved = {}
        fit(model, loader, loss_fn, TrainConfig(epochs=3, lr=0.05, seed=1), out,
            lambda m, extra: saved.update(state={k: v.clone() for k, v in m.state_dict().items()}),
            device=torch.device("cpu"), progress=False, on_epoch_end=on_epoch_end)
        return saved["state"]

    straight = run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", stop_at=2)
    resumed = run(tmp_path / "b")
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    history = json.loads((tmp_path / "b" / "run.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]


def test_resume_with_a_different_configuration_is_refused(tiny_synth, tmp_path):
    out = tmp_path / "run"
    job = ClassifierJob(data=tiny_synth, out=out, crop=64, val_split=None, train=TrainConfig(epochs=1, batch_size=16))
    train_classifier(job, torch.device("cpu"), progress=False)
    job.train.lr = 0.5
    with pytest.raises(WeaksegError, match="different configuration"):
        train_classifier(job, torch.device("cpu"), progress=False)


def test_corrupt_and_mismatched_checkpoints_give_clear_errors(tiny_classifier, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_classifier(bad)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_classifier(tmp_path / "missing")
    truncated = tmp_path / "trunc.safetensors"
    data = (tiny_classifier / "model.safetensors").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_classifier(truncated)
    # weights of another architecture under a classifier header
    from weakseg.models.checkpoint import save_weights
    from weakseg.models.resnet_cam import CAMClassifier, ClassifierConfig

    other = CAMClassifier(ClassifierConfig(num_classes=4, output_stride=16))
    meta = read_metadata(tiny_classifier)
    lying = tmp_path / "lying.safetensors"
    save_weights(lying, torch.nn.Linear(3, 2), "classifier", meta["config"])
    with pytest.raises(CheckpointError, match="do not match"):
        load_classifier(lying)
    del other


def test_pretrained_backbone_from_a_local_file(tmp_path):
    import torchvision

    from weakseg.models.pretrained import load_pretrained_backbone
    from weakseg.models.resnet_cam import CAMClassifier, ClassifierConfig

    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = CAMClassifier(ClassifierConfig(num_classes=3))
    load_pretrained_backbone(model, str(path))
    assert torch.equal(model.stem[0].weight, reference.conv1.weight)
    assert torch.equal(model.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    model.freeze_for_pretrained()
    model.train()
    assert not model.stem[1].training and not model.stem[0].weight.requires_grad
    assert model.classifier.weight.requires_grad
    with pytest.raises(CheckpointError):
        load_pretrained_backbone(CAMClassifier(ClassifierConfig(num_classes=3, arch="resnet50")), str(path))


def test_imagenet_weights_code_path_reads_torch_hub_cache(tmp_path, monkeypatch):
    """'--pretrained imagenet' goes through torchvision's weights API; a pre-filled hub cache avoids the download."""
    import torchvision

    from weakseg.models.pretrained import _TORCHVISION_WEIGHTS, load_pretrained_backbone
    from weakseg.models.resnet_cam import CAMClassifier, ClassifierConfig

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = torchvision.models.resnet18(weights=None)
    name = _TORCHVISION_WEIGHTS["resnet18"].url.rsplit("/", 1)[1]
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), tmp_path / "hub" / "checkpoints" / name)
    model = CAMClassifier(ClassifierConfig(num_classes=2))
    load_pretrained_backbone(model, "imagenet")
    assert torch.equal(model.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)
