"""Fixtures shared by test files: the relational store on both databases it runs on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from firewatch.bench.servers import Mosquitto, PostgreSQL
from firewatch.mqtt import BrokerAddress

# robot, broker and database for the tests that run Firewatch's services as processes
pytest_plugins = ["tests.support.processes"]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgreSQL]:
    cluster = PostgreSQL()
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty relational store: SQLite (the default) and PostgreSQL (production)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/fw.db"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[BrokerAddress]:
    """A real Mosquitto of the test's own, with Debian's default settings."""
    broker = Mosquitto(tmp_path)
    broker.start()
    yield BrokerAddress.from_url(broker.url)
    broker.stop()
