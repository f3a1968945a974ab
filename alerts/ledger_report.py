"""What the bureau reports upward from the ledger: which entries, and counts of them, in SQL.

Counting follows the work plans' "dynamic clearance" (动态清零) reading:

- an entry counts once it is a hazard: public reports only after they are verified (举报查实);
  pending and rejected reports are kept in the ledger but never counted;
- ``open``: reported, rectifying or awaiting verification; ``closed``: signed off (销号);
  ``overdue``: open, still in the responsible unit's hands (reported or rectifying) and past
  its deadline at ``now``; ``total`` = open + closed;
- ``since`` / ``until`` select entries by when they were filed (``since`` ≤ filed < ``until``);
  their status is today's.

The counts are one grouped query (SUM of CASE), portable between SQLite and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from alerts.ledger import (
    CATEGORY_ZH,
    NOT_COUNTED,
    OPEN,
    SOURCE_ZH,
    UNDER_RECTIFICATION,
    Source,
    Status,
)
from firewatch.db import Hazard, Institution
from firewatch.profiles import HazardCategory


@dataclass(frozen=True)
class LedgerFilter:
    """Which entries: the same filters for the list, the statistics and the export."""

    status: tuple[Status, ...] = ()
    category: HazardCategory | None = None
    source: Source | None = None
    township: str | None = None
    institution_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def apply(self, query: Select) -> Select:
        if self.status:
            query = query.where(Hazard.status.in_(self.status))
        for column, value in (
            (Hazard.category, self.category),
            (Hazard.source, self.source),
            (Hazard.township, self.township),
            (Hazard.institution_id, self.institution_id),
        ):
            if value is not None:
                query = query.where(column == value)
        if self.since is not None:
            query = query.where(Hazard.created_at >= self.since)
        if self.until is not None:
            query = query.where(Hazard.created_at < self.until)
        return query


class GroupBy(StrEnum):
    TOWNSHIP = "township"
    INSTITUTION = "institution"
    CATEGORY = "category"
    SOURCE = "source"


_GROUP_COLUMNS = {
    GroupBy.TOWNSHIP: Hazard.township,
    GroupBy.INSTITUTION: Hazard.institution_id,
    GroupBy.CATEGORY: Hazard.category,
    GroupBy.SOURCE: Hazard.source,
}
COUNTS = ("open", "overdue", "closed", "total")


def _count(condition: ColumnElement[bool]) -> Any:
    return func.sum(case((condition, 1), else_=0))


def _label(by: GroupBy, key: str, name: str) -> str:
    """What a row is called: the institution's or township's name, or the plan's word."""
    if by is GroupBy.CATEGORY:
        return CATEGORY_ZH[HazardCategory(key)]
    if by is GroupBy.SOURCE:
        return SOURCE_ZH[Source(key)]
    return name


async def statistics(
    session: AsyncSession, by: GroupBy, where: LedgerFilter, now: datetime
) -> dict[str, Any]:
    """Open, overdue and closed entries per township, institution, category or source."""
    key = _GROUP_COLUMNS[by]
    name = Institution.name if by is GroupBy.INSTITUTION else key
    is_open = Hazard.status.in_(OPEN)
    is_overdue = and_(Hazard.status.in_(UNDER_RECTIFICATION), Hazard.deadline < now)
    is_closed = Hazard.status == Status.CLOSED
    query = where.apply(
        select(
            key.label("key"),
            name.label("name"),
            _count(is_open).label("open"),
            _count(is_overdue).label("overdue"),
            _count(is_closed).label("closed"),
        )
        .join(Institution, Institution.id == Hazard.institution_id)
        .where(Hazard.status.not_in(NOT_COUNTED))
        .group_by(key, name)
        .order_by(key)
    )
    rows = []
    for row in (await session.execute(query)).mappings():
        counts = {name: int(row[name]) for name in ("open", "overdue", "closed")}
        rows.append(
            {
                "key": row["key"],
                "label": _label(by, row["key"], row["name"]),
                **counts,
                "total": counts["open"] + counts["closed"],
            }
        )
    return {
        "by": by.value,
        "since": where.since,
        "until": where.until,
        "rows": rows,
        "totals": {name: sum(r[name] for r in rows) for name in COUNTS},
    }
