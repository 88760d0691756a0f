"""Batch jobs fail fast and resume honestly (issue 16 item 3), on a real local Ray and in process.

- A wrong --rib-data or a broken model is refused once, before any image is dispatched, and nothing is written.
- N failed images in a row stop the job with the first of their errors.
- Paths are made absolute before they are shipped, and every worker checks them on its node.
- RIB's companion folder is recorded but not pinned: moving the dataset resumes; changing a setting is refused.
- The --retries default has one source.
"""

from __future__ import annotations

import json
import shutil
import socket

import pytest
import torch

from batch.cluster import RayOptions
from batch.pseudo_job import (
    DEFAULT_MAX_CONSECUTIVE_FAILURES,
    DEFAULT_RETRIES,
    FailureStreak,
    ImageOutcome,
    PseudoJob,
    absolute_job,
    done_ids,
    run_local,
)
from batch.ray_job import _start_workers, _wait_ready, run_ray
from tests.test_batch_ray import local_ray  # noqa: F401  (the module-scoped in-process Ray)
from weakseg.attribution import CAM, RIB, MultiScale
from weakseg.data.classes import load_classes
from weakseg.data.voc import VOCDataset
from weakseg.errors import WeaksegError
from weakseg.models.classifier_io import save_classifier
from weakseg.models.resnet_cam import CAMClassifier, ClassifierConfig
from weakseg.pseudo import manifest_mismatch

ONE_SCALE = MultiScale(scales=(1.0,), flip=True)


def _rib(data, **kw) -> RIB:
    return RIB(**{"data": str(data), "steps": 1, "batch": 2, "crop": 16, **kw})


def _job(method, model, data, out, **kw) -> PseudoJob:
    return PseudoJob(method=method, model=model, data=data, split="train", out=out, multiscale=ONE_SCALE,
                     limit=kw.pop("limit", 2), **kw)


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_wrong_rib_data_is_refused_before_any_image(local_ray, tiny_synth, random_model, tmp_path, executor, one_thread):
    nowhere = tmp_path / "no_such_VOC2012"
    three = tmp_path / "three_classes"
    from weakseg.data.synth import SynthConfig, generate

    generate(SynthConfig(seed=1, train=4, val=1, ood=1, classes=3, size=32), three, progress=False)
    for data, message in ((nowhere, "--rib-data"), (three, "has 3 classes but the model has 4")):
        out = tmp_path / f"out_{executor}_{data.name}"
        job = _job(_rib(data), random_model, tiny_synth, out)
        with pytest.raises(WeaksegError, match=message) as info:
            run_local(job, torch.device("cpu"), progress=False) if executor == "local" else \
                run_ray(job, RayOptions(workers=1), "cpu", progress=False)
        assert str(data) in str(info.value)
        assert not out.exists()  # refused before the output folder, manifest or any image


def test_broken_model_is_refused_before_any_image(local_ray, tiny_synth, tmp_path, one_thread):
    torch.manual_seed(0)
    model = CAMClassifier(ClassifierConfig(num_classes=4)).eval()
    with torch.no_grad():
        model.classifier.weight[0].fill_(float("nan"))  # loads fine, every map of class 1 is NaN
    path = tmp_path / "nan.safetensors"
    save_classifier(path, model, load_classes(tiny_synth))
    out = tmp_path / "out"
    with pytest.raises(WeaksegError, match="non-finite") as info:
        run_ray(_job(CAM(), path, tiny_synth, out), RayOptions(workers=1), "cpu", progress=False)
    assert str(path) in str(info.value) and not out.exists()


def _corrupt_copy(tiny_synth, tmp_path, n: int):
    data = tmp_path / "VOC2012"
    shutil.copytree(tiny_synth, data)
    ds = VOCDataset(data, "train")
    for image_id in ds.ids[:n]:
        ds.image_path(image_id).write_bytes(b"\xff\xd8 not an image")
    return data, ds.ids


def test_consecutive_failures_stop_the_ray_job_with_the_first_error(local_ray, tiny_synth, random_model, tmp_path):
    data, ids = _corrupt_copy(tiny_synth, tmp_path, 10)
    out = tmp_path / "out"
    job = _job(CAM(), random_model, data, out, limit=10, retries=0, max_consecutive_failures=3)
    with pytest.raises(WeaksegError, match=r"stopped after 3 consecutive failed images.*the first, .*DataError") as info:
        run_ray(job, RayOptions(workers=1), "cpu", progress=False)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["failed"], summary["succeeded"], summary["not_run"]) == (3, 0, 7)
    first = json.loads((out / "failures.jsonl").read_text().splitlines()[0])
    assert first["id"] in str(info.value) and summary["stopped"].startswith("stopped after 3")


