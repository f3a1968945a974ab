"""Live changes pushed to the pages (server-sent events), scoped like the JSON API.

The app is served by a real uvicorn on a free port and read by streaming HTTP clients, as the
browser's pages read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from firewatch.accounts import set_disabled
from firewatch.hub import Change, ChangeHub
from firewatch.mqtt import free_port
from firewatch.settings import Settings
from firewatch.web import push
from tests.support.auth import login_async
from tests.support.webapp import DemoApp, demo_app

pytestmark = pytest.mark.timeout(60)


@contextlib.asynccontextmanager
async def serve(tmp_path: Path, settings: Settings | None = None) -> AsyncIterator[DemoApp]:
    """The demo app on a real uvicorn; ``url`` says where."""
    async with demo_app(tmp_path, settings) as demo:
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                demo.app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"
            )
        )
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.02)
        demo.url = f"http://127.0.0.1:{port}"
        yield demo
        demo.app.state.hub.close()  # ends the open streams, as `firewatch up` does on Ctrl-C
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def served(tmp_path):
    async with serve(tmp_path) as demo:
        yield demo


async def events(client: httpx.AsyncClient) -> AsyncIterator[tuple[str, dict]]:
    """(event, data) pairs from /api/events, once the server said it is ready."""
    async with client.stream("GET", "/api/events") as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        kind = None
        async for line in reply.aiter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                yield kind, json.loads(line.removeprefix("data: "))


async def next_event(stream: AsyncIterator[tuple[str, dict]], kind: str) -> dict:
    async for event, data in stream:
        if event == kind:
            return data
    raise AssertionError(f"the stream ended before a {kind} event")


async def test_an_acknowledgement_reaches_the_bureau_and_the_institution_but_no_other(served):
    rongcheng_alarm = await served.raise_alarm("rc-btn-1")
    dingqiao_alarm = await served.raise_alarm("dq-btn-1")
    async with (
        httpx.AsyncClient(base_url=served.url, timeout=10) as admin,
        httpx.AsyncClient(base_url=served.url, timeout=10) as rongcheng,
    ):
        await login_async(admin, "admin")
        await login_async(rongcheng, "duty-rongcheng-eldercare")
        admin_stream, staff_stream = events(admin), events(rongcheng)
        await next_event(admin_stream, "ready")
        await next_event(staff_stream, "ready")

        reply = await admin.post(
            f"/api/alarms/{dingqiao_alarm}/acknowledge",
            json={"classification": "real", "note": "已核实"},
        )
        assert reply.status_code == 200
        pushed = await asyncio.wait_for(next_event(admin_stream, "alarm"), 5)
        assert (pushed["id"], pushed["status"], pushed["institution_name"]) == (
            dingqiao_alarm,
            "acknowledged",
            "丁桥镇敬老院（演示）",
        )

        await rongcheng.post(
            f"/api/alarms/{rongcheng_alarm}/acknowledge",
            json={"classification": "false", "note": "误按"},
        )
        # events arrive in commit order: the first the staff stream sees is their own alarm
        seen = await asyncio.wait_for(next_event(staff_stream, "alarm"), 5)
        assert (seen["id"], seen["acknowledged_by"]) == (
            rongcheng_alarm,
            "duty-rongcheng-eldercare",
        )
        await admin_stream.aclose()
        await staff_stream.aclose()


async def test_a_device_turning_to_alarm_is_pushed_with_its_alarm(served):
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as viewer:
        await login_async(viewer, "viewer")
        stream = events(viewer)
        await next_event(stream, "ready")
        await served.raise_alarm("cw-gas-1")
        pushed = dict([await asyncio.wait_for(anext(stream), 5) for _ in range(2)])
        assert (pushed["device"]["id"], pushed["device"]["state"]) == ("cw-gas-1", "alarm")
        assert (pushed["alarm"]["device_id"], pushed["alarm"]["status"]) == ("cw-gas-1", "active")
        await stream.aclose()


async def test_the_event_stream_ends_when_its_token_expires(tmp_path):
    async with (
        serve(tmp_path, Settings(token_hours=3 / 3600)) as served,
        httpx.AsyncClient(base_url=served.url, timeout=10) as viewer,
    ):
        await login_async(viewer, "viewer")
        stream = events(viewer)
        await next_event(stream, "ready")
        await asyncio.wait_for(next_event(stream, "expired"), 10)  # heartbeats come every 15 s
        assert [kind async for kind, _ in stream] == []  # and then the stream is over
        assert (await viewer.get("/api/events")).status_code == 401  # a reconnection is refused


async def test_the_event_stream_of_an_account_disabled_meanwhile_ends_at_the_next_heartbeat(
    served, monkeypatch
):
    monkeypatch.setattr(push, "HEARTBEAT_S", 0.2)
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as viewer:
        await login_async(viewer, "viewer")
        stream = events(viewer)
        await next_event(stream, "ready")
        await set_disabled(served.sessions, "viewer", True)
        await asyncio.wait_for(next_event(stream, "expired"), 5)


async def test_a_change_the_page_cannot_be_shown_has_it_reload_and_the_next_change_arrives(served):
    hub: ChangeHub = served.app.state.hub
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as viewer:
        await login_async(viewer, "viewer")
        stream = events(viewer)
        await next_event(stream, "ready")
        # relayed by an alert service of another version: no row the alarm route can show
        hub.publish(Change("alarm", "county-child-welfare", {"id": "第一号"}))
        assert await asyncio.wait_for(anext(stream), 5) == ("resync", {})
        await served.raise_alarm("cw-gas-1")
        pushed = dict([await asyncio.wait_for(anext(stream), 5) for _ in range(2)])
        assert (pushed["alarm"]["device_id"], pushed["alarm"]["status"]) == ("cw-gas-1", "active")
        await stream.aclose()
    assert hub.errors == {"push": 1}
