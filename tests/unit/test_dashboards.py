"""The Grafana dashboards of deploy/grafana, checked as data: every panel's PromQL names only
metrics the code exports (sequences/metrics.py's METRIC_NAMES, which includes the FastAPI
instrumentation's http_server_request_duration_seconds) or the span-metrics connector of
deploy/otel-collector.yaml makes; the data sources link Prometheus's exemplars to Jaeger; compose
and the Kubernetes manifests provision exactly the files that exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from sequences.metrics import METRIC_NAMES

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
GRAFANA = DEPLOY / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
COLLECTOR = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())

# words of PromQL that are not metric names (functions and aggregations are told apart by the
# parenthesis after them)
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
             "unless", "bool", "offset", "inf", "nan"}
_HISTOGRAM_SERIES = ("_bucket", "_count", "_sum")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (Grafana's $variables taken out)."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # strings: label values, regexes
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "",
                  expr)  # label lists
    expr = re.sub(r"\$\{?\w+\}?", "", expr)
    expr = re.sub(r"\b\d+(?:\.\d+)?(?:e[+-]?\d+)?[smhdwy]*\b", "", expr)  # numbers, durations
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word = match.group()
        if expr[match.end():].lstrip().startswith("(") or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def span_metric_names() -> set[str]:
    """What the connector makes, with the collector's Prometheus exporter's suffixes."""
    connector = COLLECTOR["connectors"]["spanmetrics"]
    namespace = connector.get("namespace", "traces.span.metrics").replace(".", "_")
    unit = {"s": "seconds", "ms": "milliseconds"}[connector.get("histogram", {}).get("unit",
                                                                                     "ms")]
    return {f"{namespace}_calls_total", f"{namespace}_duration_{unit}"}


EXPORTED = METRIC_NAMES | span_metric_names()


def exported(name: str) -> bool:
    return name in EXPORTED or any(
        name.endswith(suffix) and name.removesuffix(suffix) in EXPORTED
        for suffix in _HISTOGRAM_SERIES)


def panels(board: dict) -> list[dict]:
    found = []
    for panel in board["panels"]:
        found += [panel, *panel.get("panels", [])]  # a collapsed row holds its panels
    return [p for p in found if p.get("type") != "row"]


def queries(board: dict) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    found = [(f"{board['title']} / {panel['title']}", target["expr"])
             for panel in panels(board) for target in panel.get("targets", [])]
    for variable in board.get("templating", {}).get("list", []):
        query = variable.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        if variable.get("type") == "query" and query:
            values = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
            found.append((f"{board['title']} / ${variable['name']}",
                          values.group(1) if values else query))
    return found


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_the_parser_finds_metric_names_and_nothing_else():
    expr = ('histogram_quantile(0.95, sum by (le, http_route) (rate(foo_seconds_bucket'
            '{route=~"/v1/(a|b)", x!="y"}[$__rate_interval]))) / on (job) group_left (x) '
            'max(bar_total offset 5m) > bool 0 and baz unless sum without (a) (qux)')
    assert metric_names(expr) == {"foo_seconds_bucket", "bar_total", "baz", "qux"}


def test_there_are_the_four_dashboards():
    titles = {load(path)["title"] for path in DASHBOARDS}
    assert titles == {"Sequences · Overview", "Sequences · Pipeline", "Sequences · Mailboxes",
                      "Sequences · API"}
    assert len({load(path)["uid"] for path in DASHBOARDS}) == len(DASHBOARDS)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_panel_names_only_metrics_the_code_exports(path):
    board = load(path)
    found = queries(board)
    assert len(found) >= 5, path
    for where, expr in found:
        names = metric_names(expr)
        assert names, (where, expr)
        assert all(exported(name) for name in names), (where, sorted(
            n for n in names if not exported(n)))


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_panels_read_prometheus_and_do_not_overlap(path):
    occupied: set[tuple[int, int]] = set()
    for panel in panels(load(path)):
        assert panel["datasource"]["uid"] == "prometheus", panel["title"]
        box = panel["gridPos"]
        cells = {(x, y) for x in range(box["x"], box["x"] + box["w"])
                 for y in range(box["y"], box["y"] + box["h"])}
        assert box["x"] + box["w"] <= 24 and not cells & occupied, panel["title"]
        occupied |= cells


def test_the_data_sources_link_exemplars_and_panels_to_jaeger():
    sources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "datasources.yaml")
                             .read_text())["datasources"]
    by_type = {source["type"]: source for source in sources}
    jaeger = by_type["jaeger"]
    destinations = by_type["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert {(d["name"], d["datasourceUid"]) for d in destinations} == {("trace_id", jaeger["uid"])}
    # the collector's exemplars carry the trace id that destination names
    assert COLLECTOR["connectors"]["spanmetrics"]["exemplars"]["enabled"] is True
    assert COLLECTOR["exporters"]["prometheus"]["enable_open_metrics"] is True
    # panels over span metrics link to the traces behind them (Jaeger's search in Explore)
    span_names = span_metric_names()
    for path in DASHBOARDS:
        for panel in panels(load(path)):
            names = {n.removesuffix("_bucket") for t in panel["targets"]
                     for n in metric_names(t["expr"])}
            if names & span_names:
                links = panel["fieldConfig"]["defaults"]["links"]
                assert any(f'"datasource":"{jaeger["uid"]}"' in link["url"] for link in links), \
                    panel["title"]


def test_the_collector_serves_span_metrics_and_otlp_metrics_to_prometheus():
    pipelines = COLLECTOR["service"]["pipelines"]
    assert "spanmetrics" in pipelines["traces"]["exporters"]
    assert set(pipelines["metrics"]["receivers"]) == {"otlp", "spanmetrics"}
    assert pipelines["metrics"]["exporters"] == ["prometheus"]
    port = COLLECTOR["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1]
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in scrape["scrape_configs"] for c in job["static_configs"]
               for t in c["targets"]]
    assert targets == [f"otel-collector:{port}"]
    assert scrape["scrape_configs"][0]["honor_labels"] is True  # job/instance of the services
    assert scrape["rule_files"] == ["alerts.yml"]


def _compose_mounts(service: str) -> dict[str, Path]:
    """container path -> the deploy/ file or directory mounted there"""
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounts = {}
    for volume in compose["services"][service]["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[target] = DEPLOY / source
    return mounts


def test_compose_mounts_the_files_that_exist():
    prometheus = _compose_mounts("prometheus")
    assert prometheus["/etc/prometheus/prometheus.yml"].is_file()
    assert prometheus["/etc/prometheus/alerts.yml"].is_file()
    grafana = _compose_mounts("grafana")
    provider = yaml.safe_load((grafana["/etc/grafana/provisioning/dashboards"]
                               / "dashboards.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert sorted(grafana[path].glob("*.json")) == DASHBOARDS
    assert (grafana["/etc/grafana/provisioning/datasources"] / "datasources.yaml").is_file()


def _generated(directory: Path) -> dict[str, list[Path]]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return {generator["name"]: [directory / f for f in generator["files"]]
            for generator in kustomization["configMapGenerator"]}


def test_kubernetes_config_maps_hold_every_file():
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    assert {"../prometheus", "../grafana"} <= set(kustomization["resources"])
    grafana = _generated(GRAFANA)
    assert sorted(grafana["grafana-dashboards"]) == DASHBOARDS
    assert all(f.is_file() for files in grafana.values() for f in files)
    prometheus = _generated(DEPLOY / "prometheus")
    assert {f.name for f in prometheus["prometheus-config"]} == {"prometheus.yml", "alerts.yml"}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (its kustomize)")
def test_kustomize_builds_and_every_mounted_config_map_exists():
    built = subprocess.run(["kubectl", "kustomize", str(DEPLOY / "k8s")], capture_output=True,
                           text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    docs = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    maps = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "ConfigMap"}
    assert sorted(maps["grafana-dashboards"]["data"]) == sorted(p.name for p in DASHBOARDS)
    for deployment in (doc for doc in docs if doc["kind"] == "Deployment"):
        for volume in deployment["spec"]["template"]["spec"].get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in maps, deployment["metadata"]["name"]
