"""Exact resume of the real CAM classifier on every available device (issue 16 item 1).

The resumed run must equal the uninterrupted one, and the optimizer state it saves must live on the model's
device (resuming on CUDA used to leave Adam's moments on the CPU). The FickleNet head draws its dropout masks
from the device's random generator, so on CUDA the run is only exact when the CUDA RNG state is resumed too.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from training.classifier import ClassifierJob, prepare_classifier
from weakseg.engine import TrainConfig, fit
from weakseg.models.checkpoint import RESUME_NAME

DEVICES = [pytest.param("cpu"),
           pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"))]


def _run(data, out, device: torch.device, stop_at: int | None = None) -> dict[str, torch.Tensor]:
    """Train a fickle-head resnet18 for 2 epochs into out (dying after epoch stop_at); its final weights on the CPU."""
    job = ClassifierJob(data=data, out=out, crop=48, val_split=None, head="fickle",
                        train=TrainConfig(epochs=2, batch_size=16, lr=2e-3, seed=4))
    setup = prepare_classifier(job, device)

    def loss_fn(model, batch):
        logits = model(batch["image"].to(device))
        return F.multilabel_soft_margin_loss(logits, batch["target"].to(device)), {"n": len(batch["image"])}

    def on_epoch_end(model, epoch):
        if epoch == stop_at:
            raise KeyboardInterrupt  # dies before this epoch is saved
        return {}

    fit(setup.model, setup.loader, loss_fn, job.train, out, setup.save, device=device, head_params=setup.head_params,
        run_info=setup.run_info, progress=False, on_epoch_end=on_epoch_end)
    return {k: v.detach().cpu().clone() for k, v in setup.model.state_dict().items()}


@pytest.mark.parametrize("device_name", DEVICES)
def test_classifier_resumes_exactly_with_optimizer_state_on_the_device(tiny_synth, tmp_path, monkeypatch, device_name):
    device = torch.device(device_name)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        straight = _run(tiny_synth, tmp_path / "straight", device)
        with pytest.raises(KeyboardInterrupt):
            _run(tiny_synth, tmp_path / "resumed", device, stop_at=2)
        assert json.loads((tmp_path / "resumed" / "run.json").read_text())["history"][-1]["epoch"] == 1
        resumed = _run(tiny_synth, tmp_path / "resumed", device)
    finally:
        torch.set_num_threads(threads)
    for key, value in straight.items():  # bit-identical on the CPU; CUDA kernels may round differently run to run
        if device.type == "cpu":
            assert torch.equal(value, resumed[key]), key
        else:
            torch.testing.assert_close(resumed[key], value, rtol=1e-4, atol=1e-6, msg=key)
    state = torch.load(tmp_path / "resumed" / RESUME_NAME, weights_only=True)  # tensors where they were saved from
    moments = [t for s in state["optimizer"]["state"].values() for t in s.values()
               if isinstance(t, torch.Tensor) and t.dim() > 0]
    assert moments and all(t.device.type == device.type for t in moments)
    assert ("cuda_rng" in state) == (device.type == "cuda")
    assert [h["epoch"] for h in json.loads((tmp_path / "resumed" / "run.json").read_text())["history"]] == [1, 2]
