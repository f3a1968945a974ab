"""The production stack's files tell the truth about this code base (no Docker engine here).

docker-compose.yml is validated and resolved by Debian's docker-compose; then every setting,
command, mounted file, credential and dashboard query in it is checked against what the code
really reads, runs and writes.  tests/test_deploy_mosquitto.py runs the broker's config.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from firewatch.cli import parser
from firewatch.contract import ReadingBatch
from firewatch.mqtt import BrokerAddress
from firewatch.profiles import load_profiles
from firewatch.settings import SITES_DIR, Settings
from firewatch.site import load_site
from ingest.influx_store import batch_to_point
from tests.support.deploy import (
    ROOT,
    SECRETS,
    docker_compose,
    firewatch_services,
    resolved_compose,
)

GRAFANA = ROOT / "deploy" / "grafana"


def service_settings(environment: dict[str, str]) -> Settings:
    """What a container's Settings() would be, from its environment alone."""
    prefix = Settings.model_config["env_prefix"]
    return Settings(
        _env_file=None, **{k.removeprefix(prefix).lower(): v for k, v in environment.items()}
    )


def test_docker_compose_accepts_the_file():
    result = docker_compose("config", "--quiet")
    assert result.returncode == 0, result.stderr


def test_every_firewatch_variable_in_the_compose_file_is_a_setting_and_parses():
    known = {f"FIREWATCH_{name.upper()}" for name in Settings.model_fields}
    for name, service in firewatch_services().items():
        environment = service.get("environment", {})
        unknown = {k for k in environment if k.startswith("FIREWATCH_")} - known
        assert not unknown, f"{name}: no setting reads {sorted(unknown)}"
        settings = service_settings(environment)
        # the web app too: the alert service's change notices come to its live pages by broker
        assert settings.mqtt_url, f"{name} has no broker"
        BrokerAddress.from_url(settings.mqtt_url)


def test_every_service_command_is_a_real_firewatch_subcommand():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["firewatch"]' in dockerfile
    site = load_site(SITES_DIR / "demo-county.yaml", load_profiles())
    gateways = {g.id for g in site.gateways}
    commands = {}
    for name, service in firewatch_services().items():
        args = parser().parse_args(service["command"])
        commands[name] = args.command
        assert set(args.gateway_ids) <= gateways, f"{name}: unknown gateway {args.gateway_ids}"
    assert sorted(set(commands.values())) == ["alerts", "gateway", "ingest", "web"]


def test_each_gateway_runs_on_its_own_credentials_and_ingest_and_alerts_in_two_partitions():
    partitions: dict[str, list[str]] = {"ingest": [], "alerts": []}
    for name, service in firewatch_services().items():
        args = parser().parse_args(service["command"])
        if args.command == "gateway":
            [gateway] = args.gateway_ids
            user = urlsplit(service["environment"]["FIREWATCH_MQTT_URL"]).username
            assert user == gateway, f"{name} publishes as {user}"
        if args.command in partitions:
            assert "deploy" not in service, f"{name}: replicas of one partition share a session"
            partitions[args.command].append(str(service_settings(service["environment"]).partition))
    assert sorted(partitions["ingest"]) == ["p0of2", "p1of2"]
    assert sorted(partitions["alerts"]) == ["p0of2", "p1of2"]


def test_every_mounted_file_exists_in_the_repository():
    for name, service in resolved_compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("/"):
                assert Path(source).exists(), f"{name} mounts missing {source}"