def test_consecutive_failures_stop_the_cli_in_process_exit_2(tiny_synth, random_model, tmp_path, capsys, one_thread):
    from cli.main import main

    data, ids = _corrupt_copy(tiny_synth, tmp_path, 6)
    args = ["pseudo", "--model", str(random_model), "--data", str(data), "--out", str(tmp_path / "out"), "--limit", "8",
            "--scales", "1.0", "--workers", "0", "--retries", "0", "--quiet", "--max-consecutive-failures", "4"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stopped after 4 consecutive failed images" in err[0] and ids[0] in err[0]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["failed"], summary["not_run"]) == (4, 4)
    assert main([*args[:-1], "0"]) == 1  # 0: never stop; the two good images are done, six failures recorded
    assert len(done_ids(tmp_path / "out")) == 2


def test_a_success_ends_the_failure_streak():
    streak = FailureStreak(3)
    outcomes = [ImageOutcome(i, ok, 1, 0.0, error=f"E{i}") for i, ok in
                [("a", False), ("b", False), ("c", True), ("d", False), ("e", False)]]
    assert not any(streak.update(o) for o in outcomes)
    assert streak.update(ImageOutcome("f", False, 1, 0.0, error="Ef"))
    assert "the first, d: Ed" in streak.message()
    assert not any(FailureStreak(0).update(ImageOutcome(str(i), False, 1, 0.0)) for i in range(50))  # 0: never


def test_paths_are_made_absolute_and_checked_on_the_workers(local_ray, tiny_synth, random_model, tmp_path, monkeypatch):
    shutil.copytree(tiny_synth, tmp_path / "companions")
    shutil.copy(random_model, tmp_path / "model.safetensors")
    monkeypatch.chdir(tmp_path)  # Ray's workers started elsewhere: relative paths would not be theirs
    job = _job(_rib("companions"), "model.safetensors", tiny_synth, "out")
    shipped = absolute_job(job)
    assert shipped.method.data == str(tmp_path / "companions") and shipped.model == tmp_path / "model.safetensors"
    summary = run_ray(job, RayOptions(workers=1), "cpu", progress=False)
    assert (summary["succeeded"], summary["failed"]) == (2, 0)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["method_locations"] == {"data": str(tmp_path / "companions")} and "data" not in manifest["method"]
    # A worker whose node lacks a path refuses to start, naming the flag, the path and the host.
    gone = absolute_job(_job(_rib(tmp_path / "gone"), random_model, tiny_synth, tmp_path / "out2"))
    actors = _start_workers(gone, RayOptions(workers=1), 1, 0.0, "cpu")
    try:
        with pytest.raises(WeaksegError, match=f"could not start.*--rib-data {tmp_path / 'gone'}: no such folder on "
                                               f"{socket.gethostname()}"):
            _wait_ready(actors, RayOptions(workers=1), 0.0)
    finally:
        import ray

        for a in actors:
            ray.kill(a, no_restart=True)


def test_moved_rib_data_resumes_and_a_changed_setting_is_refused(tiny_synth, random_model, tmp_path, one_thread):
    first = tmp_path / "mount_a" / "VOC2012"
    shutil.copytree(tiny_synth, first)
    out = tmp_path / "out"
    done = run_local(_job(_rib(first), random_model, tiny_synth, out), torch.device("cpu"), progress=False)
    assert done["succeeded"] == 2
    moved = tmp_path / "mount_b" / "VOC2012"
    moved.parent.mkdir()
    shutil.move(str(first), str(moved))
    again = run_local(_job(_rib(moved), random_model, tiny_synth, out), torch.device("cpu"), progress=False)
    assert (again["skipped"], again["succeeded"], again["failed"]) == (2, 0, 0)
    assert again["method_locations"] == {"data": str(moved)}  # where it ran now; the manifest keeps the first place
    assert json.loads((out / "manifest.json").read_text())["method_locations"] == {"data": str(first)}
    with pytest.raises(WeaksegError, match="differs in: method"):
        run_local(_job(_rib(moved, steps=2), random_model, tiny_synth, out), torch.device("cpu"), progress=False)
    # a manifest written before locations were set apart (data inside "method") resumes as well
    wanted = json.loads((out / "manifest.json").read_text())
    old = {**wanted, "method": {**wanted["method"], "data": "/old/mount/VOC2012"}}
    del old["method_locations"]
    assert manifest_mismatch(old, wanted) == []
    assert manifest_mismatch({**old, "method": {**old["method"], "steps": 5}}, wanted) == ["method"]


def test_retries_and_failure_limit_defaults_have_one_source(tiny_synth, random_model):
    from cli.main import build_parser

    args = build_parser("pseudo").parse_args(["pseudo", "--model", "m", "--data", "d", "--out", "o"])
    job = PseudoJob(method=CAM(), model=random_model, data=tiny_synth, split="train", out="o")
    assert args.retries == job.retries == DEFAULT_RETRIES
    assert args.max_consecutive_failures == job.max_consecutive_failures == DEFAULT_MAX_CONSECUTIVE_FAILURES
