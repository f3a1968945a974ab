"""The ledger as an Excel workbook, in the column layout bureaus keep their 台账 in.

Columns follow the work plans' words: the township and unit, the hazard, its category and the
channel it was found through (机构自查上报 / 督导检查发现 / 群众举报查实, and 物联网监测), the
rectification's responsible unit, person and deadline (整改责任单位、责任人、整改时限), the
measures and progress, the status through sign-off (销号) and the re-check (回头看).  A title
row, a frozen header, filters on the header, widths that fit, and dates in China time.

Text is only ever text: what anyone typed (a hazard description, a note, a filter) that begins
like a formula is written as a string Excel shows as typed and never evaluates (see
``_text_only``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from io import BytesIO
from typing import overload

from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE, Cell, MergedCell
from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.properties import PageSetupProperties
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from alerts.ledger import (
    CATEGORY_ZH,
    RECHECKS,
    SOURCE_ZH,
    STATUS_ZH,
    STEP_LABELS,
    UNDER_RECTIFICATION,
    Source,
    Status,
)
from alerts.ledger_report import LedgerFilter
from alerts.notices import CST
from firewatch.db import Hazard, HazardEvent, Institution
from firewatch.profiles import HazardCategory

MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
DATE = "yyyy-mm-dd"
DATE_TIME = "yyyy-mm-dd hh:mm"


@dataclass(frozen=True)
class Column:
    header: str
    width: float
    number_format: str | None = None


COLUMNS = (
    Column("序号", 6),
    Column("乡镇", 10),
    Column("单位名称", 22),
    Column("隐患描述", 40),
    Column("隐患类别", 12),
    Column("排查渠道", 13),
    Column("发现时间", 17, DATE_TIME),
    Column("整改责任单位", 22),
    Column("责任人", 10),
    Column("联系电话", 14),
    Column("整改时限", 17, DATE_TIME),
    Column("整改措施及进展", 44),
    Column("整改状态", 11),
    Column("是否逾期", 9),
    Column("销号日期", 12, DATE),
    Column("回头看", 22),
)
HEADER_ROW = 3
#: how a cell's text makes Excel take it for a formula, now or once someone edits the cell
FORMULA_LEADS = ("=", "+", "-", "@")
#: leading characters Excel skips (or that a pasted cell splits on) before such a sign
LEADING_BLANKS = " \t\r\n\u3000"


def _local(ts: datetime) -> datetime:
    """China time without a zone: Excel cells hold no time zone.

    An instant in the calendar's last hours (a deadline meaning "never", in year 9999) has no
    China time a datetime can hold: it is shown as the calendar's last second, which is also
    the last one Excel can show.
    """
    try:
        return ts.astimezone(CST).replace(tzinfo=None)
    except OverflowError:
        return datetime.max.replace(microsecond=0)


def _day(ts: datetime) -> str:
    return _local(ts).strftime("%Y-%m-%d")


def _progress(events: list[HazardEvent]) -> str:
    lines = []
    for e in events:
        if e.action not in STEP_LABELS:
            continue  # the filing itself is the description
        label = STEP_LABELS[e.action]
        note = f"：{e.note}" if e.note and e.note != label else ""
        lines.append(f"{e.at.astimezone(CST):%m-%d} {label}{note}（{e.actor}）")
    return "\n".join(lines)


def _signed_off(hazard: Hazard, events: list[HazardEvent]) -> datetime | None:
    if hazard.status != Status.CLOSED:
        return None
    return max((e.at for e in events if e.action == "sign-off"), default=None)


def _recheck(events: list[HazardEvent]) -> str | None:
    last = next((e for e in reversed(events) if e.action in ("sign-off", *RECHECKS)), None)
    if last is None:
        return None
    if last.action == "recheck-pass":
        return f"通过（{_day(last.at)}）"
    if last.action == "recheck-fail":
        return f"不通过，重新整改（{_day(last.at)}）"
    return "待开展"


def _row(
    number: int, hazard: Hazard, unit_name: str, events: list[HazardEvent], now: datetime
) -> list[object]:
    overdue = None
    if hazard.status in UNDER_RECTIFICATION:
        overdue = "是" if hazard.deadline < now else "否"
    signed_off = _signed_off(hazard, events)
    return [
        number,
        hazard.township,
        unit_name,
        hazard.description,
        CATEGORY_ZH[HazardCategory(hazard.category)],
        SOURCE_ZH[Source(hazard.source)],
        _local(hazard.created_at),
        hazard.responsible_unit,
        hazard.responsible_person,
        hazard.responsible_phone,
        _local(hazard.deadline),
        _progress(events),
        STATUS_ZH[Status(hazard.status)],
        overdue,
        _local(signed_off) if signed_off else None,
        _recheck(events),
    ]


async def ledger_rows(session: AsyncSession, where: LedgerFilter, now: datetime) -> list[list]:
    """The export's rows, oldest entry first (序号 1 is the first filed)."""
    chosen = where.apply(select(Hazard.id))
    entries = (
        await session.execute(
            where.apply(select(Hazard, Institution.name))
            .join(Institution, Institution.id == Hazard.institution_id)
            .order_by(Hazard.id)
        )
    ).all()
    events: dict[int, list[HazardEvent]] = {}
    for event in await session.scalars(
        select(HazardEvent).where(HazardEvent.hazard_id.in_(chosen)).order_by(HazardEvent.id)
    ):
        events.setdefault(event.hazard_id, []).append(event)
    return [
        _row(n, hazard, name, events.get(hazard.id, []), now)
        for n, (hazard, name) in enumerate(entries, start=1)
    ]


