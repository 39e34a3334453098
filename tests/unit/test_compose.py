"""compose.yaml: valid against the Compose specification, and it speaks this project's language
(every LOOKALIKE_* variable is a real setting, every command a real subcommand)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from lookalike.cli import build_parser
from models.settings import (
    ENV_PREFIX,
    BrokerSettings,
    FetchSettings,
    ImageSettings,
    ModelSettings,
    StoreSettings,
)
from query.metrics import ApiMetrics
from query.settings import ApiSettings
from stream.metrics import WorkerMetrics, metric_names
from stream.settings import StreamSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
SETTINGS_CLASSES: list[type[BaseSettings]] = [
    ModelSettings,
    ImageSettings,
    FetchSettings,
    StoreSettings,
    BrokerSettings,
    StreamSettings,
    ApiSettings,
]
# `lookalike` is the image's entrypoint (Dockerfile): a service's command is its arguments.
ENTRYPOINT = "lookalike"


def _check_jsonschema() -> str:
    """check-jsonschema lives in its own tool venv (`make tools`): it needs a click newer than
    faust-streaming allows, so it never enters the project's environment."""
    candidates = [
        os.environ.get("CHECK_JSONSCHEMA"),
        str(ROOT / ".venv-tools" / "bin" / "check-jsonschema"),
        shutil.which("check-jsonschema"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        "check-jsonschema not found: run `make tools` (creates .venv-tools) or set CHECK_JSONSCHEMA"
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _lookalike_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


def _lookalike_env(compose: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for service in _lookalike_services(compose).values():
        for key, value in service.get("environment", {}).items():
            env[key] = str(value)
    return env


def test_compose_file_is_valid_compose_spec() -> None:
    result = subprocess.run(
        [_check_jsonschema(), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_validator_rejects_a_broken_compose_file(tmp_path: Path) -> None:
    # The same check on a service with an unknown key must fail, or the test above proves nothing.
    broken = tmp_path / "compose.yaml"
    broken.write_text("services:\n  api:\n    image: x\n    restart_policy_typo: always\n")
    result = subprocess.run(
        [_check_jsonschema(), "--builtin-schema", "vendor.compose-spec", str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0


def test_every_lookalike_variable_is_a_setting_and_parses(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _lookalike_env(compose)
    assert env, "the lookalike services set no LOOKALIKE_* variables"
    for key, raw in env.items():
        assert key.startswith(ENV_PREFIX), key
        monkeypatch.setenv(key, raw)
    for key, raw in env.items():
        field = key.removeprefix(ENV_PREFIX).lower()
        owners = [cls for cls in SETTINGS_CLASSES if field in cls.model_fields]
        assert owners, f"{key} is not a setting of any settings class"
        for cls in owners:
            value = getattr(cls(), field)
            # The setting read the variable: its value is what compose.yaml says.
            assert str(value).lower() == raw.lower(), (key, raw, value)


def test_every_service_command_is_a_cli_subcommand(compose: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f'ENTRYPOINT ["{ENTRYPOINT}"]' in dockerfile
    parser = build_parser()
    commands = {name: svc["command"] for name, svc in _lookalike_services(compose).items()}
    assert {"worker", "api"} <= set(commands)
    for name, command in commands.items():
        args = parser.parse_args(command)
        assert args.command == command[0], name
    api = parser.parse_args(compose["services"]["api"]["command"])
    ports = compose["services"]["api"]["ports"]
    assert any(str(p).endswith(f":{api.port}") for p in ports), (ports, api.port)


# --- monitoring: Prometheus and Grafana behind the `monitoring` profile --------------------------

MONITORING = ROOT / "monitoring"
DASHBOARDS = MONITORING / "grafana" / "dashboards"
METRIC = re.compile(r"\blookalike_[a-z0-9_]+\b")


def _worker_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in _lookalike_services(compose).items() if s["command"][0] == "worker"}


def _defined_metrics() -> set[str]:
    return metric_names(WorkerMetrics().registry) | metric_names(ApiMetrics().registry)


def _dashboard_exprs() -> list[str]:
    exprs: list[str] = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text())
        exprs += [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    return exprs


def _alert_exprs() -> list[str]:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def test_monitoring_runs_only_with_its_profile_and_mounts_files_that_exist(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert services["prometheus"]["profiles"] == ["monitoring"]
    assert services["grafana"]["profiles"] == ["monitoring"]
    monitoring = {n for n, s in services.items() if "monitoring" in s.get("profiles", [])}
    assert monitoring == {"prometheus", "grafana"}
    for name in monitoring:
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), (name, source)


def test_every_worker_serves_its_port_and_prometheus_scrapes_it(compose: dict[str, Any]) -> None:
    prometheus = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    discovered = jobs["lookalike-worker"]["dns_sd_configs"]
    workers = _worker_services(compose)
    assert {"worker", "worker-gpu"} <= set(workers)
    for name, service in workers.items():
        port = int(service["environment"]["LOOKALIKE_WORKER_PORT"])
        assert service["environment"]["LOOKALIKE_WORKER_HOST"] == "0.0.0.0", name
        assert any(name in sd["names"] and sd["port"] == port for sd in discovered), name
        assert f"127.0.0.1:{port}/readyz" in " ".join(service["healthcheck"]["test"]), name
    # The API's /metrics is on its metrics port, which is not published to the host.
    api = compose["services"]["api"]
    metrics_port = int(api["environment"]["LOOKALIKE_METRICS_PORT"])
    assert jobs["lookalike-api"]["static_configs"][0]["targets"] == [f"api:{metrics_port}"]
    public = build_parser().parse_args(api["command"]).port
    assert metrics_port != public and not any(str(metrics_port) in p for p in api["ports"])
    assert prometheus["rule_files"] == ["/etc/prometheus/alerts.yml"]


def test_dashboards_and_alerts_query_only_metrics_the_code_defines() -> None:
    defined = _defined_metrics()
    exprs = _dashboard_exprs() + _alert_exprs()
    assert exprs
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    assert used - defined == set(), "queries of metrics that no code defines"
    # Every indexer metric is on the dashboard.
    worker_families = {family.name for family in WorkerMetrics().registry.collect()}
    on_dashboard = " ".join(_dashboard_exprs())
    missing = {f for f in worker_families if not re.search(rf"\b{f}(_\w+)?\b", on_dashboard)}
    assert missing == set(), "indexer metrics missing from the dashboard"


def test_dashboards_use_the_provisioned_datasource() -> None:
    provisioned = yaml.safe_load(
        (MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    uids = {source["uid"] for source in provisioned["datasources"]}
    providers = yaml.safe_load(
        (MONITORING / "grafana" / "provisioning" / "dashboards" / "lookalike.yml").read_text()
    )
    assert [p["options"]["path"] for p in providers["providers"]] == ["/var/lib/grafana/dashboards"]
    for path in DASHBOARDS.glob("*.json"):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            assert panel["datasource"]["uid"] in uids, (path.name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] in uids, (path.name, panel["title"])


# --- the `cluster` profile: three Kafka brokers, three Qdrant nodes ------------------------------


def test_the_cluster_profile_is_three_brokers_and_three_qdrant_nodes(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    cluster = {n for n, s in services.items() if "cluster" in s.get("profiles", [])}
    brokers = sorted(n for n in cluster if n.startswith("kafka-"))
    nodes = sorted(n for n in cluster if n.startswith("qdrant-"))
    assert brokers == ["kafka-1", "kafka-2", "kafka-3"] and nodes == [
        "qdrant-1",
        "qdrant-2",
        "qdrant-3",
    ]
    # One KRaft quorum of the three, each broker advertising its own name.
    voters = {f"{services[b]['environment']['KAFKA_NODE_ID']}@{b}:9093" for b in brokers}
    for b in brokers:
        env = services[b]["environment"]
        assert set(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{b}:9092"
        assert env["CLUSTER_ID"] == services["kafka-1"]["environment"]["CLUSTER_ID"]
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == 2
    # Qdrant: distributed mode, nodes 2 and 3 join node 1.
    for n in nodes:
        assert services[n]["environment"]["QDRANT__CLUSTER__ENABLED"] == "true"
        assert f"http://{n}:6335" in services[n]["command"]
    for n in nodes[1:]:
        assert services[n]["command"][services[n]["command"].index("--bootstrap") + 1] == (
            "http://qdrant-1:6335"
        )
    # Its lookalike services reach every broker, and make collections that use the nodes.
    for name in ("worker-cluster", "api-cluster"):
        env = services[name]["environment"]
        assert set(env["LOOKALIKE_BROKER"].split(",")) == {f"{b}:9092" for b in brokers}
        assert env["LOOKALIKE_QDRANT_URL"].startswith("http://qdrant-")
        assert int(env["LOOKALIKE_REPLICATION_FACTOR"]) <= len(nodes)
        assert int(env["LOOKALIKE_SHARD_NUMBER"]) >= len(nodes)
    # Nothing of the one-node stack depends on the cluster, nor the cluster on it.
    for name in cluster:
        assert set(services[name].get("depends_on", {})) <= cluster, name
