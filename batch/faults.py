"""Fault injection for the batch tier, read from environment variables by each Ray worker.

WEAKSEG_FAULT_KILL_AFTER=k   the worker SIGKILLs its own process when handed its (k+1)-th image, so that
                             image (and any queued behind it) must be redone by the replacement Ray starts.
WEAKSEG_FAULT_KILL_RANK=r    which worker does it (default 0; "all" for every worker). Only a worker's
                             first incarnation is killed, so the replacement finishes the job.
WEAKSEG_FAULT_DELAY_S=s      sleep s seconds before each image (a slow worker; lets tests stop a job mid-way).

The driver forwards these variables to its workers (runtime_env), so they work on a cluster too.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass

KILL_AFTER_ENV = "WEAKSEG_FAULT_KILL_AFTER"
KILL_RANK_ENV = "WEAKSEG_FAULT_KILL_RANK"
DELAY_ENV = "WEAKSEG_FAULT_DELAY_S"
FAULT_ENV_VARS = (KILL_AFTER_ENV, KILL_RANK_ENV, DELAY_ENV)


def fault_env(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The fault-injection variables set in `env` (forwarded by the driver to its workers)."""
    return {k: env[k] for k in FAULT_ENV_VARS if env.get(k)}


@dataclass
class FaultInjector:
    """Per-worker injector: counts images and kills or delays as configured."""

    kill_after: int | None = None
    delay_s: float = 0.0
    seen: int = 0

    @classmethod
    def from_env(cls, rank: int, restarted: bool, env: Mapping[str, str] = os.environ) -> FaultInjector:
        """The injector for worker `rank` (a restarted worker is never killed again)."""
        kill_after = None
        if env.get(KILL_AFTER_ENV) and not restarted:
            target = env.get(KILL_RANK_ENV, "0")
            if target == "all" or target == str(rank):
                kill_after = int(env[KILL_AFTER_ENV])
        return cls(kill_after=kill_after, delay_s=float(env.get(DELAY_ENV) or 0.0))

    def before_image(self) -> None:
        """Called as a worker starts an image: may sleep, may kill this process."""
        self.seen += 1
        if self.kill_after is not None and self.seen > self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.delay_s > 0:
            time.sleep(self.delay_s)
