"""Faults on a real local Ray: a worker SIGKILLed mid-job (env-var injector) and a corrupt image in the split."""

from __future__ import annotations

import json
import shutil

from batch.cluster import RayOptions
from batch.faults import KILL_AFTER_ENV, KILL_RANK_ENV
from batch.pseudo_job import done_ids
from batch.ray_job import run_ray
from tests.test_batch_ray import N, _assert_matches_reference, _job, local_ray, reference  # noqa: F401
from weakseg.data.voc import VOCDataset


def test_killed_worker_is_replaced_and_its_images_redone(local_ray, tiny_synth, random_model, reference, tmp_path,
                                                         monkeypatch):
    monkeypatch.setenv(KILL_AFTER_ENV, "2")  # worker 0 SIGKILLs itself on its 3rd image
    monkeypatch.setenv(KILL_RANK_ENV, "0")
    out = tmp_path / "killed"
    summary = run_ray(_job(tiny_synth, random_model, out), RayOptions(workers=2), "cpu", progress=False)
    assert (summary["succeeded"], summary["failed"], summary["not_run"]) == (N, 0, 0)
    assert summary["workers_restarted"] == [0]
    _assert_matches_reference(out, reference)


def test_corrupt_image_is_recorded_and_the_job_goes_on(local_ray, tiny_synth, random_model, tmp_path):
    data = tmp_path / "VOC2012"
    shutil.copytree(tiny_synth, data)
    bad = VOCDataset(data, "train").ids[3]
    image = VOCDataset(data, "train").image_path(bad)
    image.write_bytes(b"\xff\xd8 this is not an image")
    out = tmp_path / "out"
    summary = run_ray(_job(data, random_model, out, retries=1), RayOptions(workers=2), "cpu", progress=False)
    assert (summary["succeeded"], summary["failed"], summary["skipped"]) == (N - 1, 1, 0)
    records = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [bad] and records[0]["attempts"] == 2
    assert "DataError" in records[0]["error"] and image.name in records[0]["error"]
    assert bad not in done_ids(out) and len(done_ids(out)) == N - 1
