"""The pseudo-label job on a real local Ray: equality with the per-image function, resuming with another worker
count, configuration mismatch, a worker lost for good, an object-store (pyarrow) output and the cluster
location probe.

Its fixtures (an in-process Ray, an untrained classifier, reference outputs) are shared with the other
test_batch_* modules, which import them from here."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.fs as pafs
import pytest
import ray
import torch

from batch.cluster import LOCAL_RAY_ENV, Probe, RayOptions, check_shared_locations, file_fingerprint
from batch.compare import compare_outputs
from batch.pseudo_job import PseudoJob, done_ids, image_seed
from batch.ray_job import run_ray
from batch.store import ArrowStore, LocalStore
from weakseg.attribution import MultiScale, build_method
from weakseg.data.voc import VOCDataset
from weakseg.errors import WeaksegError
from weakseg.models.classifier_io import load_classifier
from weakseg.pseudo import LabelConfig, pseudo_label


SCALES = MultiScale(scales=(1.0, 0.5), flip=True)
N = 10  # images per job: enough for two workers and a kill mid-way, small enough for 2 shared cores


@pytest.fixture(scope="module")
def local_ray():
    """One in-process Ray (2 CPUs) shared by this module's jobs; jobs attach to it and leave it running."""
    for key, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(key, value)
    ray.init(num_cpus=2, object_store_memory=256 * 2**20, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(tiny_synth, random_model):
    """{id: PseudoResult} from the plain per-image function with 1 torch thread (the workers' thread count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        dataset = VOCDataset(tiny_synth, "train", labels="auto")
        model, _ = load_classifier(random_model, "cpu")
        out = {}
        for i in dataset.ids[:N]:
            torch.manual_seed(image_seed(i))
            out[i] = pseudo_label(build_method("cam"), model, dataset.image(i), dataset.label_ids(i), SCALES, LabelConfig(),
                                  torch.device("cpu"), image_key=i)
        return out
    finally:
        torch.set_num_threads(before)


def _job(data, model, out, **kw) -> PseudoJob:
    return PseudoJob(method=build_method(kw.pop("method", "cam")), model=model, data=data, split="train", out=out,
                     multiscale=kw.pop("multiscale", SCALES), limit=N, **kw)


def _assert_matches_reference(out, reference) -> None:
    from PIL import Image

    ids = sorted(reference)
    assert sorted(done_ids(out)) == ids
    for i in ids:
        label = np.asarray(Image.open(out / "labels" / f"{i}.png"))
        assert np.array_equal(label, reference[i].label), i
        with np.load(out / "maps" / f"{i}.npz") as f:
            assert np.array_equal(f["class_ids"], reference[i].class_ids)
            assert np.abs(f["maps"].astype(np.float32) - reference[i].maps.astype(np.float32)).max(initial=0) <= 1e-6, i
    leftovers = [p.name for p in out.rglob("*.tmp")]
    assert not leftovers


def test_two_workers_equal_the_per_image_function(local_ray, tiny_synth, random_model, reference, tmp_path):
    out = tmp_path / "two"
    summary = run_ray(_job(tiny_synth, random_model, out), RayOptions(workers=2, threads_per_worker=1), "cpu", progress=False)
    assert (summary["succeeded"], summary["failed"], summary["skipped"], summary["workers"]) == (N, 0, 0, 2)
    assert sum(w["images"] for w in summary["per_worker"].values()) == N
    assert all(w["images_per_second"] > 0 for w in summary["per_worker"].values())
    _assert_matches_reference(out, reference)
    assert json.loads((out / "summary.json").read_text())["succeeded"] == N
    # A different worker count is an execution setting, not a configuration change: nothing is recomputed.
    again = run_ray(_job(tiny_synth, random_model, out), RayOptions(workers=1), "cpu", progress=False)
    assert (again["skipped"], again["succeeded"], again["failed"]) == (N, 0, 0)
    # A different method configuration into the same folder is refused before any work.
    with pytest.raises(WeaksegError, match="different configuration.*method"):
        run_ray(_job(tiny_synth, random_model, out, method="gradcam"), RayOptions(workers=2), "cpu", progress=False)
    with pytest.raises(WeaksegError, match="different configuration.*multiscale"):
        run_ray(_job(tiny_synth, random_model, out, multiscale=MultiScale(scales=(1.0,))), RayOptions(workers=2), "cpu",
                progress=False)


def test_worker_lost_for_good_hands_its_images_to_the_others(local_ray, tiny_synth, random_model, reference, tmp_path,
                                                              monkeypatch):
    """No replacement allowed (max_worker_restarts=0, like a node that never comes back): the survivor finishes."""
    from batch.faults import KILL_AFTER_ENV, KILL_RANK_ENV

    monkeypatch.setenv(KILL_AFTER_ENV, "1")
    monkeypatch.setenv(KILL_RANK_ENV, "1")
    out = tmp_path / "lost"
    summary = run_ray(_job(tiny_synth, random_model, out), RayOptions(workers=2, max_worker_restarts=0), "cpu",
                      progress=False)
    assert (summary["succeeded"], summary["failed"], summary["not_run"]) == (N, 0, 0)
    assert summary["per_worker"]["0"]["images"] >= N - 1
    _assert_matches_reference(out, reference)


def test_object_store_output_through_pyarrow(local_ray, tiny_synth, random_model, reference, tmp_path):
    """The object-store write path (temporary key, size check, move) on pyarrow's local filesystem."""
    store = ArrowStore(pafs.LocalFileSystem(), str(tmp_path / "bucket" / "prefix"), location="test://bucket/prefix")
    summary = run_ray(_job(tiny_synth, random_model, store), RayOptions(workers=1), "cpu", progress=False)
    assert (summary["succeeded"], summary["out"]) == (N, "test://bucket/prefix")
    _assert_matches_reference(tmp_path / "bucket" / "prefix", reference)
    assert compare_outputs(store, LocalStore(tmp_path / "bucket" / "prefix"), sorted(reference)) == []


def test_location_probe_runs_on_every_node(local_ray, tiny_synth, tmp_path):
    split = VOCDataset(tiny_synth, "train").split_path
    check_shared_locations([Probe("--data", path=str(split), fingerprint=file_fingerprint(split))])
    with pytest.raises(WeaksegError, match=r"must be visible to every node.*--model /nowhere/model.safetensors: not found"):
        check_shared_locations([Probe("--model", path="/nowhere/model.safetensors", fingerprint="0:x")])
    with pytest.raises(WeaksegError, match="differs from the driver's copy"):
        check_shared_locations([Probe("--data", path=str(split), fingerprint="1:not-the-same")])
