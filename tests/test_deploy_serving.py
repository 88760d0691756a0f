"""deploy/serving: the compose file and Kubernetes manifests parse, wire weakseg to Triton consistently (names,
ports, probes, GPU), and their `weakseg serve` arguments are accepted by the real CLI parser. (Docker and a
cluster are not available here: these files are checked statically.)"""

import re
import shlex
from pathlib import Path

import pytest
import yaml

from cli.main import build_parser

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "serving"
K8S = DEPLOY / "k8s"


def k8s_documents() -> dict[tuple[str, str], dict]:
    """(kind, name) -> manifest, over every YAML file of deploy/serving/k8s."""
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "metadata" in doc:
                docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


def serve_args(argv: list[str]):
    """Parse `weakseg serve ARGV` with the real parser (SystemExit on an unknown or malformed option)."""
    return build_parser().parse_args(["serve", *argv])


def container(doc: dict) -> dict:
    """The single container of a Deployment."""
    (c,) = doc["spec"]["template"]["spec"]["containers"]
    return c


def test_kubernetes_triton_deployment_service_and_repository():
    docs = k8s_documents()
    triton = docs[("Deployment", "weakseg-triton")]
    c = container(triton)
    assert c["image"].startswith("nvcr.io/nvidia/tritonserver:")
    assert "--model-repository=/models" in c["args"] and "--strict-readiness=true" in c["args"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["port"] == c["readinessProbe"]["httpGet"]["port"] == "http"
    volumes = {v["name"]: v for v in triton["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    claim = volumes[mounts["/models"]]["persistentVolumeClaim"]["claimName"]
    assert ("PersistentVolumeClaim", claim) in docs
    loader = docs[("Pod", "weakseg-repository-loader")]
    assert loader["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim
    service = docs[("Service", "weakseg-triton")]
    assert service["spec"]["selector"].items() <= triton["spec"]["template"]["metadata"]["labels"].items()
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}["grpc"] == "grpc"


def test_kubernetes_weakseg_points_at_the_triton_service_with_grpc_health_probes():
    docs = k8s_documents()
    weakseg = docs[("Deployment", "weakseg-serving")]
    c = container(weakseg)
    args = serve_args(c["args"])
    assert args.backend == "triton" and args.host == "0.0.0.0"
    host, port = args.triton_url.rsplit(":", 1)
    triton_service = docs[("Service", host)]
    assert int(port) in [p["port"] for p in triton_service["spec"]["ports"] if p["name"] == "grpc"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": args.port, "metrics": args.metrics_port}
    assert c["readinessProbe"]["grpc"] == {"port": args.port, "service": ""}
    assert c["livenessProbe"]["tcpSocket"]["port"] == "grpc"
    grace = weakseg["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > args.grace_s + args.drain_s
    service = docs[("Service", "weakseg-serving")]
    assert service["spec"]["selector"].items() <= weakseg["spec"]["template"]["metadata"]["labels"].items()
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == ["model-repository.yaml", "triton.yaml", "weakseg.yaml"]
    assert kustomization["images"][0]["name"] == c["image"].rsplit(":", 1)[0]


def test_compose_runs_weakseg_in_front_of_a_gpu_triton():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    triton, weakseg = compose["services"]["triton"], compose["services"]["weakseg"]
    assert "nvcr.io/nvidia/tritonserver" in triton["image"]
    assert triton["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert any(v.endswith(":/models:ro") for v in triton["volumes"]) and "--model-repository=/models" in triton["command"]
    assert "/v2/health/ready" in " ".join(triton["healthcheck"]["test"])
    args = serve_args(weakseg["command"])
    assert args.backend == "triton" and args.triton_url == "triton:8001" and args.host == "0.0.0.0"
    assert weakseg["depends_on"]["triton"]["condition"] == "service_healthy"
    assert weakseg["build"]["dockerfile"] == "deploy/serving/Dockerfile"
    assert (DEPLOY / weakseg["build"]["context"] / weakseg["build"]["dockerfile"]).resolve() == (DEPLOY / "Dockerfile").resolve()
    assert f"{args.port}:{args.port}" in weakseg["ports"]


def test_dockerfile_installs_the_lock_and_runs_weakseg_serve():
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M) and "-r requirements.lock" in text
    entry = re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M)
    assert entry and yaml.safe_load(entry.group(1)) == ["weakseg", "serve"]
    cmd = yaml.safe_load(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    args = serve_args(cmd)
    assert args.repo == Path("/models") and args.host == "0.0.0.0"
    assert f"EXPOSE {args.port} {args.metrics_port}" in text
    root = DEPLOY.parents[1]
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for item in shlex.split(source):
            assert (root / item).exists(), f"Dockerfile copies {item}, which the repository does not have"


@pytest.mark.parametrize("argv", [["--backend", "nope"], ["--port", "x"]])
def test_serve_parser_rejects_what_the_manifests_must_not_contain(argv):
    with pytest.raises(SystemExit):
        serve_args(argv)
