"""Sending stored notices: marked sent only on the provider's success answer, retried otherwise.

The alert service stores a notice in the same transaction as its alarm; this loop sends what is
pending, oldest first.  A failure (network, HTTP error, provider error code) is recorded and
retried with exponential backoff.  Each WeChat Work robot takes at most 20 messages a minute;
the limiter holds back what would exceed that instead of having it refused.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict, deque
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from firewatch.contract import utc_now
from firewatch.db import Notice

log = logging.getLogger(__name__)

WECOM_PER_MINUTE = 20
MAX_BACKOFF_S = 300


class SendFailed(Exception):
    pass


async def send_wecom_robot(http: httpx.AsyncClient, url: str, body: dict[str, Any]) -> None:
    """POST to a WeChat Work group robot; success is HTTP 200 with errcode 0 (doc 91770)."""
    try:
        reply = await http.post(url, json=body)
    except httpx.HTTPError as exc:
        raise SendFailed(f"{type(exc).__name__}: {exc}") from None
    if reply.status_code != 200:
        raise SendFailed(f"HTTP {reply.status_code}: {reply.text[:200]}")
    try:
        answer = reply.json()
    except ValueError:
        raise SendFailed(f"answer is not JSON: {reply.text[:200]}") from None
    if answer.get("errcode") != 0:
        raise SendFailed(f"errcode {answer.get('errcode')}: {answer.get('errmsg')}")


class RateLimiter:
    """At most ``limit`` sends per target in any 60-second window."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._sent: dict[str, deque[float]] = defaultdict(deque)

    def wait_s(self, target: str, now: float) -> float:
        sent = self._sent[target]
        while sent and now - sent[0] >= 60:
            sent.popleft()
        return 0.0 if len(sent) < self.limit else 60 - (now - sent[0])

    def record(self, target: str, now: float) -> None:
        self._sent[target].append(now)


class Notifier:
    def __init__(self, sessions: async_sessionmaker, waiting: asyncio.Event) -> None:
        self.sessions = sessions
        self.waiting = waiting
        self.limiter = RateLimiter(WECOM_PER_MINUTE)
        self.sent = 0
        self.failures = 0

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            while True:
                try:
                    await asyncio.wait_for(self.waiting.wait(), timeout=1.0)
                except TimeoutError:
                    pass  # also look again every second for retries that have come due
                self.waiting.clear()
                await self.send_due(http)

    async def send_due(self, http: httpx.AsyncClient) -> None:
        async with self.sessions() as session:
            due = list(
                await session.scalars(
                    select(Notice)
                    .where(Notice.status == "pending", Notice.next_attempt_at <= utc_now())
                    .order_by(Notice.id)
                    .limit(100)
                )
            )
        loop = asyncio.get_running_loop()
        for notice in due:
            hold = self.limiter.wait_s(notice.target, loop.time())
            if hold > 0:
                await self._postpone(notice.id, hold, None)
                continue
            self.limiter.record(notice.target, loop.time())
            try:
                await send_wecom_robot(http, notice.target, notice.body)
            except SendFailed as exc:
                self.failures += 1
                backoff = min(2 ** notice.attempts, MAX_BACKOFF_S)
                log.warning("notice %d not sent (%s); retrying in %d s", notice.id, exc, backoff)
                await self._postpone(notice.id, backoff, str(exc))
                continue
            async with self.sessions.begin() as session:
                row = await session.get_one(Notice, notice.id)
                row.status = "sent"
                row.sent_at = utc_now()
                row.attempts += 1
            self.sent += 1

    async def _postpone(self, notice_id: int, seconds: float, error: str | None) -> None:
        async with self.sessions.begin() as session:
            row = await session.get_one(Notice, notice_id)
            row.next_attempt_at = utc_now() + timedelta(seconds=seconds)
            if error is not None:
                row.attempts += 1
                row.last_error = error

    def status(self) -> dict[str, Any]:
        return {"notices_sent": self.sent, "send_failures": self.failures}