def subtitle(where: LedgerFilter, now: datetime) -> str:
    """The line under the title: when exported, and which entries."""
    chosen = [
        f"乡镇：{where.township}" if where.township else "",
        f"单位：{where.institution_id}" if where.institution_id else "",
        f"类别：{CATEGORY_ZH[where.category]}" if where.category else "",
        f"渠道：{SOURCE_ZH[where.source]}" if where.source else "",
        "状态：" + "、".join(STATUS_ZH[s] for s in where.status) if where.status else "",
        f"发现时间自 {_day(where.since)}" if where.since else "",
        f"发现时间至 {_day(where.until)} 前" if where.until else "",
    ]
    scope = "；".join(c for c in chosen if c) or "全部"
    return f"导出时间：{now.astimezone(CST):%Y-%m-%d %H:%M}　范围：{scope}"


@overload
def _printable(value: str) -> str: ...
@overload
def _printable(value: object) -> object: ...
def _printable(value: object) -> object:
    """Text without the control characters an .xlsx cannot hold (a filter or a report typed
    by the public may carry them); openpyxl would refuse the whole workbook."""
    return ILLEGAL_CHARACTERS_RE.sub("", value) if isinstance(value, str) else value


def _text_only(cell: Cell | MergedCell) -> None:
    """Keep a text cell text: never a formula, not even after someone edits it in Excel.

    openpyxl writes a string that starts with ``=`` as a formula; Excel turns one that starts
    with ``=``, ``+``, ``-`` or ``@``, also after blanks, into a formula when the cell is edited
    or pasted.  Such a cell is stored as a string with Excel's quote prefix (the leading ``'``
    a person would type), so it shows what was typed and never runs.
    """
    if not isinstance(cell.value, str):
        return
    cell.data_type = "s"
    if cell.value.lstrip(LEADING_BLANKS).startswith(FORMULA_LEADS):
        cell.quotePrefix = True


#: the alarm confirmation sheet's columns: alerts.alarm_stats's figures, in the bureaus' words
CONFIRMATION_COLUMNS = (
    ("分组", None, 26),
    ("报警数", "alarms", 9),
    ("已确认", "confirmed", 9),
    ("真实火警/险情", "real", 13),
    ("误报", "false", 8),
    ("测试/检修", "test", 10),
    ("设备故障", "device_fault", 10),
    ("未分类", "unclassified", 9),
    ("误报率", "false_alarm_rate", 9),
    ("确认用时中位（秒）", "median_confirm_s", 16),
    ("确认用时P90（秒）", "p90_confirm_s", 16),
    ("提级时限内确认率", "within_escalation_share", 16),
)
CONFIRMATION_GROUPS_ZH = {
    "institution": "按机构",
    "township": "按乡镇",
    "model": "按设备型号",
    "rule": "按报警规则",
}
PERCENT = "0.0%"


