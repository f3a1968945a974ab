"""The hazard ledger's closed loop, driven through the JSON API on real SQLite and PostgreSQL."""

from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from firewatch.contract import utc_now
from tests.support.auth import login_async
from tests.support.webapp import demo_app


@pytest.fixture
async def api(tmp_path: Path, database_url: str):
    async with (
        demo_app(tmp_path, database_url=database_url) as demo,
        httpx.AsyncClient(transport=httpx.ASGITransport(demo.app), base_url="http://t") as client,
    ):
        yield await login_async(client, "admin")


def filing(**changes):
    return {
        "institution_id": "dingqiao-eldercare",
        "category": "evacuation",
        "source": "inspection",
        "description": "二楼安全出口被杂物堵塞",
        "responsible_person": "赵强",
        "responsible_phone": "13800000202",
        # a week ahead: a deadline must lie after the filing
        "deadline": (utc_now() + timedelta(days=7)).isoformat(),
        **changes,
    }


async def move(api, entry_id, action):
    return await api.post(
        f"/api/hazards/{entry_id}/transitions", json={"action": action, "note": ""}
    )


async def test_an_inspection_finding_walks_the_whole_loop_to_signed_off(api):
    entry = (await api.post("/api/hazards", json=filing())).json()
    assert entry["status"] == "reported"
    assert entry["responsible_unit"] == "丁桥镇敬老院（演示）"
    assert entry["township"] == "丁桥镇"
    for action, status in [
        ("start", "rectifying"),
        ("submit", "awaiting-verification"),
        ("fail", "rectifying"),
        ("submit", "awaiting-verification"),
        ("sign-off", "closed"),
    ]:
        reply = await move(api, entry["id"], action)
        assert reply.status_code == 200, reply.text
        assert reply.json()["status"] == status
    trail = (await api.get(f"/api/hazards/{entry['id']}/events")).json()
    assert [e["action"] for e in trail] == ["file", "start", "submit", "fail", "submit", "sign-off"]
    assert trail[0]["actor"] == "admin"  # the logged-in account's name


async def test_a_failed_recheck_reopens_a_signed_off_entry(api):
    entry = (await api.post("/api/hazards", json=filing())).json()
    for action in ("start", "submit", "sign-off", "recheck-fail"):
        await move(api, entry["id"], action)
    assert (await api.get("/api/hazards")).json()[0]["status"] == "rectifying"


async def test_a_public_report_counts_only_after_it_is_verified(api):
    entry = (await api.post("/api/hazards", json=filing(source="public-report"))).json()
    assert entry["status"] == "pending-verification"
    refused = await move(api, entry["id"], "start")
    assert refused.status_code == 409
    assert "allowed now: verify, reject" in refused.json()["detail"]
    assert (await move(api, entry["id"], "verify")).json()["status"] == "reported"


async def test_a_step_out_of_order_is_refused_and_says_what_is_allowed(api):
    entry = (await api.post("/api/hazards", json=filing())).json()
    reply = await move(api, entry["id"], "sign-off")
    assert reply.status_code == 409
    assert "needs awaiting-verification" in reply.json()["detail"]
    assert "allowed now: start" in reply.json()["detail"]


async def test_an_entry_for_an_unknown_institution_is_refused(api):
    reply = await api.post("/api/hazards", json=filing(institution_id="nowhere"))
    assert reply.status_code == 422 and "nowhere" in reply.json()["detail"]


async def test_a_responsible_unit_longer_than_the_ledger_keeps_is_refused_on_every_database(api):
    reply = await api.post("/api/hazards", json=filing(responsible_unit="单位" * 101))
    assert reply.status_code == 422
