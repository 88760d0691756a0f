"""Resume after the driver is killed: `weakseg pseudo` (a real local Ray in a subprocess) is SIGKILLed part way,
then re-run; no finished image is computed again, no partial file is left, the result equals a clean run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from batch.cluster import LOCAL_RAY_ENV
from batch.faults import DELAY_ENV
from batch.pseudo_job import done_ids
from tests.test_batch_ray import N, _assert_matches_reference, reference  # noqa: F401

REPO = Path(__file__).resolve().parents[1]


def _session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes in session `sid`: the driver started with start_new_session and Ray's children."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:  # fields after "(comm)": state ppid pgrp session ...
            pids.append(int(entry.name))
    return pids


def _stop_session(sid: int, grace_s: float = 1.0, timeout_s: float = 20.0) -> None:
    """After `grace_s`, SIGKILL (by pid) the processes this test started (session `sid`); wait until none is left.

    A local Ray leaves its agents running when its driver is SIGKILLed; its workers exit within the grace period.
    """
    time.sleep(grace_s)
    deadline = time.time() + timeout_s
    while (pids := _session_pids(sid)) and time.time() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    assert not _session_pids(sid), "processes of the killed job are still running"


def _cli(data: Path, model: Path, out: Path, extra_env: dict[str, str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(LOCAL_RAY_ENV, **extra_env)
    cmd = [sys.executable, "-m", "cli.main", "pseudo", "--model", str(model), "--data", str(data), "--out", str(out),
           "--limit", str(N), "--scales", "1.0", "0.5", "--workers", "2", "--threads-per-worker", "1", "--device", "cpu",
           "--quiet"]
    return subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _mtimes(out: Path, ids: set[str]) -> dict[str, int]:
    files = [out / "labels" / f"{i}.png" for i in ids] + [out / "maps" / f"{i}.npz" for i in ids]
    return {str(f): f.stat().st_mtime_ns for f in files}


def test_driver_killed_mid_job_then_resumed(tiny_synth, random_model, reference, tmp_path):
    out = tmp_path / "out"
    driver = _cli(tiny_synth, random_model, out, {DELAY_ENV: "0.4"})
    try:
        deadline = time.time() + 150
        while time.time() < deadline and len(done_ids(out)) < 3 and driver.poll() is None:
            time.sleep(0.02)
        assert driver.poll() is None, f"the job ended before it could be stopped: {driver.communicate()}"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        _stop_session(driver.pid)
    driver.stdout.close()
    driver.stderr.close()
    before = done_ids(out)
    assert 0 < len(before) < N
    stamps = _mtimes(out, before)

    again = _cli(tiny_synth, random_model, out, {})
    try:
        stdout, stderr = again.communicate(timeout=240)
    finally:
        _stop_session(again.pid, grace_s=0.0)
    assert again.returncode == 0, stderr[-2000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert (summary["skipped"], summary["succeeded"], summary["failed"]) == (len(before), N - len(before), 0)
    assert _mtimes(out, before) == stamps  # nothing finished before the kill was written again
    _assert_matches_reference(out, reference)  # every image present, equal to a clean run, no temporary files
