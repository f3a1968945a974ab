"""What a person types into the API is bounded: a date out of range or text the database or the
display cannot take is a 422 naming the field, never a 500 or a stored value that breaks the
escalation sweep later."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from alerts.notices import CST
from firewatch.contract import utc_now
from firewatch.web.schemas import MAX_DEADLINE_AHEAD, HazardFiling
from tests.support.auth import login_async
from tests.support.webapp import demo_app


@pytest.fixture
async def api(tmp_path: Path):
    async with (
        demo_app(tmp_path) as demo,
        httpx.AsyncClient(transport=httpx.ASGITransport(demo.app), base_url="http://t") as client,
    ):
        yield await login_async(client, "admin")


def filing(deadline: str, **changes: str) -> dict[str, str]:
    return {
        "institution_id": "dingqiao-eldercare",
        "category": "evacuation",
        "source": "inspection",
        "description": "二楼安全出口被杂物堵塞",
        "responsible_person": "赵强",
        "responsible_phone": "13800000202",
        "deadline": deadline,
        **changes,
    }


def in_a_week() -> str:
    return (utc_now() + timedelta(days=7)).isoformat()


def refused_fields(reply: httpx.Response) -> dict[str, str]:
    assert reply.status_code == 422, reply.text
    return {".".join(map(str, e["loc"][1:])): e["msg"] for e in reply.json()["detail"]}


@pytest.mark.parametrize(
    ("deadline", "why"),
    [
        ("9999-12-31T23:59:59+08:00", "between 2000 and 2100"),
        ("0001-01-01T00:00:00Z", "between 2000 and 2100"),
        ("2099-01-01T00:00:00+08:00", "at most three years ahead"),
        ("2001-01-01T00:00:00+08:00", "after the filing"),
    ],
)
async def test_a_deadline_out_of_range_is_refused_naming_the_field(api, deadline, why):
    reply = await api.post("/api/hazards", json=filing(deadline))
    assert why in refused_fields(reply)["deadline"]
    assert (await api.get("/api/hazards")).json() == []


async def test_a_deadline_equal_to_the_filing_time_is_refused(api):
    reply = await api.post("/api/hazards", json=filing(utc_now().isoformat()))
    assert "after the filing" in refused_fields(reply)["deadline"]


async def test_a_deadline_without_a_time_zone_is_china_time(api):
    day = (utc_now() + timedelta(days=30)).astimezone(CST).date()
    reply = await api.post("/api/hazards", json=filing(f"{day}T18:00:00"))
    assert reply.status_code == 201, reply.text
    stored = datetime.fromisoformat(reply.json()["deadline"])
    assert stored == datetime(day.year, day.month, day.day, 18, tzinfo=CST)


@pytest.mark.parametrize(
    ("field", "text", "character"),
    [
        ("description", "安全出口\u0000被堵", "U+0000"),
        ("description", "出口被堵\u202e塞杂", "U+202E"),
        ("responsible_person", "赵\u200b强", "U+200B"),
        ("responsible_unit", "丁桥\u2066镇", "U+2066"),
    ],
)
async def test_control_and_invisible_characters_are_refused_naming_the_field(
    api, field, text, character
):
    reply = await api.post("/api/hazards", json=filing(in_a_week(), **{field: text}))
    assert character in refused_fields(reply)[field]


async def test_a_phone_number_of_dashes_only_is_refused(api):
    reply = await api.post("/api/hazards", json=filing(in_a_week(), responsible_phone="-----"))
    assert "should match pattern" in refused_fields(reply)["responsible_phone"]


async def test_a_line_break_in_a_description_is_kept(api):
    reply = await api.post("/api/hazards", json=filing(in_a_week(), description="一楼\n二楼"))
    assert reply.status_code == 201 and reply.json()["description"] == "一楼\n二楼"


async def test_an_acknowledgement_note_with_nul_is_refused_and_the_alarm_stays_open(tmp_path):
    async with (
        demo_app(tmp_path) as demo,
        httpx.AsyncClient(transport=httpx.ASGITransport(demo.app), base_url="http://t") as client,
    ):
        api = await login_async(client, "admin")
        alarm = await demo.raise_alarm("dq-btn-1")
        reply = await api.post(
            f"/api/alarms/{alarm}/acknowledge",
            json={"classification": "false", "note": "到场\u0000"},
        )
        assert "U+0000" in refused_fields(reply)["note"]
        assert (await api.get("/api/alarms")).json()[0]["status"] == "active"


@pytest.mark.parametrize(
    ("params", "field", "why"),
    [
        ({"since": "1900-01-01"}, "since", "between 2000 and 2100"),
        ({"until": "9999-12-31T00:00:00Z"}, "until", "between 2000 and 2100"),
        ({"since": "2026-11-01", "until": "2026-10-01"}, "until", "after since"),
        ({"township": "丁桥镇\u0000"}, "township", "U+0000"),
    ],
)
async def test_a_ledger_filter_out_of_range_is_refused_naming_the_parameter(
    api, params, field, why
):
    for route in ("/api/hazards/statistics", "/api/hazards/export.xlsx"):
        reply = await api.get(route, params={"by": "township", **params})
        assert why in refused_fields(reply)[field]


async def test_a_list_filter_or_device_id_with_nul_is_refused_not_a_server_error(api):
    assert (
        "U+0000"
        in refused_fields(await api.get("/api/hazards", params={"township": "\u0000"}))["township"]
    )
    assert refused_fields(await api.get("/api/devices/dq-btn-1%00"))


NOW = datetime.now(CST)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.datetimes(timezones=st.none() | st.just(CST) | st.timezones()),
        st.datetimes(
            min_value=NOW.replace(tzinfo=None) - timedelta(days=400),
            max_value=NOW.replace(tzinfo=None) + timedelta(days=1200),
            timezones=st.just(CST) | st.just(timezone(timedelta(hours=-12))),
        ),
    )
)
def test_any_deadline_is_accepted_only_after_now_and_within_three_years(deadline):
    fields = filing(deadline.isoformat())
    try:
        accepted = HazardFiling.model_validate(fields).deadline
    except ValidationError as exc:
        assert [e["loc"] for e in exc.errors()] == [("deadline",)]
        zoned = deadline if deadline.tzinfo else deadline.replace(tzinfo=CST)
        now = utc_now()
        assert not now < zoned <= now + MAX_DEADLINE_AHEAD or zoned.year >= 2100
    else:
        assert accepted.tzinfo is not None
        assert utc_now() - timedelta(minutes=1) < accepted <= utc_now() + MAX_DEADLINE_AHEAD


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    days=st.one_of(
        st.floats(min_value=-1e6, max_value=1e6),
        st.sampled_from([0.0, 1e-9, 3 * 366.0, 3 * 366.0 + 1e-3, -1e-9, 30000.0]),
    )
)
async def test_any_deadline_through_the_api_is_stored_or_refused_naming_it(api, days):
    try:
        deadline = utc_now() + timedelta(days=days)
    except OverflowError:
        return
    reply = await api.post("/api/hazards", json=filing(deadline.isoformat()))
    if reply.status_code == 201:
        assert (
            utc_now() < datetime.fromisoformat(reply.json()["deadline"]) + timedelta(seconds=1)
            and days <= 3 * 366
        )
    else:
        assert list(refused_fields(reply)) == ["deadline"]
