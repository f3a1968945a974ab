"""The production stack's files as docker compose reads them, without a Docker engine.

Debian's ``docker-compose`` (installed by scripts/test.sh) validates the file against the
Compose schema and resolves anchors, merges and ``${VAR:-default}`` interpolation; its
``config`` command needs no engine.  The tests check the resolved result, not the raw YAML.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
#: variables the compose file interpolates; unset, so that the demo defaults are what is seen
COMPOSE_VARIABLES = ("POSTGRES_PASSWORD", "INFLUX_TOKEN", "INFLUX_PASSWORD", "GRAFANA_PASSWORD",
                     "WECOM_WEBHOOK_URL", "FIREWATCH_ENV", "FIREWATCH_SECRET_KEY")


def docker_compose(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        raise RuntimeError("docker-compose is not installed: scripts/test.sh installs it "
                           "(apt-get install docker-compose)")
    env = {k: v for k, v in os.environ.items()
           if k not in COMPOSE_VARIABLES and not k.startswith("MQTT_PASSWORD_")}
    return subprocess.run([binary, "-f", str(COMPOSE_FILE), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@cache
def resolved_compose() -> dict[str, Any]:
    """The compose file after validation, merges and interpolation (`docker-compose config`)."""
    result = docker_compose("config")
    if result.returncode != 0:
        raise AssertionError(f"docker-compose config refused the file:\n{result.stderr}")
    return yaml.safe_load(result.stdout)


def firewatch_services() -> dict[str, dict[str, Any]]:
    """The services built from this repository's Dockerfile."""
    return {name: service for name, service in resolved_compose()["services"].items()
            if "build" in service}
