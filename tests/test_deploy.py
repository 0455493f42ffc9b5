"""Static checks of deploy/: the image, compose, Prometheus and Kubernetes manifests agree
with each other and with the real CLI (every `cvscore` command line they hold is parsed by
``build_parser()``). They are built and run on a machine with Docker and a GPU; here they
are only read."""

from __future__ import annotations

import argparse
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from cvscore.cli.main import build_parser
from cvscore.server import probe
from cvscore.server.telemetry import QUEUE_HISTOGRAM

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
GPU = "nvidia.com/gpu"


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) pairs, continuation lines joined, comments dropped."""
    lines: list[tuple[str, str]] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        lines.append((word.upper(), rest.strip()))
    return lines


def instruction(name: str) -> list[str]:
    return [rest for word, rest in dockerfile() if word == name]


def parse_serve(argv: list[str]) -> argparse.Namespace:
    """The real parser accepts the command line (argparse exits on an unknown flag)."""
    args = build_parser().parse_args([str(a) for a in argv])
    assert args.command == "serve"
    return args


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and not line.startswith("#"):
            out[name.strip().lower()] = version.strip()
    return out


def k8s_docs() -> dict[tuple[str, str], dict[str, Any]]:
    docs = {}
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") != "Kustomization":
                docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


# -- the image ------------------------------------------------------------------------------
def test_dockerfile_cuda_base_non_root_user_and_pinned_gpu_dependencies() -> None:
    (base,) = instruction("FROM")
    args = dict(a.split("=", 1) for a in instruction("ARG") if "=" in a)
    image = args["CUDA_IMAGE"] if base == "${CUDA_IMAGE}" else base
    assert image.startswith("nvidia/cuda:") and "runtime" in image
    (user,) = instruction("USER")
    assert user.split(":")[0] not in ("root", "0")
    assert int(user.split(":")[0]) >= 1000
    env = " ".join(instruction("ENV"))
    assert "PIP_CONSTRAINT=/src/constraints.txt" in env
    assert any(r.startswith("constraints.txt ") for r in instruction("COPY"))
    run = " ".join(instruction("RUN"))
    assert "pip install ." in run and "pip uninstall -y onnxruntime" in run
    assert "onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}" in run
    # onnxruntime-gpu at the version constraints.txt pins for onnxruntime
    assert args["ONNXRUNTIME_GPU_VERSION"] == pins()["onnxruntime"]
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    for copied in ("constraints.txt", "server/", "client/", "metrics/", "exporters/", "protos/",
                   "evaluate/", "gate/", "cli/", "cvscore/wire.py"):  # fmt: skip
        assert f"!{copied}" in ignore
    # every folder pyproject installs is copied into the image
    folders = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    copies = instruction("COPY")
    top = {f.split("/")[0] for f in folders["package-dir"].values()} - {"cvscore"}
    for folder in top:  # a nested package (metrics/samples) comes with its parent folder
        assert f"{folder} {folder}" in copies, folder


def test_dockerfile_entrypoint_ports_and_health_check_agree_with_the_cli() -> None:
    (entrypoint,) = instruction("ENTRYPOINT")
    (cmd,) = instruction("CMD")
    assert json.loads(entrypoint) == ["cvscore"]
    args = parse_serve(json.loads(cmd))
    assert args.host == "0.0.0.0" and args.repository == "/models"
    assert args.log_format == "json"
    exposed = {int(p) for e in instruction("EXPOSE") for p in e.split()}
    assert exposed == {args.port, args.metrics_port, args.health_port}
    (health,) = instruction("HEALTHCHECK")
    options, _, command = health.partition("CMD ")
    assert "--start-period" in options
    argv = json.loads(command)
    assert argv[:3] == ["python", "-m", "cvscore.server.probe"]
    probe_args = probe.build_parser().parse_args(argv[3:])
    assert probe_args.address == f"127.0.0.1:{args.health_port}"
    # the project's console script is what ENTRYPOINT names
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'cvscore = "cvscore.cli.main:main"' in pyproject


def test_compose_runs_the_server_on_a_gpu_with_prometheus_scraping_it() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    server = compose["services"]["cvscore"]
    assert server["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    args = parse_serve(server["command"])
    (cmd,) = instruction("CMD")
    assert vars(args) == vars(parse_serve(json.loads(cmd))), "compose and the image disagree"
    assert f"{args.port}:{args.port}" in server["ports"]
    assert any(v.endswith(":/models:ro") for v in server["volumes"])
    (device,) = server["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    grace = float(server["stop_grace_period"].rstrip("s"))
    assert grace > args.grace_s

    prom = compose["services"]["prometheus"]
    assert "cvscore" in prom["depends_on"]
    mount = next(v for v in prom["volumes"] if v.endswith("/etc/prometheus/prometheus.yml:ro"))
    assert (DEPLOY / mount.split(":")[0]).resolve() == DEPLOY / "prometheus.yml"
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "cvscore"]
    assert job["metrics_path"] == "/metrics"
    targets = [t for c in job["static_configs"] for t in c["targets"]]
    assert targets == [f"cvscore:{args.metrics_port}"]


# -- Kubernetes -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    return k8s_docs()


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    (container,) = doc["spec"]["template"]["spec"]["containers"]
    return container


def test_k8s_every_file_parses_and_is_listed(manifests: dict) -> None:
    assert {k for k, _ in manifests} >= {
        "Deployment",
        "Service",
        "PersistentVolumeClaim",
        "Job",
        "HorizontalPodAutoscaler",
        "ConfigMap",
    }
    for kustomization in K8S.rglob("kustomization.yaml"):
        listed = set(yaml.safe_load(kustomization.read_text())["resources"])
        present = {p.name for p in kustomization.parent.glob("*.yaml")} - {kustomization.name}
        assert listed == present, kustomization


def test_k8s_deployment_gpu_probes_ports_and_volumes(manifests: dict) -> None:
    deployment = manifests[("Deployment", "cvscore")]
    pod = deployment["spec"]["template"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    container = _container(deployment)
    assert container["resources"]["limits"][GPU] == 1
    assert container["resources"]["requests"][GPU] == 1
    args = parse_serve(container["args"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": args.port, "metrics": args.metrics_port, "health": args.health_port}
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        grpc_probe = container[kind]["grpc"]  # kubelet's native gRPC probe
        # it speaks neither TLS nor tokens: it must use the plaintext health-only port
        assert grpc_probe["port"] == args.health_port
        assert grpc_probe["service"] == ""
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(args.metrics_port)
    assert annotations["prometheus.io/path"] == "/metrics"
    assert pod["spec"]["terminationGracePeriodSeconds"] > args.grace_s
    security = pod["spec"]["securityContext"]
    (user,) = instruction("USER")
    assert security["runAsNonRoot"] and security["runAsUser"] == int(user.split(":")[0])
    assert container["securityContext"]["allowPrivilegeEscalation"] is False

    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    models = mounts[args.repository]
    assert models["readOnly"] is True
    claim = volumes[models["name"]]["persistentVolumeClaim"]["claimName"]
    assert ("PersistentVolumeClaim", claim) in manifests
    tokens = Path(args.auth_tokens_file)
    auth = mounts[str(tokens.parent)]
    secret = volumes[auth["name"]]["secret"]
    assert secret["secretName"] and auth["readOnly"] is True


def test_k8s_headless_service_selects_the_pods(manifests: dict) -> None:
    service = manifests[("Service", "cvscore")]
    deployment = manifests[("Deployment", "cvscore")]
    assert service["spec"]["clusterIP"] == "None"  # per-call balancing with dns:///
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    container = _container(deployment)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in ports
    assert port["port"] == ports[port["targetPort"]]  # headless: no port translation
    assert port["name"] == "grpc"


def test_k8s_export_job_fills_the_same_claim(manifests: dict) -> None:
    job = manifests[("Job", "cvscore-export")]
    deployment = manifests[("Deployment", "cvscore")]
    container = _container(job)
    args = build_parser().parse_args(container["args"])
    assert args.command == "export"
    assert container["image"] == _container(deployment)["image"]
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == args.out
    (volume,) = job["spec"]["template"]["spec"]["volumes"]
    serve = parse_serve(_container(deployment)["args"])
    assert args.out == serve.repository
    assert volume["name"] == mount["name"]
    pod_claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in deployment["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert [volume["persistentVolumeClaim"]["claimName"]] == pod_claims


def test_k8s_autoscaler_reads_the_queue_time_histogram(manifests: dict) -> None:
    hpa = manifests[("HorizontalPodAutoscaler", "cvscore")]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) in manifests
    (metric,) = hpa["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    rules = yaml.safe_load(manifests[("ConfigMap", "cvscore-adapter-rules")]["data"]["config.yaml"])
    (rule,) = [r for r in rules["rules"] if r["name"]["as"] == name]
    # the adapter's series are the ones the server exports (server/telemetry.py)
    assert rule["seriesQuery"].startswith(f"{QUEUE_HISTOGRAM}_count")
    used = set(re.findall(r"cvscore_[a-z_]+", rule["metricsQuery"]))
    assert used == {f"{QUEUE_HISTOGRAM}_sum", f"{QUEUE_HISTOGRAM}_count"}
    assert hpa["spec"]["minReplicas"] >= 1 < hpa["spec"]["maxReplicas"]
