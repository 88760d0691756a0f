"""Batch tier without Ray: output stores (local and pyarrow), fault-injector parsing, pool sizing, run_local."""

from __future__ import annotations

import json

import pyarrow.fs as pafs
import pytest
import torch

from batch.cluster import RayOptions
from batch.compare import compare_outputs
from batch.faults import DELAY_ENV, KILL_AFTER_ENV, KILL_RANK_ENV, FaultInjector, fault_env
from batch.pseudo_job import PseudoJob, done_ids, run_local, write_failures
from batch.ray_job import plan_workers
from batch.store import ArrowStore, LocalStore, is_object_store_uri, open_store
from weakseg.attribution import MultiScale, build_method
from weakseg.errors import WeaksegError

SCALES = MultiScale(scales=(1.0, 0.5), flip=True)


@pytest.fixture(params=["local", "arrow"])
def store(request, tmp_path):
    root = tmp_path / "out"
    return LocalStore(root) if request.param == "local" else ArrowStore(pafs.LocalFileSystem(), str(root))


def test_store_roundtrip_listing_and_sweep(store, tmp_path):
    store.makedirs("labels")
    store.write_bytes("labels/a.png", b"abc")
    store.write_bytes("labels/b.png", b"")
    (tmp_path / "out" / "labels" / ".c.png.123.tmp").write_bytes(b"partial")
    assert store.read_bytes("labels/a.png") == b"abc" and store.read_bytes("labels/zzz.png") is None
    assert store.exists("labels/b.png") and not store.exists("labels/c.png")
    assert store.list_names("labels") == {"a.png", "b.png"}
    assert store.list_names("nowhere") == set()
    assert store.sweep_partials("labels") == 1
    assert sorted(p.name for p in (tmp_path / "out" / "labels").iterdir()) == ["a.png", "b.png"]


def test_failed_write_leaves_nothing_under_the_final_name(store, tmp_path):
    (tmp_path / "out" / "labels" / "x.png").mkdir(parents=True)  # the final name is taken by a folder: the move fails
    with pytest.raises(OSError):
        store.write_bytes("labels/x.png", b"data")
    assert store.list_names("labels") == set()
    assert [p.name for p in (tmp_path / "out" / "labels").iterdir()] == ["x.png"]  # no temporary left behind


def test_open_store_locations(tmp_path):
    assert open_store(str(tmp_path / "o")) == LocalStore(tmp_path / "o")
    assert open_store(f"file://{tmp_path}/o") == LocalStore(tmp_path / "o")
    assert open_store("relative/out").root.is_absolute()
    assert is_object_store_uri("s3://bucket/prefix") and is_object_store_uri("gs://b/p") and not is_object_store_uri("/x/y")
    with pytest.raises(WeaksegError, match="nosuch://bucket/x"):
        open_store("nosuch://bucket/x")


def test_fault_injector_reads_env_per_rank():
    env = {KILL_AFTER_ENV: "3", DELAY_ENV: "0.5"}
    assert FaultInjector.from_env(0, restarted=False, env=env).kill_after == 3
    assert FaultInjector.from_env(1, restarted=False, env=env).kill_after is None
    assert FaultInjector.from_env(0, restarted=True, env=env).kill_after is None  # a replacement is never killed again
    assert FaultInjector.from_env(5, restarted=False, env={**env, KILL_RANK_ENV: "all"}).kill_after == 3
    assert FaultInjector.from_env(1, restarted=False, env=env).delay_s == 0.5
    assert fault_env({KILL_AFTER_ENV: "2", "HOME": "/root", DELAY_ENV: ""}) == {KILL_AFTER_ENV: "2"}


