"""The web app in-process on the demo site, with the demo accounts, on a real SQLite database."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import async_sessionmaker

from firewatch import db
from firewatch.accounts import ensure_demo_accounts
from firewatch.contract import utc_now
from firewatch.settings import SITES_DIR, Settings
from firewatch.web.app import AppContext, create_app
from ingest.sqlite_store import SqliteTimeSeries
from tests.support.auth import DEMO_PASSWORD
from tests.support.ledger import demo_county


@dataclass
class DemoApp:
    app: FastAPI
    sessions: async_sessionmaker
    database_url: str  # for the `firewatch user` command beside it
    timeseries: SqliteTimeSeries  # the app's trend store, open

    async def raise_alarm(self, device_id: str) -> int:
        """An open alarm on ``device_id``, as the alert service would have stored it."""
        async with self.sessions.begin() as session:
            device = await session.get_one(db.Device, device_id)
            device.state, device.state_reason = "alarm", "一键报警（人工火警）"
            alarm = db.Alarm(
                device_id=device_id,
                institution_id=device.institution_id,
                rule="one_key_alarm",
                title="一键报警（人工火警）",
                severity="alarm",
                status="active",
                raised_at=utc_now(),
            )
            session.add(alarm)
            await session.flush()
            return alarm.id


@contextlib.asynccontextmanager
async def demo_app(
    data_dir: Path, settings: Settings | None = None, database_url: str | None = None
) -> AsyncIterator[DemoApp]:
    database_url = database_url or f"sqlite+aiosqlite:///{data_dir}/fw.db"
    async with demo_county(database_url) as county:
        await ensure_demo_accounts(county.sessions, DEMO_PASSWORD)
        timeseries = SqliteTimeSeries(data_dir / "ts.db")
        await timeseries.open()
        app = create_app(
            AppContext(
                sessions=county.sessions,
                timeseries=timeseries,
                site=county.site,
                site_dir=SITES_DIR,
                statuses={},
                settings=settings or Settings(),
                metrics=CollectorRegistry(),
            )
        )
        try:
            yield DemoApp(app, county.sessions, database_url, timeseries)
        finally:
            app.state.hub.close()
            await timeseries.close()
