"""deploy/ checked as data (no Docker engine or cluster needed): the compose file and the
Kubernetes manifests run every service, set every environment variable the code reads and
nothing the code does not know, and every such variable is in the README's Configuration table.

The variables the code reads are found by scanning the source (os.environ / os.getenv reads, and
helpers that read os.environ with their argument, like sequences.config._env), so a variable
added to the code without its deploy entry and README row fails here.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import shlex
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from sequences.services import SERVICES

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
CODE_DIRS = ("sequences", "services", "contracts")

# Read by the code but never set in deploy/ (still documented in the README's table).
NOT_DEPLOYED = {
    "SEQUENCES_CRASH_AT": "fault tests only: SIGKILL the process at a named point",
    "SMTP_VERIFY_URL": "the dev stack's SMTP capture server, which production does not have",
    "SEQUENCES_TRACE_FILE": "tests only: every process appends its spans to this file",
    "SEQUENCES_DATA_DIR": "the command line's: where a running dev stack's servers are",
    "SEQUENCES_METRICS": "on by default; off only to measure what metrics cost (bench)",
    "SEQUENCES_METRICS_INTERVAL": "how often gauges are read; the default suits a scrape",
}
# Read by the code but not Sequences configuration: neither deployed nor in the README's table.
NOT_CONFIGURATION = {
    "XDG_RUNTIME_DIR": "the OS's; the dev stack's embedded PostgreSQL sets it only when missing",
    "OTEL_SEMCONV_STABILITY_OPT_IN": "OpenTelemetry's; the gateway sets it to http when missing",
}
# These hold credentials: a Kubernetes Secret, never the ConfigMap.
SECRETS = {"DATABASE_URL", "SEQUENCES_SECRET", "SMTP_URL", "MAILBOXES", "WATCH_MAILBOXES"}
SCALED = {"mailer": 2, "scheduler": 2}


# --- the scanner ----------------------------------------------------------------------------------


def _is_environ(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ")


def _environ_key(node: ast.AST) -> ast.AST | None:
    """The key expression if `node` reads one variable of the environment, else None."""
    if isinstance(node, ast.Call) and node.args:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in ("get", "setdefault") \
                and _is_environ(func.value):
            return node.args[0]
        if (isinstance(func, ast.Attribute) and func.attr == "getenv") or (
                isinstance(func, ast.Name) and func.id == "getenv"):
            return node.args[0]
    if isinstance(node, ast.Subscript) and _is_environ(node.value) \
            and isinstance(node.ctx, ast.Load):
        return node.slice
    if isinstance(node, ast.Compare) and len(node.ops) == 1 \
            and isinstance(node.ops[0], (ast.In, ast.NotIn)) and _is_environ(node.comparators[0]):
        return node.left
    return None


def _literal(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def env_reads(source: str, filename: str = "<source>") -> tuple[set[str], list[str]]:
    """(variables read, places whose variable cannot be told from the source)."""
    tree = ast.parse(source, filename)
    # helpers that read os.environ with one of their parameters: name -> (position, parameter)
    helpers: dict[str, tuple[int, str]] = {}
    helper_reads: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            params = [a.arg for a in fn.args.posonlyargs + fn.args.args]
            for node in ast.walk(fn):
                key = _environ_key(node)
                if isinstance(key, ast.Name) and key.id in params:
                    helpers[fn.name] = (params.index(key.id), key.id)
                    helper_reads.add(id(node))
    names: set[str] = set()
    unknown: list[str] = []
    for node in ast.walk(tree):
        key = _environ_key(node)
        if key is not None and id(node) not in helper_reads:
            if (name := _literal(key)) is not None:
                names.add(name)
            else:
                unknown.append(f"{filename}:{node.lineno}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in helpers:
            position, param = helpers[node.func.id]
            arg = node.args[position] if len(node.args) > position else next(
                (k.value for k in node.keywords if k.arg == param), None)
            if (name := _literal(arg)) is not None:
                names.add(name)
            else:
                unknown.append(f"{filename}:{node.lineno}")
    return names, unknown


def _scan_code() -> tuple[set[str], list[str]]:
    names: set[str] = set()
    unknown: list[str] = []
    for directory in CODE_DIRS:
        for path in sorted((ROOT / directory).rglob("*.py")):
            found, unclear = env_reads(path.read_text(encoding="utf-8"),
                                       str(path.relative_to(ROOT)))
            names |= found
            unknown += unclear
    return names, unknown


CODE_VARS, UNCLEAR_READS = _scan_code()
DEPLOYABLE = CODE_VARS - set(NOT_DEPLOYED) - set(NOT_CONFIGURATION)


def test_the_scanner_finds_every_kind_of_read():
    source = '''
import os
from os import environ, getenv
def _env(name, default=None):
    return os.environ.get(name, default)
def helper(prefix, name):
    return os.environ[name]
A = os.environ.get("A_VAR", "x")
B = os.getenv("B_VAR")
C = os.environ["C_VAR"]
D = "D_VAR" in os.environ
E = _env("E_VAR")
F = environ.get("F_VAR") or getenv("G_VAR")
H = helper("ignored", name="H_VAR")
os.environ["WRITTEN_ONLY"] = "1"
I = os.environ.get(some_name)
'''
    names, unclear = env_reads(source)
    assert names == {"A_VAR", "B_VAR", "C_VAR", "D_VAR", "E_VAR", "F_VAR", "G_VAR", "H_VAR"}
    assert unclear == ["<source>:16"]


def test_every_env_read_in_the_code_names_its_variable():
    assert not UNCLEAR_READS, (
        f"the scanner cannot tell which variable these read (use a string literal): "
        f"{UNCLEAR_READS}")


class _RecordingEnviron(dict):
    def __init__(self, values):
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)


def test_the_scanner_sees_what_the_settings_really_read(monkeypatch):
    """Cross-check against the running code: every variable the settings classes read is found."""
    from sequences.config import ConfigError, Settings
    from services.thread_watcher.config import WatcherSettings

    environ = _RecordingEnviron({"DATABASE_URL": "postgresql://x@y/z", "NATS_URL": "nats://n"})
    monkeypatch.setattr(os, "environ", environ)
    Settings.from_env()
    with contextlib.suppress(ConfigError):  # what it read up to a complaint is recorded
        WatcherSettings.from_env()
    assert environ.read >= {"DATABASE_URL", "NATS_URL", "SEQUENCES_CLOCK"}
    assert environ.read <= CODE_VARS, f"missed by the scanner: {environ.read - CODE_VARS}"


def test_the_exemptions_are_still_read_by_the_code():
    stale = (set(NOT_DEPLOYED) | set(NOT_CONFIGURATION)) - CODE_VARS
    assert not stale, f"exempted but no longer read by the code: {stale}"
    assert SECRETS <= DEPLOYABLE, f"secrets the code no longer reads: {SECRETS - DEPLOYABLE}"


# --- the README's table ---------------------------------------------------------------------------


def _readme_table_vars() -> set[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("|"):
            first_cell = line.split("|")[1]
            names |= set(re.findall(r"`([A-Z][A-Z0-9_]*)`", first_cell))
    return names


def test_every_variable_the_code_reads_is_in_the_readme_table():
    table = _readme_table_vars()
    missing = CODE_VARS - set(NOT_CONFIGURATION) - table
    assert not missing, f"read by the code, not in README.md's Configuration table: {missing}"
    stale = table - CODE_VARS
    assert not stale, f"in README.md's Configuration table, not read by the code: {stale}"


def test_deploy_readme_points_at_the_one_table():
    text = (DEPLOY / "README.md").read_text(encoding="utf-8")
    assert "../README.md#configuration" in text
    own_rows = [line for line in text.splitlines()
                if re.match(r"\|\s*`[A-Z][A-Z0-9_]*`\s*\|", line)]
    assert not own_rows, f"deploy/README.md has a variable table of its own: {own_rows}"


# --- docker compose -------------------------------------------------------------------------------


def _load(path: Path) -> list:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


COMPOSE = _load(DEPLOY / "docker-compose.yml")[0]


def _argv(command) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command or [])


def _env_mapping(environment) -> dict[str, str]:
    if isinstance(environment, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in environment)
    return {k: "" if v is None else str(v) for k, v in (environment or {}).items()}


def _compose_sequences_services() -> dict[str, dict]:
    """Sequences services of the compose file, by the service they run (`run <service>`)."""
    found: dict[str, dict] = {}
    for name, service in COMPOSE["services"].items():
        argv = _argv(service.get("command"))
        if argv[:1] == ["run"]:
            assert argv[1] not in found, f"{argv[1]} runs in two compose services"
            found[argv[1]] = {"compose_name": name, **service}
    return found


def test_compose_runs_every_service():
    assert set(_compose_sequences_services()) == set(SERVICES)


def test_compose_scales_mailer_and_scheduler():
    services = _compose_sequences_services()
    for name, replicas in SCALED.items():
        assert services[name].get("deploy", {}).get("replicas") == replicas, name


def test_compose_sets_every_variable_the_code_reads_and_nothing_else():
    for name, service in _compose_sequences_services().items():
        env = set(_env_mapping(service.get("environment")))
        assert not DEPLOYABLE - env, f"{name}: not set in compose: {DEPLOYABLE - env}"
        assert not env - DEPLOYABLE, f"{name}: unknown to the code: {env - DEPLOYABLE}"
        assert not service.get("env_file"), f"{name}: env_file would pass unchecked variables"


def _env_example() -> dict[str, str]:
    values = {}
    for line in (DEPLOY / ".env.example").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value
    return values


def test_compose_interpolates_exactly_what_env_example_defines():
    text = (DEPLOY / "docker-compose.yml").read_text(encoding="utf-8")
    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    defined = set(_env_example())
    assert used == defined, (
        f"only in compose: {used - defined}; only in .env.example: {defined - used}")
    secrets_in_env = {k for k, v in _env_mapping(COMPOSE["x-sequences-env"]).items()
                      if k in SECRETS and "${" not in v and v}
    assert not secrets_in_env, f"secrets written into docker-compose.yml: {secrets_in_env}"


def _interpolated(value: str, variables: dict[str, str]) -> str:
    """`value` as compose makes it: ${VAR}, ${VAR:-default}, ${VAR:?error} and their forms."""
    def replace(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        if name in variables and (variables[name] or not op.startswith(":")):
            return variables[name]
        assert "?" not in op, f"{name} is required: {arg}"
        return arg
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?])?([^}]*)\}", replace, value)


def test_compose_environment_for_production():
    env = {k: _interpolated(v, _env_example())
           for k, v in _env_mapping(COMPOSE["x-sequences-env"]).items()}
    assert env["SEQUENCES_CLOCK"] == "system"
    assert env["NATS_STREAM_REPLICAS"] == "3"
    assert env["GATEWAY_HOST"] == "0.0.0.0"
    services = COMPOSE["services"]
    # the addresses point at services of this file
    assert urlsplit(env["DATABASE_URL"]).hostname in services
    assert urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"]).hostname in services
    nats_host = urlsplit(env["NATS_URL"]).hostname
    nats_nodes = {name: s for name, s in services.items() if "nats" in str(s.get("image", ""))}
    assert len(nats_nodes) == 3
    for name, node in nats_nodes.items():
        reachable = {name, *node.get("networks", {}).get("default", {}).get("aliases", [])}
        assert nats_host in reachable, f"{name} does not answer to {nats_host}"


def test_compose_nats_is_a_jetstream_cluster_of_three():
    nodes = {name: s for name, s in COMPOSE["services"].items()
             if "nats" in str(s.get("image", ""))}
    assert set(nodes) == {"nats-1", "nats-2", "nats-3"}
    for name, node in nodes.items():
        argv = _argv(node["command"])
        assert "--jetstream" in argv or "-js" in argv, name
        routes = next(a.split("=", 1)[1] for a in argv if a.startswith("--routes="))
        assert {urlsplit(r).hostname for r in routes.split(",")} == set(nodes), name
        store = next(a.split("=", 1)[1] for a in argv if a.startswith("--store_dir="))
        assert any(v.endswith(":" + store) for v in node["volumes"]), f"{name}: store not kept"
        assert "healthcheck" in node


def test_compose_postgres_gateway_and_traces():
    services = COMPOSE["services"]
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])

    gateway = _compose_sequences_services()["gateway"]
    port = _env_mapping(COMPOSE["x-sequences-env"])["GATEWAY_PORT"]
    assert any(str(p).endswith(f":{port}") for p in gateway["ports"])
    assert "/healthz" in " ".join(gateway["healthcheck"]["test"])

    collector = services["otel-collector"]
    assert collector["image"].startswith("otel/opentelemetry-collector-contrib")
    assert any(v.startswith("./otel-collector.yaml:") for v in collector["volumes"])
    jaeger = services["jaeger"]
    assert jaeger["image"].startswith("jaegertracing/all-in-one")
    assert _env_mapping(jaeger["environment"])["COLLECTOR_OTLP_ENABLED"] == "true"
    config = _load(DEPLOY / "otel-collector.yaml")[0]
    exporters = config["service"]["pipelines"]["traces"]["exporters"]
    assert any(urlsplit("//" + config["exporters"][e]["endpoint"]).hostname == "jaeger"
               for e in exporters)


# --- Kubernetes -----------------------------------------------------------------------------------


K8S_DOCS = [(path.name, doc) for path in sorted(K8S.glob("*.yaml")) for doc in _load(path)]


def _k8s(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for _, doc in K8S_DOCS if doc.get("kind") == kind}


def _containers(workload: dict) -> list[dict]:
    return workload["spec"]["template"]["spec"]["containers"]


def _k8s_sequences_deployments() -> dict[str, tuple[dict, dict]]:
    """By the service they run: (Deployment, its container running `run <service>`)."""
    found: dict[str, tuple[dict, dict]] = {}
    for deployment in _k8s("Deployment").values():
        for container in _containers(deployment):
            argv = [*container.get("command", []), *container.get("args", [])]
            if argv[:1] == ["run"]:
                assert argv[1] not in found, f"{argv[1]} runs in two Deployments"
                found[argv[1]] = (deployment, container)
    return found


def _config_and_secret() -> tuple[dict[str, str], dict[str, str]]:
    config = _k8s("ConfigMap")["sequences-config"]["data"]
    secret = _k8s("Secret")["sequences-secrets"]
    secret_values = {**secret.get("data", {}), **secret.get("stringData", {})}
    return ({k: str(v) for k, v in config.items()}, {k: str(v) for k, v in secret_values.items()})


def test_k8s_has_a_deployment_per_service():
    assert set(_k8s_sequences_deployments()) == set(SERVICES)


def test_k8s_replicas():
    for name, (deployment, _) in _k8s_sequences_deployments().items():
        assert deployment["spec"].get("replicas", 1) >= SCALED.get(name, 1), name
    for name, replicas in SCALED.items():
        assert _k8s_sequences_deployments()[name][0]["spec"]["replicas"] == replicas, name


def test_k8s_sets_every_variable_the_code_reads_and_nothing_else():
    config, secret = _config_and_secret()
    both = set(config) & set(secret)
    assert not both, f"in both ConfigMap and Secret: {both}"
    assert not SECRETS & set(config), f"secrets in the ConfigMap: {SECRETS & set(config)}"
    assert SECRETS <= set(secret), f"missing from the Secret: {SECRETS - set(secret)}"
    deployed = set(config) | set(secret)
    assert not DEPLOYABLE - deployed, f"not set on Kubernetes: {DEPLOYABLE - deployed}"
    assert not deployed - DEPLOYABLE, f"unknown to the code: {deployed - DEPLOYABLE}"
    for name, (deployment, container) in _k8s_sequences_deployments().items():
        sources = container.get("envFrom", [])
        assert {"name": "sequences-config"} in [s.get("configMapRef") for s in sources], name
        assert {"name": "sequences-secrets"} in [s.get("secretRef") for s in sources], name
        # otherwise the `gateway` Service injects GATEWAY_PORT=tcp://... (Docker-link variables)
        assert deployment["spec"]["template"]["spec"].get("enableServiceLinks") is False, name
        extra = {e["name"] for e in container.get("env", [])}
        assert not extra - DEPLOYABLE, f"{name}: unknown to the code: {extra - DEPLOYABLE}"


def test_k8s_environment_for_production():
    config, _ = _config_and_secret()
    assert config["SEQUENCES_CLOCK"] == "system"
    assert config["NATS_STREAM_REPLICAS"] == "3"
    assert config["GATEWAY_HOST"] == "0.0.0.0"
    services = _k8s("Service")
    assert urlsplit(config["NATS_URL"]).hostname in services
    assert urlsplit(config["OTEL_EXPORTER_OTLP_ENDPOINT"]).hostname in services


def test_k8s_gateway_probes_and_service():
    config, _ = _config_and_secret()
    deployment, container = _k8s_sequences_deployments()["gateway"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert str(ports["http"]) == config["GATEWAY_PORT"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selecting = [s for s in _k8s("Service").values() if s["spec"].get("selector")
                 and s["spec"]["selector"].items() <= pod_labels.items()]
    assert any(p["targetPort"] in ("http", ports["http"])
               for s in selecting for p in s["spec"]["ports"])


def test_k8s_nats_is_a_statefulset_of_three_with_jetstream():
    nats = _k8s("StatefulSet")["nats"]
    assert nats["spec"]["replicas"] == 3
    headless = _k8s("Service")[nats["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    assert nats["spec"]["volumeClaimTemplates"], "JetStream needs a volume per node"
    conf = _k8s("ConfigMap")["nats-config"]["data"]["nats.conf"]
    assert re.search(r"^jetstream\s*\{", conf, re.M)
    routes = re.findall(r"nats://([\w.-]+):6222", conf)
    assert sorted(routes) == [f"nats-{i}.{headless['metadata']['name']}" for i in range(3)]


def test_k8s_collector_config_is_the_compose_one():
    embedded = yaml.safe_load(_k8s("ConfigMap")["otel-collector-config"]["data"]["config.yaml"])
    assert embedded == _load(DEPLOY / "otel-collector.yaml")[0]


def test_kustomization_lists_every_manifest_but_the_secret_template():
    kustomization = _load(K8S / "kustomization.yaml")[0]
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    # and the ConfigMaps of Prometheus and Grafana, from the files compose mounts
    # (tests/unit/test_dashboards.py)
    assert set(kustomization["resources"]) == (manifests - {"secret.example.yaml"}) | {
        "../prometheus", "../grafana"}


# --- everywhere in deploy/ ------------------------------------------------------------------------


CONFIG_FILES = [*DEPLOY.glob("*.yml"), *DEPLOY.glob("*.yaml"), *K8S.glob("*.yaml"),
                DEPLOY / ".env.example", DEPLOY / "Dockerfile"]


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_no_test_clock_or_test_only_variable_in_deploy(path):
    text = path.read_text(encoding="utf-8")
    assert "adjustable" not in text
    for name in NOT_DEPLOYED:
        assert name not in text


def test_dockerfile():
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"pip install \.(\s|$)", text)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["sequences"\]', text, re.M)
    # the OTLP exporter is a dependency, at the SDK's version (sequences/tracing.py needs it)
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    sdk = next(p.split("==")[1] for p in pins if p.startswith("opentelemetry-sdk=="))
    assert f"opentelemetry-exporter-otlp-proto-http=={sdk}" in pins


def test_k8s_every_other_service_has_health_and_readiness_probes_on_health_port():
    config, _ = _config_and_secret()
    for service, (_, container) in _k8s_sequences_deployments().items():
        if service == "gateway":
            continue
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert str(ports["health"]) == config["HEALTH_PORT"], service
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
