"""The deployment files agree with the code: commands exist, settings are real, tools agree."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from microservice_connector.cli import app
from microservice_connector.settings import Settings

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
EXAMPLE_ENV = DEPLOY / "example.env"
SCALE_CARTS = ("cart-1", "cart-2", "cart-3")
SCALE_BILLINGS = ("billing-1", "billing-2", "billing-3")
SCALE_NATS = ("nats-1", "nats-2", "nats-3")


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; `make test` installs it (Debian package)")
    return found


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


def cli_commands() -> set[str]:
    return {command.name or "" for command in app.registered_commands}


def test_every_service_command_exists_in_the_cli() -> None:
    services = compose()["services"]
    ours = {
        name: s for name, s in services.items() if s.get("image", "").startswith("microservice")
    }
    assert set(ours) == {"cart-service", "billing-service", *SCALE_CARTS, *SCALE_BILLINGS}
    for name, service in ours.items():
        assert service["command"][0] in cli_commands(), name


def test_ports_and_environment_match_the_settings() -> None:
    services = compose()["services"]
    fields = {f"MSC_{name.upper()}" for name in Settings.model_fields}
    defaults = Settings()
    for name, port in (
        ("cart-service", defaults.cart_port),
        ("billing-service", defaults.billing_port),
    ):
        service = services[name]
        assert service["ports"] == [f"127.0.0.1:{port}:{port}"]
        assert service["command"][service["command"].index("--port") + 1] == str(port)
        unknown = set(service["environment"]) - fields
        assert not unknown, f"{name} sets variables no setting reads: {unknown}"
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"]
    targets = {t for job in scrape for config in job["static_configs"] for t in config["targets"]}
    assert targets == {
        f"cart-service:{defaults.cart_port}",
        f"billing-service:{defaults.billing_port}",
    }


def test_the_dockerfile_runs_msc_as_a_non_root_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.count("FROM ") == 2  # multi-stage
    assert "USER msc" in dockerfile
    assert 'ENTRYPOINT ["msc"]' in dockerfile


def test_promtool_accepts_the_config_and_the_rules() -> None:
    promtool = tool("promtool")
    for args in (
        ["check", "config", "prometheus.yml"],
        ["check", "config", "prometheus-scale.yml"],
        ["check", "rules", "alerts.yml"],
    ):
        result = subprocess.run([promtool, *args], cwd=DEPLOY, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("profiles", [[], ["kafka"], ["postgres"], ["scale"]])
def test_docker_compose_accepts_the_file(profiles: list[str]) -> None:
    args = [tool("docker-compose"), "--env-file", str(EXAMPLE_ENV)]
    for profile in profiles:
        args += ["--profile", profile]
    result = subprocess.run([*args, "config", "-q"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_docker_compose_refuses_to_run_without_the_secrets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    args = [tool("docker-compose"), "--env-file", str(empty), "--profile", "postgres", "config"]
    result = subprocess.run([*args, "-q"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert "MSC_API_TOKEN" in result.stderr or "MSC_READ_TOKEN" in result.stderr


def test_no_published_port_listens_beyond_the_host_and_postgres_wants_a_password() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for mapping in service.get("ports", []):
            assert mapping.startswith("127.0.0.1:"), (name, mapping)
    postgres = services["postgres"]["environment"]
    assert "POSTGRES_HOST_AUTH_METHOD" not in postgres
    assert postgres["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if str(value).startswith("postgresql://"):
                assert ":${POSTGRES_PASSWORD" in value, (name, key)
    example = dict(
        line.split("=", 1)
        for line in EXAMPLE_ENV.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert {"MSC_API_TOKEN", "MSC_READ_TOKEN", "POSTGRES_PASSWORD"} <= set(example)
    assert set(example) - {"POSTGRES_PASSWORD"} <= {
        f"MSC_{field.upper()}" for field in Settings.model_fields
    }


def test_the_scale_profile_runs_three_of_each_on_postgres_and_a_nats_cluster() -> None:
    services = compose()["services"]
    scaled = {name for name, s in services.items() if "scale" in s.get("profiles", [])}
    assert scaled == {*SCALE_CARTS, *SCALE_BILLINGS, *SCALE_NATS, "postgres", "lb"} | {
        "prometheus-scale"
    }
    instances = (*SCALE_CARTS, *SCALE_BILLINGS)
    nats_urls = {f"nats://{node}:4222" for node in SCALE_NATS}
    for name in instances:
        service, env = services[name], services[name]["environment"]
        assert service["command"][0] == ("cart-service" if "cart" in name else "billing-service")
        assert set(env["MSC_NATS_URL"].split(",")) == nats_urls, name
        assert env["MSC_NATS_REPLICAS"] == "3"
        assert env["MSC_DATABASE_URL"].startswith("postgresql://")
        assert env["MSC_BILLING_DATABASE_URL"].startswith("postgresql://")
        assert env["MSC_INSTANCE_ID"] == name
        assert set(env) <= {f"MSC_{field.upper()}" for field in Settings.model_fields}, name
        assert service["depends_on"]["postgres"] == {"condition": "service_healthy"}
    for node in SCALE_NATS:
        args = services[node]["command"]
        assert args[args.index("--server_name") + 1] == node
        assert args[args.index("--cluster_name") + 1] == "msc"
        routes = set(args[args.index("--routes") + 1].split(","))
        assert routes == {f"nats://{other}:6222" for other in SCALE_NATS if other != node}
    assert set(services["lb"]["depends_on"]) == {*SCALE_CARTS, *SCALE_BILLINGS}
    scrape = yaml.safe_load((DEPLOY / "prometheus-scale.yml").read_text())["scrape_configs"]
    targets = {t for job in scrape for config in job["static_configs"] for t in config["targets"]}
    assert targets == {f"{name}:{services[name]['command'][-1]}" for name in instances}


def test_the_balancer_sends_cart_and_billing_requests_to_every_instance() -> None:
    import re

    config = (DEPLOY / "nginx-scale.conf").read_text()
    services = compose()["services"]
    [volume] = services["lb"]["volumes"]
    assert volume.startswith("./deploy/nginx-scale.conf:")
    for upstream, names in (("cart", SCALE_CARTS), ("billing", SCALE_BILLINGS)):
        block = re.search(rf"upstream {upstream} {{(.*?)}}", config, re.S)
        assert block is not None, upstream
        servers = re.findall(r"^\s*server ([\w.-]+):(\d+)", block.group(1), re.M)
        ports = {name: services[name]["command"][-1] for name in names}
        assert sorted(servers) == sorted(ports.items()), upstream
    assert config.count("{") == config.count("}")


def test_the_dashboard_only_queries_metrics_the_services_export() -> None:
    dashboard = (DEPLOY / "grafana" / "dashboards" / "microservice-connector.json").read_text()
    alerts = (DEPLOY / "alerts.yml").read_text()
    exported = set(_exported_names())
    for text in (dashboard, alerts):
        for name in {word for word in _metric_words(text)}:
            assert name in exported, f"{name} is queried but no service exports it"


def _metric_words(text: str) -> set[str]:
    import re

    return {m for m in re.findall(r"msc_[a-z_]+", text)}


def _exported_names() -> list[str]:
    from prometheus_client import generate_latest

    from microservice_connector.billing_service.application import BillingLedger
    from microservice_connector.billing_service.infrastructure.metrics import BillingMetrics
    from microservice_connector.cart_service.infrastructure.metrics import CartMetrics
    from microservice_connector.web.metrics import service_registry

    class NoRepository:
        def transaction(self) -> Any:
            raise NotImplementedError

    class FakeOutbox:
        def status(self) -> Any:
            from microservice_connector.eventstore.outbox import OutboxStatus

            return OutboxStatus(pending=0, oldest_created_at=None, published=0)

    registry = service_registry()
    cart = CartMetrics(registry, FakeOutbox())  # type: ignore[arg-type]
    billing = BillingMetrics(registry, BillingLedger(NoRepository()))
    cart.command_finished("add_item", "ok", 0.001)
    cart.conflict_retried("add_item")
    billing.lag.set(0)
    text = generate_latest(registry).decode()
    names = []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name = line.split()[2]
            names += [name, f"{name}_total", f"{name}_bucket", f"{name}_count", f"{name}_sum"]
    return names
