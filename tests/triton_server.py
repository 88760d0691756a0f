"""A real Triton Inference Server for tests: nvidia-pytriton's CPU tritonserver over a python-backend repository.

`bash scripts/setup_triton.sh` (run by scripts/test.sh) creates .venv-triton and .venv-triton/triton.json;
without it the fixtures fail and say so. Fixtures (session scope; import them into a test module):

- `triton_models`: a tiny random segmenter ("seg", 64 px LR-ASPP) and CAM classifier ("cam", ResNet-18)
  exported as onnxruntime_onnx entries (`.onnx_repo`) and their python-backend variants (`.python_repo`);
- `triton_server`: tritonserver over `.python_repo` on free loopback ports, ready, stopped at teardown.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from serving.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
TRITON_VENV = ROOT / ".venv-triton"
SEG_LABELS = ["train", "boat"]
CAM_LABELS = ["train", "boat", "bird"]


def triton_paths(venv: Path = TRITON_VENV) -> dict:
    """The paths setup_triton.sh recorded, or a test failure telling how to create them."""
    info = venv / "triton.json"
    if not info.is_file():
        pytest.fail(f"{info} is missing: the Triton test environment is not set up; run `bash scripts/setup_triton.sh` "
                    "(scripts/test.sh does it)", pytrace=False)
    paths = json.loads(info.read_text())
    if not Path(paths["tritonserver"]).is_file():
        pytest.fail(f"{paths['tritonserver']} is missing; rerun `bash scripts/setup_triton.sh`", pytrace=False)
    return paths


class TritonServer:
    """One tritonserver process on loopback ports: start(), url, http_url, log(), stop()."""

    def __init__(self, repo: Path, log_path: Path, paths: dict | None = None) -> None:
        self.repo, self.log_path, self.paths = Path(repo), Path(log_path), paths or triton_paths()
        self.process: subprocess.Popen | None = None
        self.grpc_port = self.http_port = 0

    @property
    def url(self) -> str:
        """host:port of the gRPC endpoint."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        """http://host:port of the HTTP endpoint (health: /v2/health/live, /v2/health/ready)."""
        return f"http://127.0.0.1:{self.http_port}"

    def _env(self) -> dict[str, str]:
        """The binary's and the stub's libraries on LD_LIBRARY_PATH; the triton venv's python first on PATH.

        The stub embeds libpython and finds its prefix (so the venv's site-packages: onnxruntime, numpy<2)
        through the `python3` on PATH, as pytriton itself arranges it.
        """
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        libs = ":".join(self.paths["ld_library_path"])
        env["LD_LIBRARY_PATH"] = libs + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
        env["PATH"] = self.paths["python_bin"] + ":" + env.get("PATH", "/usr/bin:/bin")
        env["OMP_NUM_THREADS"] = "1"
        return env

    def command(self) -> list[str]:
        """The tritonserver command line (loopback only, unique shared-memory prefix, metrics off)."""
        prefix = f"weakseg_test_{os.getpid()}_{secrets.token_hex(3)}_"
        return [self.paths["tritonserver"], f"--model-repository={self.repo}",
                f"--backend-directory={self.paths['backend_directory']}",
                "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
                "--http-address=127.0.0.1", f"--http-port={self.http_port}",
                "--allow-metrics=false", "--allow-sagemaker=false", "--allow-vertex-ai=false",
                "--strict-readiness=true", "--exit-on-error=true", "--exit-timeout-secs=10", "--log-verbose=0",
                f"--backend-config=python,shm-region-prefix-name={prefix}"]

    def start(self, timeout: float = 120.0, attempts: int = 3, same_ports: bool = False) -> "TritonServer":
        """Start and wait until the server and its models are ready; retries on a lost port race.

        same_ports: restart on the ports of the previous start (a client keeps its URL).
        """
        for _ in range(1 if same_ports else attempts):
            if not same_ports:
                self.grpc_port, self.http_port = free_port(), free_port()
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=self._env(),
                                                cwd=self.log_path.parent, start_new_session=True)
            if self._wait_ready(timeout):
                return self
            self.stop()
            if "address already in use" not in self.log().lower():
                break
        raise RuntimeError(f"tritonserver did not become ready within {timeout:.0f} s; log tail:\n{self.log()[-4000:]}")

    def _wait_ready(self, timeout: float) -> bool:
        """Poll ServerReady over gRPC until true, the process exits, or the timeout passes."""
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        client = grpcclient.InferenceServerClient(self.url)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False
                try:
                    if client.is_server_ready(client_timeout=2.0):
                        return True
                except InferenceServerException:
                    pass
                time.sleep(0.25)
            return False
        finally:
            client.close()

    def log(self) -> str:
        """The server's log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s; idempotent."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@dataclass(frozen=True)
class TritonModels:
    """The exported test models: ONNX repository (GPU form), python-backend repository, checkpoints."""

    onnx_repo: Path
    python_repo: Path
    segmenter: Path
    classifier: Path


def _random_bn(model):
    """Give BatchNorm non-trivial running statistics (so eval outputs are not near-constant); eval mode."""
    import torch

    for bn in model.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.1, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
    return model.eval()


def build_triton_models(root: Path) -> TritonModels:
    """Save, export (64 px, CPU instances, 20 ms batching window) and wrap a random segmenter and classifier."""
    import torch

    from weakseg.export import ExportOptions, ServingOptions, export_model
    from weakseg.export.python_backend import write_python_backend_entry
    from weakseg.models.classifier_io import save_classifier
    from weakseg.models.resnet_cam import CAMClassifier, ClassifierConfig
    from weakseg.models.segmenter import Segmenter, SegmenterConfig
    from weakseg.models.segmenter_io import save_segmenter

    torch.set_num_threads(2)
    torch.manual_seed(0)
    seg_ckpt, cam_ckpt = root / "seg.safetensors", root / "cam.safetensors"
    save_segmenter(seg_ckpt, _random_bn(Segmenter(SegmenterConfig(num_classes=len(SEG_LABELS) + 1))), SEG_LABELS)
    save_classifier(cam_ckpt, _random_bn(CAMClassifier(ClassifierConfig(num_classes=len(CAM_LABELS)))), CAM_LABELS)
    serving = ServingOptions(instance_kind="cpu", max_batch_size=8, preferred_batch_sizes=(8,), max_queue_delay_us=20_000,
                             max_queue_size=16, queue_timeout_us=20_000_000)
    onnx_repo, python_repo = root / "onnx_repo", root / "python_repo"
    for ckpt, name in ((seg_ckpt, "seg"), (cam_ckpt, "cam")):
        export_model(ckpt, onnx_repo, name, ExportOptions(input_size=64, serving=serving))
        write_python_backend_entry(onnx_repo / name, python_repo, onnx_threads=1)
    return TritonModels(onnx_repo, python_repo, seg_ckpt, cam_ckpt)


@pytest.fixture(scope="session")
def triton_env() -> dict:
    """setup_triton.sh's paths (a failure naming the script when the environment is missing)."""
    return triton_paths()


@pytest.fixture(scope="session")
def triton_models(tmp_path_factory) -> TritonModels:
    """The exported segmenter 'seg' and classifier 'cam' in both repository forms."""
    return build_triton_models(tmp_path_factory.mktemp("triton_models"))


@pytest.fixture(scope="session")
def triton_server(triton_env, triton_models, tmp_path_factory):
    """tritonserver (CPU, python backend) serving triton_models.python_repo; stopped at teardown."""
    server = TritonServer(triton_models.python_repo, tmp_path_factory.mktemp("triton_log") / "tritonserver.log", triton_env)
    server.start()
    try:
        yield server
    finally:
        server.stop()