def test_the_services_agree_on_database_influxdb_and_grafana_credentials():
    services = resolved_compose()["services"]
    postgres = services["postgres"]["environment"]
    influx = services["influxdb"]["environment"]
    for name in ("ingest", "alerts", "web"):
        settings = service_settings(services[name]["environment"])
        url = urlsplit(settings.database_url.replace("+asyncpg", ""))
        assert (url.username, url.password, url.hostname, url.path) == (
            postgres["POSTGRES_USER"],
            postgres["POSTGRES_PASSWORD"],
            "postgres",
            "/" + postgres["POSTGRES_DB"],
        )
    for name in ("ingest", "web"):
        settings = service_settings(services[name]["environment"])
        assert (settings.influx_token, settings.influx_org, settings.influx_bucket) == (
            influx["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"],
            influx["DOCKER_INFLUXDB_INIT_ORG"],
            influx["DOCKER_INFLUXDB_INIT_BUCKET"],
        )
    datasource = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "influxdb.yaml").read_text()
    )["datasources"][0]
    assert datasource["jsonData"]["organization"] == influx["DOCKER_INFLUXDB_INIT_ORG"]
    assert datasource["jsonData"]["defaultBucket"] == influx["DOCKER_INFLUXDB_INIT_BUCKET"]
    assert datasource["secureJsonData"]["token"] == "${INFLUX_TOKEN}"
    assert (
        services["grafana"]["environment"]["INFLUX_TOKEN"]
        == influx["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
    )


def test_the_grafana_dashboard_queries_measurements_fields_and_tags_ingest_writes():
    profiles = load_profiles().values()
    fields_of: dict[str, set[str]] = {}
    for profile in profiles:
        names = {r.name for r in profile.registers if not r.flags}
        names |= {flag for r in profile.registers for flag in (r.flags or {}).values()}
        if profile.mqtt is not None:
            names |= {*profile.mqtt.readings.values(), *profile.mqtt.flags.values()}
        fields_of.setdefault(profile.kind.value, set()).update(names)
    point = batch_to_point(
        ReadingBatch(
            gateway_id="g",
            seq=1,
            device_id="d",
            institution_id="i",
            kind="gas_detector",
            ts=datetime.now(UTC),
            profile="generic-gas-lel",
            readings={"gas_concentration": 1},
        )
    )
    tags = {pair.split("=")[0] for pair in point.to_line_protocol().split(" ")[0].split(",")[1:]}
    datasource_uid = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "influxdb.yaml").read_text()
    )["datasources"][0]["uid"]

    [dashboard_file] = (GRAFANA / "dashboards").glob("*.json")
    dashboard = json.loads(dashboard_file.read_text())
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource_uid
        for target in panel["targets"]:
            query = target["query"]
            [measurement] = re.findall(r'r\._measurement == "([^"]+)"', query)
            fields = re.findall(r'r\._field == "([^"]+)"', query)
            used_tags = set(re.findall(r"\br\.([a-z]\w*)", query))
            assert measurement in fields_of, f"{panel['title']}: no kind {measurement}"
            assert fields and set(fields) <= fields_of[measurement], panel["title"]
            assert used_tags <= tags, f"{panel['title']}: ingest writes no tag {used_tags - tags}"
            assert 'from(bucket: "firewatch")' in query


def test_the_image_installs_every_package_with_the_pinned_versions_as_a_non_root_user():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "FROM python:3.11-slim" in dockerfile
    assert "pip install -c constraints.txt ." in dockerfile
    users = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    copied = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")}
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in ROOT.glob("*/**/__init__.py")
        if init.parts[len(ROOT.parts)] not in ("tests", ".venv")
    }
    assert on_disk <= listed, f"packages missing from pyproject.toml: {sorted(on_disk - listed)}"
    assert {package.split(".")[0] for package in listed} <= copied


def test_compose_refuses_to_start_without_firewatch_secret_key():
    for missing in ("FIREWATCH_SECRET_KEY", "POSTGRES_PASSWORD", "MQTT_PASSWORD_GW_RONGCHENG"):
        result = docker_compose(
            "config", "--quiet", variables={k: v for k, v in SECRETS.items() if k != missing}
        )
        assert result.returncode != 0, f"started without {missing}"
        assert f"set {missing}" in result.stderr, result.stderr


def test_the_web_service_runs_in_production_mode_with_the_secret_key_it_is_given():
    web = service_settings(firewatch_services()["web"]["environment"])
    assert (web.env, web.secret_key) == ("production", SECRETS["FIREWATCH_SECRET_KEY"])
    # the alert service signs the notices' one-tap links, the web service checks them
    alerts = service_settings(firewatch_services()["alerts"]["environment"])
    secret = SECRETS["FIREWATCH_CONFIRM_LINK_SECRET"]
    assert web.confirm_link_secret == alerts.confirm_link_secret == secret


def test_generate_env_writes_every_secret_the_compose_file_requires(tmp_path):
    target = tmp_path / ".env"
    subprocess.run(
        ["sh", str(ROOT / "deploy" / "generate-env.sh"), str(target)],
        check=True,
        capture_output=True,
    )
    assert target.stat().st_mode & 0o077 == 0  # for its owner's eyes only
    generated = dict(line.split("=", 1) for line in target.read_text().splitlines())
    assert set(generated) == set(SECRETS)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{48}", v) for v in generated.values())
    assert docker_compose("config", "--quiet", variables=generated).returncode == 0
    again = subprocess.run(
        ["sh", str(ROOT / "deploy" / "generate-env.sh"), str(target)],
        capture_output=True,
        text=True,
    )
    assert again.returncode != 0 and "not overwritten" in again.stderr
