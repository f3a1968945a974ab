"""The production stack's files as docker compose reads them, without a Docker engine.

Debian's ``docker-compose`` (installed by scripts/test.sh) validates the file against the
Compose schema and resolves anchors, merges and ``${VAR:?error}`` interpolation; its
``config`` command needs no engine.  The tests check the resolved result, not the raw YAML.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
#: the secrets the compose file requires, as an operator's .env gives them (test values)
SECRETS = {
    "FIREWATCH_SECRET_KEY": "test-secret-key-" + "k" * 32,
    "FIREWATCH_CONFIRM_LINK_SECRET": "test-confirm-link-secret-" + "c" * 32,
    "POSTGRES_PASSWORD": "test-postgres",
    "INFLUX_TOKEN": "test-influx-token",
    "INFLUX_PASSWORD": "test-influx-password",
    "GRAFANA_PASSWORD": "test-grafana",
    **{
        f"MQTT_PASSWORD_{user}": f"test-{user.lower()}"
        for user in ("GW_RONGCHENG", "GW_DINGQIAO", "GW_CHILD_WELFARE", "INGEST", "ALERTS", "WEB")
    },
}
#: variables the compose file interpolates: only what a call gives reaches it
COMPOSE_VARIABLES = (*SECRETS, "WECOM_WEBHOOK_URL", "FIREWATCH_ENV", "FIREWATCH_PUBLIC_URL")


def docker_compose(
    *args: str,
    variables: dict[str, str] = SECRETS,
) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        raise RuntimeError(
            "docker-compose is not installed: scripts/test.sh installs it "
            "(apt-get install docker-compose)"
        )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in COMPOSE_VARIABLES and not k.startswith("MQTT_PASSWORD_")
    }
    # an empty --env-file: a developer's own .env beside the compose file is not read
    with tempfile.NamedTemporaryFile(suffix=".env") as no_env:
        return subprocess.run(
            [binary, "-f", str(COMPOSE_FILE), "--env-file", no_env.name, *args],
            cwd=ROOT,
            env={**env, **variables},
            capture_output=True,
            text=True,
            timeout=60,
        )


@cache
def resolved_compose() -> dict[str, Any]:
    """The compose file after validation, merges and interpolation (`docker-compose config`)."""
    result = docker_compose("config")
    if result.returncode != 0:
        raise AssertionError(f"docker-compose config refused the file:\n{result.stderr}")
    return yaml.safe_load(result.stdout)


def firewatch_services() -> dict[str, dict[str, Any]]:
    """The services built from this repository's Dockerfile."""
    return {
        name: service
        for name, service in resolved_compose()["services"].items()
        if "build" in service
    }
