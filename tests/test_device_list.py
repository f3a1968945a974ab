"""The map's device list, served from ready bytes (firewatch.web.snapshot): never staler than
the live changes, never more than its reader may see, and not sent again to a browser that
holds it."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from firewatch.settings import Settings
from tests.support.auth import login_async
from tests.test_push import events, next_event, serve

pytestmark = pytest.mark.timeout(60)


def state_of(devices: list[dict], device_id: str) -> str:
    return next(d["state"] for d in devices if d["id"] == device_id)


async def test_a_device_in_alarm_is_in_the_list_as_soon_as_the_page_hears_of_it(tmp_path):
    """Kept a minute without a change (so only the change notice can make it fresh)."""
    async with (
        serve(tmp_path, Settings(web_snapshot_max_age_s=60)) as served,
        httpx.AsyncClient(base_url=served.url, timeout=10) as viewer,
    ):
        await login_async(viewer, "viewer")
        before = await viewer.get("/api/devices")
        assert state_of(before.json(), "cw-gas-1") != "alarm"
        held = await viewer.get("/api/devices", headers={"If-None-Match": before.headers["ETag"]})
        assert held.status_code == 304 and held.content == b""

        stream = events(viewer)
        await next_event(stream, "ready")
        await served.raise_alarm("cw-gas-1")
        pushed = await asyncio.wait_for(next_event(stream, "device"), 5)
        assert (pushed["id"], pushed["state"]) == ("cw-gas-1", "alarm")
        after = await viewer.get("/api/devices", headers={"If-None-Match": before.headers["ETag"]})
        assert after.status_code == 200 and state_of(after.json(), "cw-gas-1") == "alarm"
        await stream.aclose()


async def test_duty_staff_get_their_own_institutions_devices_after_the_bureau_asked(tmp_path):
    async with (
        serve(tmp_path) as served,
        httpx.AsyncClient(base_url=served.url, timeout=10) as admin,
        httpx.AsyncClient(base_url=served.url, timeout=10) as staff,
    ):
        await login_async(admin, "admin")
        await login_async(staff, "duty-rongcheng-eldercare")
        county = await admin.get("/api/devices")
        assert {d["institution_id"] for d in county.json()} > {"rongcheng-eldercare"}
        own = await staff.get("/api/devices", headers={"If-None-Match": county.headers["ETag"]})
        assert own.status_code == 200
        assert {d["institution_id"] for d in own.json()} == {"rongcheng-eldercare"}
        institutions = await staff.get("/api/institutions")
        assert [i["id"] for i in institutions.json()] == ["rongcheng-eldercare"]


async def test_a_browser_that_takes_gzip_gets_the_list_gzipped(tmp_path):
    async with (
        serve(tmp_path) as served,
        httpx.AsyncClient(base_url=served.url, timeout=10) as viewer,
    ):
        await login_async(viewer, "viewer")
        plain = await viewer.get("/api/devices", headers={"Accept-Encoding": "identity"})
        gzipped = await viewer.get("/api/devices", headers={"Accept-Encoding": "gzip"})
        assert "content-encoding" not in plain.headers
        assert gzipped.headers["content-encoding"] == "gzip"
        assert gzipped.json() == plain.json() and gzipped.headers["ETag"] != plain.headers["ETag"]
