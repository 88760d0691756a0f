"""`weakseg serve` as a process and `weakseg client` against it: masks, maps and overlays written, errors as one
line with exit status 2, SIGTERM shuts down cleanly."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from serving.client import wait_until_serving
from serving.ports import free_port

WEAKSEG = [sys.executable, "-m", "cli.main"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def weakseg(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([*WEAKSEG, *args], capture_output=True, text=True, timeout=120, env=ENV)
    if check:
        assert p.returncode == 0, p.stderr
    return p


@pytest.fixture(scope="module")
def served(serving_repo, tmp_path_factory):
    port = free_port()
    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text("# one key per line\nk-123\n")
    proc = subprocess.Popen([*WEAKSEG, "serve", "--repo", str(serving_repo), "--port", str(port), "--metrics-port", "-1",
                             "--threads", "1", "--api-key-file", str(keys), "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        wait_until_serving(f"127.0.0.1:{port}", 90, alive=lambda: proc.poll() is None)
    except (RuntimeError, TimeoutError) as e:
        proc.kill()
        raise AssertionError(f"{e}: {proc.stderr.read()}") from None
    yield port, keys, proc
    if proc.poll() is None:
        proc.kill()


def test_client_segment_explain_overlay_models(served, tmp_path):
    port, keys, _ = served
    image = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(image)
    common = ["--server", f"127.0.0.1:{port}", "--api-key-file", str(keys)]
    out = json.loads(weakseg("client", "segment", str(image), "--model", "seg", "--out", str(tmp_path / "mask.png"),
                             "--request-id", "cli-1", *common).stdout.splitlines()[-1])
    assert out["request_id"] == "cli-1" and out["model"] == "seg" and out["model_version"] == "1"
    assert Image.open(tmp_path / "mask.png").mode == "P" and Image.open(tmp_path / "mask.png").size == (70, 50)
    out = json.loads(weakseg("client", "explain", str(image), "--model", "cam", "--top-k", "2", "--out",
                             str(tmp_path / "map.png"), *common).stdout.splitlines()[-1])
    assert len(out["maps"]) == 2 and all(Image.open(m["out"]).size == (70, 50) for m in out["maps"])
    out = json.loads(weakseg("client", "overlay", str(image), "--model", "seg", "--kind", "mask", "--out",
                             str(tmp_path / "overlay.png"), *common).stdout.splitlines()[-1])
    assert Image.open(out["overlays"][0]["out"]).mode == "RGB"
    models = json.loads(weakseg("client", "models", *common).stdout.splitlines()[-1])
    assert sorted(m["name"] for m in models["models"]) == ["cam", "seg"]


def test_client_errors_are_one_line_with_status_2(served, tmp_path):
    port, keys, _ = served
    image = tmp_path / "in.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(image)
    p = weakseg("client", "segment", str(image), "--model", "nope", "--out", str(tmp_path / "m.png"),
                "--server", f"127.0.0.1:{port}", "--api-key-file", str(keys), check=False)
    assert p.returncode == 2 and "NOT_FOUND" in p.stderr and "'nope' is not loaded" in p.stderr
    p = weakseg("client", "segment", str(image), "--model", "seg", "--out", str(tmp_path / "m.png"),
                "--server", f"127.0.0.1:{port}", check=False)
    assert p.returncode == 2 and "UNAUTHENTICATED" in p.stderr
    p = weakseg("client", "segment", str(tmp_path / "missing.png"), "--model", "seg", "--out", str(tmp_path / "m.png"),
                "--server", f"127.0.0.1:{port}", check=False)
    assert p.returncode == 2 and "missing.png: image file not found" in p.stderr


def test_serve_refuses_a_missing_repository(tmp_path):
    p = weakseg("serve", "--repo", str(tmp_path / "none"), "--port", "0", check=False)
    assert p.returncode == 2 and "model repository folder not found" in p.stderr


def test_sigterm_stops_the_server_cleanly(served):
    _, _, proc = served
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    err = proc.stderr.read()
    assert '"msg": "shutting down"' in err and "k-123" not in err  # structured logs, no secrets
