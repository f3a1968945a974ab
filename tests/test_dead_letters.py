"""The dead-letter store: bounded per letter, kept for a while, read a page at a time."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from firewatch import db
from firewatch.contract import utc_now
from firewatch.dead_letters import MAX_STORED_PAYLOAD, STORED_PER_SOURCE_PER_MINUTE, DeadLetters
from tests.support.auth import login_async
from tests.support.webapp import demo_app

pytestmark = pytest.mark.timeout(60)
TOPIC = "firewatch/v1/readings/gw-rongcheng/rc-gas-1"


@pytest.fixture
async def demo(tmp_path):
    async with demo_app(tmp_path) as running:
        yield running


async def test_dead_letters_come_a_page_at_a_time_newest_first_with_the_total(demo):
    letters = DeadLetters(demo.sessions, "alerts")
    for n in range(5):
        await letters.put(TOPIC, f'{{"n": {n}}}'.encode(), f"reason {n}")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(demo.app), base_url="http://t"
    ) as client:
        admin = await login_async(client, "admin")
        pages, before = [], None
        while True:
            params = {"limit": 2} | ({"before": before} if before else {})
            page = (await admin.get("/api/dead-letters", params=params)).json()
            pages.append([letter["reason"] for letter in page["items"]])
            assert page["total"] == 5
            before = page["next_before"]
            if before is None:
                break
    assert pages == [["reason 4", "reason 3"], ["reason 2", "reason 1"], ["reason 0"]]


async def test_an_8_mib_payload_keeps_its_first_64_kib_and_its_length(demo):
    await DeadLetters(demo.sessions, "ingest").put(TOPIC, b"x" * (8 << 20), "too large")
    async with demo.sessions() as session:
        [letter] = await session.scalars(select(db.DeadLetter))
    assert (len(letter.payload), letter.payload_size) == (MAX_STORED_PAYLOAD, 8 << 20)


async def test_a_flood_from_one_gateway_stores_a_minutes_budget_and_counts_the_rest(demo):
    letters = DeadLetters(demo.sessions, "alerts")
    for _ in range(STORED_PER_SOURCE_PER_MINUTE + 40):
        await letters.put(TOPIC, b"{}", "flood")
    # another gateway's letter is still stored: the budget is per source
    await letters.put("firewatch/v1/readings/gw-dingqiao/dq-gas-1", b"{}", "its own")
    async with demo.sessions() as session:
        stored = list(await session.scalars(select(db.DeadLetter.reason)))
    assert stored.count("flood") == STORED_PER_SOURCE_PER_MINUTE and "its own" in stored
    assert (letters.by_reason["contract"], letters.unstored["contract"]) == (
        STORED_PER_SOURCE_PER_MINUTE + 1,
        40,
    )


async def test_dead_letters_older_than_the_retention_are_forgotten_and_the_rest_kept(demo):
    letters = DeadLetters(demo.sessions, "alerts", keep=timedelta(days=30))
    for n in range(7):
        await letters.put(TOPIC, b"{}", f"reason {n}")
    async with demo.sessions.begin() as session:  # five of them 31 days old
        await session.execute(
            update(db.DeadLetter)
            .where(db.DeadLetter.id <= 5)
            .values(received_at=utc_now() - timedelta(days=31))
        )
    expiring = asyncio.create_task(letters.expire(chunk=2))  # in small transactions
    try:
        while True:
            async with demo.sessions() as session:
                left = list(await session.scalars(select(db.DeadLetter.reason)))
            if len(left) <= 2:
                break
            await asyncio.sleep(0.02)
    finally:
        expiring.cancel()
    assert left == ["reason 5", "reason 6"]