def test_plan_workers():
    cpu = RayOptions(threads_per_worker=1)
    assert plan_workers(cpu, "cpu", cpus=8, gpus=2, todo=100, strict=True) == (8, 0.0)
    assert plan_workers(RayOptions(threads_per_worker=2), "auto", cpus=8, gpus=0, todo=100, strict=True) == (4, 0.0)
    assert plan_workers(cpu, "auto", cpus=8, gpus=0, todo=3, strict=True) == (3, 0.0)  # never more workers than images
    assert plan_workers(cpu, "auto", cpus=16, gpus=2, todo=100, strict=True) == (2, 1.0)  # one worker per GPU
    assert plan_workers(RayOptions(workers=4), "cuda", cpus=16, gpus=1, todo=100, strict=True) == (4, 0.25)
    assert plan_workers(RayOptions(workers=8, gpus_per_worker=1), "cuda", cpus=16, gpus=0, todo=100, strict=False) == (8, 1)
    with pytest.raises(WeaksegError, match="no CUDA GPU"):
        plan_workers(cpu, "cuda", cpus=8, gpus=0, todo=10, strict=True)
    with pytest.raises(WeaksegError, match="--gpus-per-worker"):
        plan_workers(RayOptions(gpus_per_worker=0), "cuda", cpus=8, gpus=1, todo=10, strict=True)


def test_write_failures_keeps_only_unresolved_records(tmp_path):
    store = LocalStore(tmp_path)
    store.write_bytes("labels/fixed.png", b"x")
    old = [{"id": "fixed", "error": "e"}, {"id": "retried", "error": "e"}, {"id": "untouched", "error": "e"}]
    store.write_bytes("failures.jsonl", "".join(json.dumps(r) + "\n" for r in old).encode())
    write_failures(store, attempted={"retried", "new"}, failures=[{"id": "new", "error": "boom"}])
    ids = [json.loads(line)["id"] for line in (tmp_path / "failures.jsonl").read_text().splitlines()]
    assert ids == ["untouched", "new"]


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_run_local_through_either_store_resume_and_mismatch(tiny_synth, random_model, tmp_path, one_thread):
    jobs = {kind: PseudoJob(method=build_method("cam"), model=random_model, data=tiny_synth, split="train", out=out,
                            multiscale=SCALES, limit=5)
            for kind, out in (("local", tmp_path / "a"), ("arrow", ArrowStore(pafs.LocalFileSystem(), str(tmp_path / "b"))))}
    summaries = {k: run_local(job, torch.device("cpu"), progress=False) for k, job in jobs.items()}
    assert all(s["succeeded"] == 5 and s["failed"] == 0 for s in summaries.values())
    ids = sorted(done_ids(tmp_path / "a"))
    assert len(ids) == 5 and compare_outputs(tmp_path / "a", tmp_path / "b", ids, atol=0.0) == []
    assert json.loads((tmp_path / "a" / "manifest.json").read_text()) == json.loads((tmp_path / "b" / "manifest.json").read_text())
    again = run_local(jobs["local"], torch.device("cpu"), progress=False)  # same configuration: everything skipped
    assert (again["skipped"], again["succeeded"]) == (5, 0)
    other = PseudoJob(method=build_method("cam"), model=random_model, data=tiny_synth, split="train", out=tmp_path / "a",
                      multiscale=MultiScale(scales=(1.0,), flip=True), limit=5)
    with pytest.raises(WeaksegError, match="differs in: multiscale"):
        run_local(other, torch.device("cpu"), progress=False)


def test_cli_in_process_corrupt_image_exit_1_with_summary(tiny_synth, random_model, tmp_path, capsys, one_thread):
    import shutil

    from cli.main import main
    from weakseg.data.voc import VOCDataset

    data = tmp_path / "VOC2012"
    shutil.copytree(tiny_synth, data)
    bad = VOCDataset(data, "train").ids[1]
    VOCDataset(data, "train").image_path(bad).write_bytes(b"not an image")
    args = ["pseudo", "--model", str(random_model), "--data", str(data), "--out", str(tmp_path / "out"), "--limit", "4",
            "--scales", "1.0", "--workers", "0", "--threads-per-worker", "1", "--retries", "0", "--quiet"]
    assert main(args) == 1
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["succeeded"], summary["failed"], summary["skipped"]) == (3, 1, 0)
    assert json.loads((tmp_path / "out" / "failures.jsonl").read_text())["id"] == bad
    assert main(args) == 1  # the bad image is retried (and fails again); the 3 done are skipped
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["skipped"] == 3
    assert main([*args, "--address", "ray://nowhere:10001"]) == 2  # expected bad input: one line, exit 2
    assert "--workers 0 runs in this process" in capsys.readouterr().err
