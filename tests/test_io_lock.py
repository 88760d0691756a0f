"""weakseg.io.exclusive_lock: cooperating processes take turns, and a killed holder releases the lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from weakseg.io import exclusive_lock

HOLDER = """
import sys, time
from pathlib import Path
from weakseg.io import exclusive_lock
lock, log, hold = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
with exclusive_lock(lock):
    with open(log, "a") as f:
        f.write("holder-start\\n")
    time.sleep(hold)
    with open(log, "a") as f:
        f.write("holder-end\\n")
"""


def _start_holder(tmp_path: Path, hold: float) -> tuple[subprocess.Popen, Path, Path]:
    lock, log = tmp_path / "entry.lock", tmp_path / "log.txt"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), str(log), str(hold)])
    deadline = time.monotonic() + 60
    while not (log.exists() and "holder-start" in log.read_text()):
        assert proc.poll() is None, "holder exited early"
        assert time.monotonic() < deadline, "holder never took the lock"
        time.sleep(0.02)
    return proc, lock, log


def test_second_process_waits_for_the_holder(tmp_path: Path) -> None:
    proc, lock, log = _start_holder(tmp_path, hold=0.5)
    with exclusive_lock(lock):
        with open(log, "a") as f:
            f.write("waiter\n")
    proc.wait(timeout=60)
    assert log.read_text().split() == ["holder-start", "holder-end", "waiter"]


def test_killed_holder_releases_the_lock(tmp_path: Path) -> None:
    proc, lock, log = _start_holder(tmp_path, hold=600)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    with exclusive_lock(lock):  # would block forever if the kernel kept the dead holder's lock
        pass
    assert log.read_text().split() == ["holder-start"]
