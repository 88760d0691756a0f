"""The refine stage on a real local Ray (issue 15 item 3): `weakseg pseudo --refine par` on two workers gives the
in-process PNGs; `weakseg refine par` survives a worker SIGKILLed mid-job (batch.faults) with the in-process result
and resumes with another worker count; `weakseg refine irn` ships the IRN to its worker."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import ray

from batch.cluster import LOCAL_RAY_ENV
from batch.faults import KILL_AFTER_ENV, KILL_RANK_ENV
from cli.main import main
from tests.test_irn_training import irn_inputs, irn_run  # noqa: F401  (module fixtures: data, CAM maps, an IRN)
from tests.test_refine_cli import _labels, one_thread  # noqa: F401  (one_thread: autouse, 1 torch thread)

CPU = ["--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def local_ray():
    """One in-process Ray (2 CPUs, 512 MiB object store, no dashboard) shared by this module's jobs."""
    for key, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(key, value)
    ray.init(num_cpus=2, object_store_memory=512 * 2**20, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _run(argv: list[str], capsys) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _maps(folder: Path) -> dict[str, np.ndarray]:
    out = {}
    for p in sorted((folder / "maps").glob("*.npz")):
        with np.load(p) as z:
            out[p.stem] = z["maps"]
    return out


def test_pseudo_refine_par_on_ray_equals_in_process(local_ray, irn_inputs, tmp_path, capsys):  # noqa: F811
    base = ["pseudo", "--model", str(irn_inputs["clf"]), "--data", str(irn_inputs["data"]), "--scales", "1.0",
            "--refine", "par", *CPU]
    local = _run([*base, "--out", str(tmp_path / "local"), "--workers", "0", "--threads", "1"], capsys)
    on_ray = _run([*base, "--out", str(tmp_path / "ray"), "--workers", "2", "--threads-per-worker", "1"], capsys)
    assert (local["succeeded"], on_ray["succeeded"], on_ray["executor"], on_ray["workers"]) == (6, 6, "ray", 2)
    assert _labels(tmp_path / "ray") == _labels(tmp_path / "local")  # identical PNGs
    ray_maps, local_maps = _maps(tmp_path / "ray"), _maps(tmp_path / "local")
    assert sorted(ray_maps) == sorted(local_maps) and all(np.array_equal(ray_maps[i], local_maps[i]) for i in ray_maps)
    manifests = [json.loads((tmp_path / f / "manifest.json").read_text()) for f in ("local", "ray")]
    assert manifests[0]["refine"] == manifests[1]["refine"] and manifests[0]["refine"]["name"] == "par"


def test_refine_par_survives_a_killed_worker_and_resumes(local_ray, irn_inputs, tmp_path, capsys,  # noqa: F811
                                                         monkeypatch):
    base = ["refine", "par", "--maps", str(irn_inputs["maps"]), *CPU]
    _run([*base, "--out", str(tmp_path / "local"), "--threads", "1"], capsys)
    monkeypatch.setenv(KILL_AFTER_ENV, "1")  # worker 0 SIGKILLs itself on its 2nd image
    monkeypatch.setenv(KILL_RANK_ENV, "0")
    killed = _run([*base, "--out", str(tmp_path / "ray"), "--workers", "2"], capsys)
    assert (killed["succeeded"], killed["failed"], killed["not_run"], killed["workers_restarted"]) == (6, 0, 0, [0])
    assert _labels(tmp_path / "ray") == _labels(tmp_path / "local")
    assert not list((tmp_path / "ray").rglob("*.tmp"))
    monkeypatch.delenv(KILL_AFTER_ENV)
    (tmp_path / "ray" / "labels" / f"{sorted(_labels(tmp_path / 'ray'))[0]}.png").unlink()
    again = _run([*base, "--out", str(tmp_path / "ray"), "--workers", "1"], capsys)  # workers are not pinned
    assert (again["skipped"], again["succeeded"], again["failed"]) == (5, 1, 0)
    assert _labels(tmp_path / "ray") == _labels(tmp_path / "local")


def test_refine_irn_on_a_ray_worker_equals_in_process(local_ray, irn_inputs, irn_run, tmp_path, capsys):  # noqa: F811
    base = ["refine", "irn", "--maps", str(irn_inputs["maps"]), "--irn", str(irn_run), "--irn-exp-times", "6", *CPU]
    _run([*base, "--out", str(tmp_path / "local"), "--threads", "1"], capsys)
    on_ray = _run([*base, "--out", str(tmp_path / "ray"), "--workers", "1"], capsys)
    assert on_ray["executor"] == "ray" and on_ray["refine_locations"] == {"irn": str(irn_run.resolve())}
    assert _labels(tmp_path / "ray") == _labels(tmp_path / "local")
