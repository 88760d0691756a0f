"""The review-decision file (atomic, resumable, undo), oracle and accept-all, and the review page's API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.wood_helpers import make_candidates
from training.ood_review import ReviewServer, accept_all, oracle_review
from weakseg.errors import DataError, WeaksegError
from weakseg.ood.decisions import KEEP, REJECT, REVIEW_NAME, ReviewLog, resolve_ood_images

ROOT = Path(__file__).resolve().parents[1]


def test_decide_undo_and_resume(tmp_path):
    mine = make_candidates(tmp_path, 6)
    log = ReviewLog(mine)
    ids = [c.image for c in log.candidates]
    log.decide(ids[0], KEEP)
    log.decide(ids[1], REJECT)
    log.decide(ids[2], KEEP)
    assert log.undo().image == ids[2]
    log.decide(ids[1], KEEP)  # a changed decision moves to the end
    again = ReviewLog(mine)  # a new process resumes from the file
    assert [(d.image, d.decision) for d in again.decisions] == [(ids[0], KEEP), (ids[1], KEEP)]
    assert [c.image for c in again.pending()] == ids[2:]
    assert again.undo().image == ids[1]  # undo works across restarts
    s = ReviewLog(mine).summary()
    assert (s.decided, s.kept, s.rejected, s.human_checks) == (1, 1, 0, 1)
    with pytest.raises(WeaksegError):
        again.decide("not-a-candidate", KEEP)
    with pytest.raises(WeaksegError):
        again.decide(ids[3], "maybe")


def test_positive_rate_and_label_cost_of_an_oracle_review(tmp_path):
    mine = make_candidates(tmp_path, 10)  # truth: ids 0, 3, 6, 9 contain a class
    log = ReviewLog(mine)
    assert oracle_review(log) == 10
    s = log.summary()
    assert (s.kept, s.rejected) == (6, 4)
    assert s.positive_rate == pytest.approx(0.4)
    assert s.expected_checks == pytest.approx(6 / 0.6)  # n / (1 - r) = every image checked
    assert s.label_seconds == pytest.approx(10 * 20.0)
    kept = resolve_ood_images(mine)
    assert [p.name for p in kept] == [f"ood_{i:05d}.jpg" for i in (1, 2, 4, 5, 7, 8)]
    assert resolve_ood_images(mine / REVIEW_NAME) == kept


def test_accept_all_costs_nothing_and_a_foreign_review_file_is_refused(tmp_path):
    mine = make_candidates(tmp_path, 4)
    log = ReviewLog(mine)
    assert accept_all(log) == 4
    s = log.summary()
    assert (s.kept, s.human_checks, s.label_seconds) == (4, 0, 0.0)
    (mine / "candidates.csv").write_text((mine / "candidates.csv").read_text().replace("ood_00000", "ood_00003", 1))
    with pytest.raises(DataError, match="different candidates"):
        ReviewLog(mine)


KILL_SCRIPT = """
import sys
from weakseg.ood.decisions import ReviewLog
log = ReviewLog(sys.argv[1])
for i, c in enumerate(log.pending()):
    log.decide(c.image, "keep" if i % 2 == 0 else "reject")
"""


def test_review_file_survives_a_kill_mid_write_and_resumes(tmp_path):
    mine = make_candidates(tmp_path, 1500)  # each save rewrites ~150 kB, so a kill lands inside a write
    order = [c.image for c in ReviewLog(mine).candidates]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(2):
        proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(mine)], env=env)
        deadline = time.time() + 60
        while not (mine / REVIEW_NAME).exists() and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.4)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        json.loads((mine / REVIEW_NAME).read_text())  # never a torn file
        log = ReviewLog(mine)
        assert 0 < len(log.decisions) < 1500, "the kill should land mid-review"
        assert [d.image for d in log.decisions] == order[:len(log.decisions)]  # a prefix of what was decided
    done = len(log.decisions)
    rest = [c.image for c in log.pending()]
    assert rest == order[done:]
    for image in rest[:5]:
        log.decide(image, KEEP)
    assert len(ReviewLog(mine).decisions) == done + 5


def _request(url: str, data: dict | None = None, token: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **({"X-Review-Token": token} if token else {})}
    req = urllib.request.Request(url, data=None if data is None else json.dumps(data).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read()) if r.headers["Content-Type"].startswith("application/json") else {}
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_review_api_needs_the_token_and_writes_every_decision(tmp_path):
    mine = make_candidates(tmp_path, 5)
    server = ReviewServer(ReviewLog(mine)).start()
    try:
        ids = [c.image for c in server.log.candidates]
        status, body = _request(server.url + "api/decide", {"image": ids[0], "decision": KEEP})
        assert status == 403 and not (mine / REVIEW_NAME).exists()
        status, state = _request(server.url + "api/decide", {"image": ids[0], "decision": KEEP}, server.token)
        assert status == 200 and state["decisions"] == {ids[0]: KEEP}
        assert [d["image"] for d in json.loads((mine / REVIEW_NAME).read_text())["decisions"]] == [ids[0]]
        status, body = _request(server.url + "api/decide", {"image": "../../etc/passwd", "decision": KEEP}, server.token)
        assert status == 400
        status, state = _request(server.url + "api/undo", {}, server.token)
        assert status == 200 and state["undone"] == ids[0] and state["decisions"] == {}
        with urllib.request.urlopen(server.url + "thumb/" + ids[1], timeout=10) as r:
            assert r.headers["Content-Type"] == "image/jpeg" and r.read()[:2] == b"\xff\xd8"
        assert _request(server.url + "thumb/..%2Fmine.json")[0] == 404
        with urllib.request.urlopen(server.url, timeout=10) as r:
            assert server.token in r.read().decode()
    finally:
        server.shutdown()
