"""The ledger's reports over HTTP: statistics the bureau reports upward, and the Excel export.

A router of its own, which the app includes, so that roles can be put on it as a whole.  Both
routes take the ledger list's filters; ``since``/``until`` without a time zone are China time.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import async_sessionmaker

from alerts.alarm_stats import ConfirmationReports
from alerts.ledger import Source, Status
from alerts.ledger_export import MEDIA_TYPE, ledger_rows, subtitle, workbook
from alerts.ledger_report import GroupBy, LedgerFilter, statistics
from alerts.notices import CST
from firewatch.contract import utc_now
from firewatch.profiles import HazardCategory
from firewatch.site import Site
from firewatch.web.auth import CurrentUser, own_institution
from firewatch.web.schemas import EnteredDate, QueryText


class Counts(BaseModel):
    open: int
    overdue: int
    closed: int
    total: int


class StatisticsRow(Counts):
    key: str
    label: str


class StatisticsOut(BaseModel):
    by: GroupBy
    since: datetime | None
    until: datetime | None
    rows: list[StatisticsRow]
    totals: Counts


def ledger_filter(
    status: list[Status] | None = Query(None, description="repeat for several"),
    category: HazardCategory | None = None,
    source: Source | None = None,
    township: QueryText | None = None,
    institution_id: QueryText | None = None,
    since: EnteredDate | None = Query(None, description="filed at or after (ISO 8601)"),
    until: EnteredDate | None = Query(None, description="filed before (ISO 8601)"),
) -> LedgerFilter:
    if since is not None and until is not None and until <= since:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("query", "until"),
                    "input": until.isoformat(),
                    "msg": "Value error, until must lie after since",
                }
            ]
        )
    return LedgerFilter(
        status=tuple(status or ()),
        category=category,
        source=source,
        township=township,
        institution_id=institution_id,
        since=since,
        until=until,
    )


def scoped_filter(user: CurrentUser, where: LedgerFilter = Depends(ledger_filter)) -> LedgerFilter:
    """The filters, kept to the duty staff's own institution."""
    return replace(where, institution_id=own_institution(user, where.institution_id))


def ledger_router(
    sessions: async_sessionmaker, site: Site, confirmations: ConfirmationReports
) -> APIRouter:
    """``confirmations``: the alarm statistics the export adds as a sheet of its own."""
    router = APIRouter(prefix="/api/hazards", tags=["hazard ledger"])

    @router.get("/statistics", response_model=StatisticsOut)
    async def hazard_statistics(
        by: GroupBy = Query(description="township | institution | category | source"),
        where: LedgerFilter = Depends(scoped_filter),
    ) -> dict:
        """Open, overdue and closed entries per group (verified entries only)."""
        async with sessions() as session:
            return await statistics(session, by, where, utc_now())

    @router.get(
        "/export.xlsx",
        response_class=Response,
        responses={200: {"content": {MEDIA_TYPE: {}}, "description": "the workbook"}},
    )
    async def hazard_export(where: LedgerFilter = Depends(scoped_filter)) -> Response:
        """The ledger (台账) as an Excel workbook, oldest entry first."""
        now = utc_now()
        async with sessions() as session:
            rows = await ledger_rows(session, where, now)
            reports = await confirmations(session, where, now)
        data = await asyncio.to_thread(
            workbook,
            f"{site.county.name}民政服务机构重大事故隐患台账",
            subtitle(where, now),
            rows,
            reports,
        )
        day = f"{now.astimezone(CST):%Y%m%d}"
        return Response(
            data,
            media_type=MEDIA_TYPE,
            headers={
                "Content-Disposition": f'attachment; filename="hazard-ledger-{day}.xlsx"; '
                f"filename*=UTF-8''{quote(f'重大事故隐患台账-{day}.xlsx')}"
            },
        )

    return router
