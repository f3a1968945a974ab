"""Who sees what: login, roles, and duty staff kept to their own institution (JSON API).

The app runs in-process on the demo site with its demo accounts and a real SQLite database;
requests go through the full FastAPI stack (httpx's ASGI transport).
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import subprocess
import sys
import threading
from datetime import timedelta

import httpx
import jwt
import openpyxl
import pytest
from fastapi.routing import APIRoute
from sqlalchemy import select

from alerts import ledger
from alerts.ledger import NewEntry, Source
from firewatch.accounts import (
    HashingBusy,
    PasswordWork,
    StartupRefused,
    prepare_accounts,
    refuse_default_secrets,
    remove_demo_accounts,
)
from firewatch.contract import utc_now
from firewatch.db import User
from firewatch.mqtt import free_port
from firewatch.profiles import HazardCategory
from firewatch.settings import DEFAULT_SECRET_KEY, Settings
from tests.support.auth import DEMO_PASSWORD, login_async
from tests.support.webapp import demo_app

RONGCHENG = "rongcheng-eldercare"
DINGQIAO = "dingqiao-eldercare"
# the one-tap confirmation link's API: its signed token is the right (tests/test_confirmation.py)
PUBLIC = {"/api/health", "/api/auth/token", "/api/confirm/{token}"}


@pytest.fixture
async def demo(tmp_path):
    async with demo_app(tmp_path) as running:
        yield running


@pytest.fixture
async def client(demo):
    """A factory of API clients, logged in as the named demo account (or not at all)."""
    clients: list[httpx.AsyncClient] = []

    async def make(username: str | None = None) -> httpx.AsyncClient:
        c = httpx.AsyncClient(transport=httpx.ASGITransport(demo.app), base_url="http://t")
        clients.append(c)
        return await login_async(c, username) if username else c

    yield make
    for c in clients:
        await c.aclose()


async def file_hazard(demo, institution_id: str) -> int:
    async with demo.sessions.begin() as session:
        entry = await ledger.file_entry(
            session,
            NewEntry(
                institution_id=institution_id,
                category=HazardCategory.EVACUATION,
                source=Source.INSPECTION,
                description="安全出口堵塞",
                responsible_person="赵强",
                responsible_phone="13800000202",
                deadline=utc_now() + timedelta(days=7),
            ),
            "督查组",
        )
        return entry.id


async def test_a_wrong_password_is_refused_and_the_right_one_logs_in(client):
    anonymous = await client()
    refused = await anonymous.post(
        "/api/auth/token", data={"username": "admin", "password": "guess"}
    )
    assert refused.status_code == 401 and "用户名或密码错误" in refused.json()["detail"]
    unknown = await anonymous.post(
        "/api/auth/token", data={"username": "nobody", "password": DEMO_PASSWORD}
    )
    assert unknown.status_code == 401
    me = (await (await client(f"duty-{RONGCHENG}")).get("/api/me")).json()
    assert (me["role"], me["role_zh"], me["institution_id"]) == ("staff", "机构值班人员", RONGCHENG)
    assert me["permissions"]["hazard_actions"] == ["start", "submit"]
    assert me["permissions"]["simulate"] is False


async def test_every_data_route_refuses_a_request_without_a_login(demo, client):
    anonymous = await client()
    routes = [
        r
        for r in demo.app.routes
        if isinstance(r, APIRoute) and r.path.startswith("/api") and r.path not in PUBLIC
    ]
    assert len(routes) >= 15
    for route in routes:
        path = route.path.replace("{device_id}", "rc-btn-1")
        for name in ("{alarm_id}", "{hazard_id}"):
            path = path.replace(name, "1")
        for method in route.methods:
            reply = await anonymous.request(method, path)
            assert reply.status_code == 401, f"{method} {path} answered {reply.status_code}"


async def test_a_forged_or_expired_token_is_refused(client):
    anonymous = await client()
    now = utc_now()
    forged = jwt.encode(
        {"sub": "admin", "exp": now + timedelta(hours=1)}, "another key" * 4, "HS256"
    )
    expired = jwt.encode(
        {"sub": "admin", "exp": now - timedelta(seconds=1)}, DEFAULT_SECRET_KEY, "HS256"
    )
    for token in (forged, expired, "not-a-token"):
        reply = await anonymous.get("/api/alarms", headers={"Authorization": f"Bearer {token}"})
        assert reply.status_code == 401


async def test_duty_staff_list_only_their_own_institution(demo, client):
    await demo.raise_alarm("rc-btn-1")
    await demo.raise_alarm("dq-btn-1")
    await file_hazard(demo, RONGCHENG)
    await file_hazard(demo, DINGQIAO)
    staff = await client(f"duty-{RONGCHENG}")
    for path in ("/api/institutions", "/api/devices", "/api/alarms", "/api/hazards"):
        rows = (await staff.get(path)).json()
        assert rows, path
        assert {r.get("institution_id", r.get("id")) for r in rows} == {RONGCHENG}, path
    admin = await client("admin")
    assert len({a["institution_id"] for a in (await admin.get("/api/alarms")).json()}) == 2


async def test_duty_staff_cannot_read_or_change_another_institutions_rows_by_id(demo, client):
    their_alarm = await demo.raise_alarm("dq-btn-1")
    their_entry = await file_hazard(demo, DINGQIAO)
    staff = await client(f"duty-{RONGCHENG}")

    for path in (
        "/api/devices/dq-gas-1",
        "/api/devices/dq-gas-1/history?field=gas_concentration",
        f"/api/hazards/{their_entry}/events",
    ):
        assert (await staff.get(path)).status_code == 404, path
    ack = await staff.post(
        f"/api/alarms/{their_alarm}/acknowledge",
        json={"classification": "false", "note": "不是我们的"},
    )
    missing = await staff.post(
        "/api/alarms/999999/acknowledge", json={"classification": "test", "note": ""}
    )
    assert (ack.status_code, ack.json()["detail"]) == (404, f"no alarm {their_alarm}")
    assert (missing.status_code, missing.json()["detail"]) == (404, "no alarm 999999")  # alike
    move = await staff.post(
        f"/api/hazards/{their_entry}/transitions", json={"action": "start", "note": ""}
    )
    assert move.status_code == 404
    filing = await staff.post(
        "/api/hazards",
        json={
            "institution_id": DINGQIAO,
            "category": "electrical",
            "source": "self-check",
            "description": "冒名登记",
            "responsible_person": "某人",
            "responsible_phone": "13800000000",
            "deadline": "2030-01-01T00:00:00+08:00",
        },
    )
    assert filing.status_code == 422

    admin = await client("admin")
    [alarm] = [a for a in (await admin.get("/api/alarms")).json() if a["id"] == their_alarm]
    assert alarm["status"] == "active" and alarm["acknowledged_by"] is None
    [entry] = [h for h in (await admin.get("/api/hazards")).json() if h["id"] == their_entry]
    assert entry["status"] == "reported"


async def test_duty_staff_rectify_and_only_the_bureau_signs_off(demo, client):
    entry = await file_hazard(demo, RONGCHENG)
    staff, admin = await client(f"duty-{RONGCHENG}"), await client("admin")

    def step(c, action):
        return c.post(f"/api/hazards/{entry}/transitions", json={"action": action, "note": ""})

    assert (await step(staff, "start")).json()["status"] == "rectifying"
    assert (await step(staff, "submit")).json()["status"] == "awaiting-verification"
    assert (await step(staff, "sign-off")).status_code == 403
    assert (await step(admin, "sign-off")).json()["status"] == "closed"
    trail = (await staff.get(f"/api/hazards/{entry}/events")).json()
    assert [(e["action"], e["actor"]) for e in trail[1:]] == [
        ("start", f"duty-{RONGCHENG}"),
        ("submit", f"duty-{RONGCHENG}"),
        ("sign-off", "admin"),
    ]


async def test_an_acknowledgement_is_recorded_under_the_logged_in_user(demo, client):
    alarm = await demo.raise_alarm("rc-btn-1")
    staff = await client(f"duty-{RONGCHENG}")
    reply = await staff.post(
        f"/api/alarms/{alarm}/acknowledge",
        json={"classification": "false", "note": "已到场，误按", "by": "冒充的名字"},
    )
    assert reply.status_code == 200
    assert (reply.json()["acknowledged_by"], reply.json()["ack_note"]) == (
        f"duty-{RONGCHENG}",
        "已到场，误按",
    )


async def test_a_viewer_reads_everything_and_changes_nothing(demo, client):
    alarm = await demo.raise_alarm("dq-btn-1")
    entry = await file_hazard(demo, DINGQIAO)
    viewer = await client("viewer")
    assert len((await viewer.get("/api/devices")).json()) == 9
    assert (await viewer.post(f"/api/alarms/{alarm}/acknowledge", json={})).status_code == 403
    assert (
        await viewer.post(f"/api/hazards/{entry}/transitions", json={"action": "start"})
    ).status_code == 403
    assert (await viewer.get("/api/dead-letters")).status_code == 403


async def test_only_testers_and_admins_drive_the_simulators(client):
    staff, tester = await client(f"duty-{RONGCHENG}"), await client("tester")
    assert (await staff.get("/api/simulator/devices")).status_code == 403
    assert (
        await staff.post(
            "/api/simulator/devices/rc-btn-1/scenario", json={"scenario": "button-press"}
        )
    ).status_code == 403
    # let through: this in-process app runs no simulators, which it says
    assert (await tester.get("/api/simulator/devices")).status_code == 409


async def test_production_refuses_the_default_secret_and_the_demo_accounts(demo):
    with pytest.raises(StartupRefused, match="FIREWATCH_SECRET_KEY"):
        await refuse_default_secrets(Settings(env="production"), demo.sessions)
    keyed = Settings(env="production", secret_key="k" * 48)
    with pytest.raises(StartupRefused, match="FIREWATCH_CONFIRM_LINK_SECRET"):
        await refuse_default_secrets(keyed, demo.sessions)
    strong = keyed.model_copy(update={"confirm_link_secret": "c" * 48})
    with pytest.raises(StartupRefused, match="demo accounts"):
        await refuse_default_secrets(strong, demo.sessions)
    await remove_demo_accounts(demo.sessions)
    await refuse_default_secrets(strong, demo.sessions)  # now it starts


def test_firewatch_up_in_production_mode_stops_at_once_with_the_default_secret(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "firewatch.cli",
            "up",
            "--port",
            str(free_port()),
            "--data-dir",
            str(tmp_path),
        ],
        env={"PATH": "/usr/bin:/bin", "FIREWATCH_ENV": "production"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "production mode refuses the default" in result.stderr


async def test_duty_staff_statistics_and_export_cover_their_own_institution_only(demo, client):
    await file_hazard(demo, RONGCHENG)
    await file_hazard(demo, DINGQIAO)
    staff, admin = await client(f"duty-{RONGCHENG}"), await client("admin")

    everyone = (await admin.get("/api/hazards/statistics?by=institution")).json()
    assert {r["key"] for r in everyone["rows"]} == {RONGCHENG, DINGQIAO}
    own = (await staff.get("/api/hazards/statistics?by=institution")).json()
    assert [(r["key"], r["total"]) for r in own["rows"]] == [(RONGCHENG, 1)]
    other = await staff.get(f"/api/hazards/statistics?by=township&institution_id={DINGQIAO}")
    assert other.status_code == 404
    export = await staff.get("/api/hazards/export.xlsx")
    assert export.status_code == 200
    sheet = openpyxl.load_workbook(io.BytesIO(export.content)).active
    cells = {str(c.value) for row in sheet.iter_rows() for c in row if c.value is not None}
    assert "蓉城镇敬老院（演示）" in cells and "丁桥镇敬老院（演示）" not in cells


async def test_the_demo_accounts_stay_removed_after_a_restart(demo, client):
    await remove_demo_accounts(demo.sessions)
    await prepare_accounts(Settings(), demo.sessions)  # what `firewatch up` does on start
    refused = await (await client()).post(
        "/api/auth/token", data={"username": "admin", "password": DEMO_PASSWORD}
    )
    assert refused.status_code == 401
    async with demo.sessions() as session:
        assert list(await session.scalars(select(User.username))) == []


async def test_the_sixth_wrong_password_in_five_minutes_answers_429(client):
    anonymous = await client()

    def attempt(password: str):
        return anonymous.post("/api/auth/token", data={"username": "admin", "password": password})

    for _ in range(5):
        assert (await attempt("guess-again")).status_code == 401
    throttled = await attempt("guess-again")
    assert throttled.status_code == 429
    assert 0 < int(throttled.headers["Retry-After"]) <= 300
    assert (await attempt(DEMO_PASSWORD)).status_code == 429  # the right one waits too
    assert (await client("viewer")).headers["Authorization"]  # other accounts log in


async def test_twenty_failures_from_one_address_answer_429_for_any_account(client):
    anonymous = await client()
    for i in range(20):
        reply = await anonymous.post(
            "/api/auth/token", data={"username": f"guess-{i}", "password": "guess"}
        )
        assert reply.status_code == 401
    reply = await anonymous.post(
        "/api/auth/token", data={"username": "viewer", "password": DEMO_PASSWORD}
    )
    assert reply.status_code == 429 and int(reply.headers["Retry-After"]) > 0


def user_command(demo, *args: str) -> subprocess.CompletedProcess[str]:
    """`firewatch user ...` on the demo app's database, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "firewatch.cli", "user", *args],
        env={
            **os.environ,
            "FIREWATCH_DATABASE_URL": demo.database_url,
            "FIREWATCH_PASSWORD": "a-new-password-1",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_a_disabled_account_cannot_log_in_and_its_token_stops_working(demo, client):
    staff = await client(f"duty-{RONGCHENG}")
    assert (await staff.get("/api/alarms")).status_code == 200
    assert user_command(demo, "disable", f"duty-{RONGCHENG}").returncode == 0

    assert (await staff.get("/api/alarms")).status_code == 401
    again = await (await client()).post(
        "/api/auth/token", data={"username": f"duty-{RONGCHENG}", "password": DEMO_PASSWORD}
    )
    assert again.status_code == 401
    listed = user_command(demo, "list").stdout
    assert re.search(rf"^duty-{RONGCHENG} +staff +{RONGCHENG} +disabled", listed, re.M), listed

    assert user_command(demo, "enable", f"duty-{RONGCHENG}").returncode == 0
    assert (await staff.get("/api/alarms")).status_code == 200


async def test_an_account_is_given_a_new_password_and_role_from_the_command_line(demo, client):
    before = await client("viewer")
    assert user_command(demo, "passwd", "viewer").returncode == 0
    assert (await before.get("/api/alarms")).status_code == 401  # logins with the old one end
    assert (
        user_command(
            demo, "role", "viewer", "--role", "staff", "--institution", DINGQIAO
        ).returncode
        == 0
    )
    refused = user_command(demo, "role", "tester", "--role", "staff")
    assert refused.returncode == 1 and "institution" in refused.stderr

    anonymous = await client()
    old = await anonymous.post(
        "/api/auth/token", data={"username": "viewer", "password": DEMO_PASSWORD}
    )
    assert old.status_code == 401
    moved = await login_async(await client(), "viewer", "a-new-password-1")
    assert {i["id"] for i in (await moved.get("/api/institutions")).json()} == {DINGQIAO}


async def test_anonymous_metrics_answers_401_and_health_only_the_status(tmp_path):
    token = "scrape-" + "t" * 32
    async with (
        demo_app(tmp_path, Settings(metrics_token=token)) as demo,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(demo.app), base_url="http://t"
        ) as anonymous,
    ):
        assert (await anonymous.get("/metrics")).status_code == 401
        assert (await anonymous.get("/api/health")).json() == {"status": "ok"}
        scraper = {"Authorization": f"Bearer {token}"}
        assert (await anonymous.get("/metrics", headers=scraper)).status_code == 200
        assert "database" in (await anonymous.get("/api/health", headers=scraper)).json()
        viewer = await login_async(anonymous, "viewer")
        assert (await viewer.get("/metrics")).status_code == 401
        admin = await login_async(viewer, "admin")
        assert (await admin.get("/metrics")).status_code == 200


async def test_password_checks_run_on_their_own_pool_and_a_flood_beyond_its_queue_is_refused():
    work = PasswordWork(workers=1, waiting=1)
    assert (await work.run(lambda: threading.current_thread().name)).startswith("argon2")
    release = threading.Event()
    held = [asyncio.ensure_future(work.run(release.wait)) for _ in range(2)]
    await asyncio.sleep(0)  # one check running, one waiting: the pool is full
    with pytest.raises(HashingBusy):
        await work.run(release.wait)
    release.set()
    assert await asyncio.gather(*held) == [True, True]
