"""Shared setup of the serving benchmarks: a default-model repository, a `weakseg serve` process, Segment requests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from serving.api import segmentation_pb2 as pb  # noqa: E402
from serving.server import MiB, message_options  # noqa: E402


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


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`weakseg serve` in a child process, ready when its health check says SERVING."""

    def __init__(self, repo: Path, threads: int, extra: list[str] = ()) -> None:
        self.port = free_port()
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        self.proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--repo", str(repo), "--port", str(self.port),
                                      "--metrics-port", "-1", "--threads", str(threads), "--device", "cpu",
                                      "--log-level", "WARNING", *extra],
                                     cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.address = f"127.0.0.1:{self.port}"
        channel = grpc.insecure_channel(self.address)
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = time.time() + 120
        while True:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"server did not start: {self.proc.stderr.read() if self.proc.poll() is not None else 'timeout'}")
            time.sleep(0.2)
        channel.close()

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
    return grpc.insecure_channel(address, options=message_options(64 * MiB))


def segment_request(size: int, seed: int = 0) -> pb.SegmentRequest:
    """A Segment request with a raw uint8 size x size image, asking for the raw mask only."""
    image = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    return pb.SegmentRequest(model="seg", image=pb.Image(raw=pb.RawImage(data=image.tobytes(), height=size, width=size,
                                                                          channels=3)),
                             mask_format=pb.MASK_FORMAT_RAW)
