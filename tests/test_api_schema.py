"""Schemathesis against the running app's own OpenAPI schema: no request gets a 5xx answer.

A `firewatch up` stack on free ports with its SQLite database and the demo county's simulators;
schemathesis generates requests for every operation the schema describes (valid and invalid
bodies, paths and queries) and sends them as the demo admin, who may call every route.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import settings
from schemathesis.checks import not_a_server_error

from firewatch import db
from firewatch.profiles import load_profiles
from firewatch.settings import SITES_DIR
from firewatch.site import load_site
from firewatch.web.app import AppContext, create_app
from ingest.sqlite_store import SqliteTimeSeries
from tests.support.stack import Stack

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("schemathesis-stack"))
    running.start()
    yield running
    running.stop()


def openapi_document() -> dict[str, Any]:
    """The app's OpenAPI document, from the app object: schemathesis must know the operations
    when tests are collected, before any stack runs (its lazy loader does not work on pytest 9).
    The first test checks that the running stack serves the same document."""
    profiles = load_profiles()
    app = create_app(
        AppContext(
            sessions=db.sessionmaker(db.create_engine("sqlite+aiosqlite://")),
            timeseries=SqliteTimeSeries(Path("unused.db")),
            site=load_site(SITES_DIR / "demo-county.yaml", profiles),
            site_dir=SITES_DIR,
            statuses={},
        )
    )
    return app.openapi()


DOCUMENT = openapi_document()
#: the live pages' event stream never ends, so it has no answer to check
schema = schemathesis.openapi.from_dict(DOCUMENT).exclude(path="/api/events")


def test_the_running_app_serves_the_schema_under_test(stack: Stack):
    assert stack.get("/openapi.json") == json.loads(json.dumps(DOCUMENT))


@schema.parametrize()
@settings(max_examples=20, deadline=None)
def test_no_generated_request_gets_a_server_error(case: schemathesis.Case, stack: Stack):
    case.call_and_validate(
        base_url=stack.url, headers=dict(stack.api.headers), checks=[not_a_server_error]
    )


@pytest.mark.parametrize(
    "method, path",
    [
        ("post", "/api/alarms/{}/acknowledge"),
        ("get", "/api/hazards/{}/events"),
    ],
)
@pytest.mark.parametrize("number", [2**31, 2**64])
def test_a_number_too_large_for_the_database_is_refused_not_a_server_error(
    stack: Stack, method: str, path: str, number: int
):
    reply = stack.api.request(method, path.format(number), json={"note": ""})
    assert reply.status_code == 422, reply.text


def test_the_app_is_still_up_and_healthy_after_the_generated_requests(stack: Stack):
    assert stack.process is not None and stack.process.poll() is None
    assert stack.get("/api/health")["status"] == "ok"