def _confirmation_sheet(book: Workbook, title: str, reports: list[dict]) -> None:
    """How alarms were confirmed, one block per grouping (alerts.alarm_stats)."""
    sheet = book.create_sheet("报警核实统计")
    sheet.append([_printable(title)])
    sheet.cell(row=1, column=1).font = Font(bold=True, size=14)
    for index, (_, _, width) in enumerate(CONFIRMATION_COLUMNS, start=1):
        sheet.column_dimensions[get_column_letter(index)].width = width
    for report in reports:
        sheet.append([])
        sheet.append([CONFIRMATION_GROUPS_ZH[report["by"]]])
        sheet.cell(row=sheet.max_row, column=1).font = Font(bold=True)
        sheet.append([header for header, _, _ in CONFIRMATION_COLUMNS])
        for cell in sheet[sheet.max_row]:
            cell.font = Font(bold=True)
            cell.fill = PatternFill("solid", fgColor="D9E1F2")
        for row in [*report["rows"], {"label": "合计", **report["totals"]}]:
            sheet.append(
                [_printable(row["label"]), *(row[key] for _, key, _ in CONFIRMATION_COLUMNS[1:])]
            )
            _text_only(sheet.cell(row=sheet.max_row, column=1))
            for index in (9, 12):
                sheet.cell(row=sheet.max_row, column=index).number_format = PERCENT


def workbook(
    title: str, subtitle: str, rows: list[list], confirmations: list[dict] | None = None
) -> bytes:
    """The .xlsx bytes: title, subtitle, header and ``rows`` (CPU work: run it off the loop);
    with ``confirmations`` (alerts.alarm_stats reports), a second sheet of them."""
    title, subtitle = _printable(title), _printable(subtitle)
    rows = [[_printable(v) for v in values] for values in rows]
    book = Workbook()
    sheet = book.worksheets[0]  # a new workbook's one sheet, the active one
    sheet.title = "隐患台账"
    last_column = get_column_letter(len(COLUMNS))
    for row, text, size in ((1, title, 16), (2, subtitle, 10)):
        sheet.merge_cells(f"A{row}:{last_column}{row}")
        cell = sheet.cell(row=row, column=1, value=text)
        _text_only(cell)
        cell.font = Font(bold=row == 1, size=size)
        cell.alignment = Alignment(horizontal="center" if row == 1 else "left", vertical="center")
    sheet.row_dimensions[1].height = 30
    thin = Side(style="thin", color="999999")
    border = Border(left=thin, right=thin, top=thin, bottom=thin)
    for index, column in enumerate(COLUMNS, start=1):
        cell = sheet.cell(row=HEADER_ROW, column=index, value=column.header)
        cell.font = Font(bold=True)
        cell.fill = PatternFill("solid", fgColor="D9E1F2")
        cell.alignment = Alignment(horizontal="center", vertical="center", wrap_text=True)
        cell.border = border
        sheet.column_dimensions[get_column_letter(index)].width = column.width
    for values in rows:
        sheet.append(values)
        for index, column in enumerate(COLUMNS, start=1):
            data_cell = sheet.cell(row=sheet.max_row, column=index)
            _text_only(data_cell)
            data_cell.alignment = Alignment(vertical="top", wrap_text=True)
            data_cell.border = border
            if column.number_format:
                data_cell.number_format = column.number_format
    sheet.freeze_panes = f"A{HEADER_ROW + 1}"
    sheet.auto_filter.ref = f"A{HEADER_ROW}:{last_column}{max(sheet.max_row, HEADER_ROW)}"
    sheet.print_title_rows = f"{HEADER_ROW}:{HEADER_ROW}"
    sheet.page_setup.orientation = "landscape"
    sheet.page_setup.fitToWidth = 1
    sheet.page_setup.fitToHeight = 0
    sheet.sheet_properties.pageSetUpPr = PageSetupProperties(fitToPage=True)
    if confirmations is not None:
        _confirmation_sheet(book, f"报警核实统计（{subtitle}）", confirmations)
    out = BytesIO()
    book.save(out)
    return out.getvalue()
