"""Shared setup of the serving benchmarks: a default-model repository, a `weakseg serve` process, Segment requests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from serving.api import segmentation_pb2 as pb  # noqa: E402
from serving.client import ClientOptions, wait_until_serving  # noqa: E402
from serving.client import channel as client_channel  # noqa: E402
from serving.ports import free_port  # noqa: E402


def default_repository(work: Path, size: int, classes: int = 8) -> Path:
    """<work>/repo with 'seg': a freshly initialised default segmenter (LR-ASPP MobileNetV3) exported at `size`.

    Latency does not depend on the weight values, so no training is needed; the entry is reused if present.
    """
    import torch

    from weakseg.export import ExportOptions, ServingOptions, export_model
    from weakseg.models.segmenter import Segmenter, SegmenterConfig
    from weakseg.models.segmenter_io import save_segmenter

    repo = work / "repo"
    if (repo / "seg" / "1" / "model.onnx").is_file():
        return repo
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = Segmenter(SegmenterConfig(num_classes=classes + 1)).eval()
    save_segmenter(work / "seg.safetensors", model, [f"class{i}" for i in range(1, classes + 1)])
    export_model(work / "seg.safetensors", repo, "seg", ExportOptions(input_size=size, serving=ServingOptions(instance_kind="cpu")))
    return repo


class ServerProcess:
    """`weakseg serve` in a child process, ready when its health check says SERVING."""

    def __init__(self, repo: Path, threads: int, extra: list[str] = (), cpus: set[int] | None = None) -> None:
        """Start the server (pinned to `cpus` when given) and wait until it is SERVING."""
        self.port = free_port()
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        self.proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--repo", str(repo), "--port", str(self.port),
                                      "--metrics-port", "-1", "--threads", str(threads), "--device", "cpu",
                                      "--log-level", "WARNING", *extra],
                                     cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
        self.address = f"127.0.0.1:{self.port}"
        try:
            wait_until_serving(self.address, 120, alive=lambda: self.proc.poll() is None)
        except (RuntimeError, TimeoutError) as e:
            self.proc.kill()
            raise RuntimeError(f"{e}: {self.proc.stderr.read()[-2000:]}") from None

    def rss_mib(self) -> float:
        """Resident memory of the server process."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        """SIGTERM and wait."""
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def channel(address: str) -> grpc.Channel:
    """A client channel with the server's message limits."""
    return client_channel(ClientOptions(address=address))


def segment_request(size: int, seed: int = 0) -> pb.SegmentRequest:
    """A Segment request with a raw uint8 size x size image, asking for the raw mask only."""
    image = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    return pb.SegmentRequest(model="seg", image=pb.Image(raw=pb.RawImage(data=image.tobytes(), height=size, width=size,
                                                                          channels=3)),
                             mask_format=pb.MASK_FORMAT_RAW)
