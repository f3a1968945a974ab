"""The bureau's console in a real headless Chromium, against `firewatch up` on the demo county.

Simulated devices, gateways, broker and alert service are all real; the pages follow the push
stream (no polling), so a marker turning red proves the push path.  Screenshots of each page go
to test-artifacts/console/; those of the map, the alarm page and the ledger also to docs/images/,
where the README shows them.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from datetime import timedelta
from urllib.parse import quote

import openpyxl
import pytest
from playwright.sync_api import expect

from firewatch.contract import utc_now
from tests.support.auth import DEMO_PASSWORD
from tests.support.browser import (
    ARTIFACTS,
    PAINTED_DOT,
    chromium,
    open_console,
    readme_screenshot,
    screenshot,
    wait_for_dot_colour,
)
from tests.support.stack import Stack

pytestmark = pytest.mark.timeout(180)
PUSH_TIMEOUT_MS = 20_000  # a simulator scenario -> Modbus/MQTT -> alert service -> page


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    running = Stack(tmp_path_factory.mktemp("console-stack"))
    running.start()
    running.wait_until(
        lambda: all(d["state"] == "normal" for d in running.get("/api/devices")),
        30,
        "every demo device to report normal",
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser():
    yield from chromium()


def marker(page, institution_id: str):
    return page.locator(f'path[data-institution-id="{institution_id}"]')


def test_a_wrong_password_is_refused_on_the_login_page(stack, browser):
    page = browser.new_page(base_url=stack.url)
    page.goto("/alarms")
    page.wait_for_url("**/login?next=%2Falarms")
    page.fill("#username", "admin")
    page.fill("#password", "not-the-password")
    page.click("#login-submit")
    expect(page.locator("#login-error")).to_have_text("用户名或密码错误")
    screenshot(page, "login-refused")
    page.close()


def test_next_evil_example_goes_to_the_map_after_login_and_a_page_of_the_site_is_kept(
    stack, browser
):
    page = browser.new_page(base_url=stack.url)
    for next_path, landing in [
        ("//evil.example/", "/"),
        ("/\\evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\t/evil.example/", "/"),
        ("/alarms?status=active", "/alarms?status=active"),
    ]:
        page.goto(f"/login?next={quote(next_path, safe='')}")
        page.fill("#username", "viewer")
        page.fill("#password", DEMO_PASSWORD)
        page.click("#login-submit")
        page.wait_for_url(lambda url: "/login" not in url, timeout=10_000)
        assert page.url == stack.url + landing, next_path
    page.close()


def test_the_bureau_sees_every_institution_on_the_map_with_counts(stack, browser):
    page = open_console(browser, stack.url, "admin")
    for institution in ("rongcheng-eldercare", "dingqiao-eldercare", "county-child-welfare"):
        expect(marker(page, institution)).to_have_attribute("data-state", "normal")
    expect(page.locator("#count-total")).to_have_text("9")
    expect(page.locator("#count-normal")).to_have_text("9")
    expect(
        page.locator('#township-body tr[data-township="蓉城镇"] td[data-k="devices"]')
    ).to_have_text("6")
    expect(page.locator("#user-name")).to_contain_text("县民政局管理员（演示）")
    screenshot(page, "map")
    assert page.errors == []
    page.context.close()


def test_a_button_press_turns_the_marker_red_by_push(stack, browser):
    page = open_console(browser, stack.url, "viewer")
    expect(marker(page, "rongcheng-eldercare")).to_have_attribute("data-state", "normal")
    pressed = time.monotonic()
    assert stack.simulate("rc-btn-1", "button-press").returncode == 0

    expect(marker(page, "rongcheng-eldercare")).to_have_attribute(
        "data-state", "alarm", timeout=PUSH_TIMEOUT_MS
    )
    seen = time.monotonic() - pressed
    expect(page.locator("#count-alarm")).to_have_text("1")
    expect(page.locator('#alarm-list li[data-status="active"]')).to_contain_text("一键报警")
    expect(marker(page, "dingqiao-eldercare")).to_have_attribute("data-state", "normal")
    stats = page.evaluate("window.firewatch.stats")
    assert stats["events"] >= 1  # the change came by push: the page does not poll
    readme_screenshot(page, "map-alarm")
    ARTIFACTS.joinpath("map-alarm.json").write_text(
        json.dumps({"command_to_red_marker_s": round(seen, 3), "apply_ms": stats["lastApplyMs"]})
    )
    page.context.close()


def test_zoomed_in_each_device_is_a_dot_around_its_institution_and_turns_red_by_push(
    stack, browser
):
    page = open_console(browser, stack.url, "viewer")
    colour = page.evaluate('async () => (await import("/static/js/vocab.js")).STATE_COLOR')
    devices = {"cw-efm-1": "宿舍楼配电箱", "cw-gas-1": "食堂操作间", "cw-btn-1": "门卫室"}
    assert page.evaluate(PAINTED_DOT, "cw-btn-1") is None  # county zoom: institutions only

    marker(page, "county-child-welfare").click()
    page.get_by_role("button", name="放大查看各设备位置").click()
    dots = {d: wait_for_dot_colour(page, d, colour["normal"]) for d in devices}
    centre = marker(page, "county-child-welfare").bounding_box()
    centre_xy = (centre["x"] + centre["width"] / 2, centre["y"] + centre["height"] / 2)
    for dot in dots.values():  # on a ring around the institution, clear of its marker
        assert 20 <= math.dist((dot["x"], dot["y"]), centre_xy) <= 40
    for a, b in itertools.combinations(dots.values(), 2):  # and of each other
        assert math.dist((a["x"], a["y"]), (b["x"], b["y"])) > 12

    page.mouse.move(dots["cw-btn-1"]["x"], dots["cw-btn-1"]["y"])
    tip = page.locator('.fw-tooltip .fw-tip[data-device-id="cw-btn-1"]')
    expect(tip).to_contain_text(devices["cw-btn-1"])  # the site file's location text
    expect(tip).to_have_attribute("data-state", "normal")

    assert stack.simulate("cw-btn-1", "button-press").returncode == 0
    wait_for_dot_colour(page, "cw-btn-1", colour["alarm"], timeout=PUSH_TIMEOUT_MS)
    expect(tip).to_have_attribute("data-state", "alarm")  # the open tooltip follows the push
    for neighbour in ("cw-efm-1", "cw-gas-1"):
        assert page.evaluate(PAINTED_DOT, neighbour)["colour"] == colour["normal"]
    expect(marker(page, "county-child-welfare")).to_have_attribute("data-state", "alarm")
    screenshot(page, "map-devices")
    assert page.errors == []
    assert stack.simulate("cw-btn-1", "normal").returncode == 0
    page.context.close()


def test_duty_staff_acknowledge_and_close_an_alarm_with_notes_and_the_bureau_sees_it(
    stack, browser
):
    bureau = open_console(browser, stack.url, "admin")
    staff = open_console(browser, stack.url, "duty-dingqiao-eldercare", "/alarms")
    assert stack.simulate("dq-btn-1", "button-press").returncode == 0
    card = staff.locator('#live-list li[data-status="active"]').filter(has_text="丁桥镇敬老院")
    expect(card).to_be_visible(timeout=PUSH_TIMEOUT_MS)
    alarm_id = card.get_attribute("data-alarm-id")

    card.locator("select[name=classification]").select_option("false")
    card.locator("textarea").fill("已到场确认：老人误按，无火情")
    card.get_by_role("button", name="确认报警").click()
    expect(staff.locator(f'#live-list li[data-alarm-id="{alarm_id}"]')).to_have_attribute(
        "data-status", "acknowledged"
    )
    row = staff.locator(f'#history-body tr[data-alarm-id="{alarm_id}"]')
    expect(row).to_contain_text("已到场确认：老人误按，无火情")
    expect(row).to_contain_text("duty-dingqiao-eldercare")  # the account, as audited
    expect(row).to_contain_text("误报")  # what it was
    # the bureau's map learns of it by push
    expect(bureau.locator(f'#alarm-list li[data-alarm-id="{alarm_id}"]')).to_have_attribute(
        "data-status", "acknowledged"
    )
    readme_screenshot(staff, "alarms")

    assert stack.simulate("dq-btn-1", "normal").returncode == 0  # the button is reset
    card = staff.locator(f'#live-list li[data-alarm-id="{alarm_id}"]')
    expect(card).to_have_attribute("data-status", "cleared", timeout=PUSH_TIMEOUT_MS)
    card.locator("textarea").fill("按钮已复位，现场正常")
    card.get_by_role("button", name="关闭报警").click()
    expect(card).to_have_count(0)
    expect(row).to_have_attribute("data-status", "closed")
    expect(bureau.locator(f'#alarm-list li[data-alarm-id="{alarm_id}"]')).to_have_count(0)
    assert staff.errors == [] and bureau.errors == []
    staff.context.close()
    bureau.context.close()


def test_duty_staff_see_only_their_own_institution(stack, browser):
    page = open_console(browser, stack.url, "duty-county-child-welfare")
    expect(page.locator("path[data-institution-id]")).to_have_count(1)
    expect(marker(page, "county-child-welfare")).to_be_visible()
    expect(page.locator("#count-total")).to_have_text("3")
    page.goto("/devices/rc-gas-1")  # another institution's device, by its id
    expect(page.locator("#device-title")).to_have_text("设备不存在或无权查看")
    page.context.close()


def test_the_device_page_shows_readings_and_a_24_hour_trend(stack, browser):
    stack.wait_until(
        lambda: stack.get("/api/devices/rc-efm-1/history", field="residual_current"),
        20,
        "a stored reading",
    )
    page = open_console(browser, stack.url, "admin", "/devices/rc-efm-1")
    expect(page.locator("#device-title")).to_have_text("电气火灾监控探测器 · 一楼配电房总箱")
    expect(page.locator("#device-state")).to_have_attribute("data-state", "normal")
    expect(page.locator('.reading[data-field="residual_current"]')).to_contain_text("mA")
    chart = page.locator("#trend-chart")
    expect(chart).to_have_attribute("data-field", "residual_current")
    assert int(chart.get_attribute("data-points")) >= 1
    expect(chart.locator("canvas")).to_be_visible()
    screenshot(page, "device")
    assert page.errors == []
    page.context.close()


def test_a_ledger_entry_is_walked_to_closed_by_the_institution_and_the_bureau(stack, browser):
    filed = stack.api.post(
        "/api/hazards",
        json={
            "institution_id": "rongcheng-eldercare",
            "category": "evacuation",
            "source": "inspection",
            "description": "二楼东侧安全出口被杂物堵塞",
            "responsible_person": "李明",
            "responsible_phone": "13800000102",
            "deadline": (utc_now() + timedelta(days=7)).isoformat(),
        },
    )
    assert filed.status_code == 201, filed.text
    entry = filed.json()["id"]

    staff = open_console(browser, stack.url, "duty-rongcheng-eldercare", f"/ledger?entry={entry}")
    detail = staff.locator("#panel-entry")
    expect(detail).to_have_attribute("data-status", "reported")
    expect(detail.locator("button[data-action]")).to_have_text(["开始整改"])
    detail.get_by_role("button", name="开始整改").click()
    expect(detail).to_have_attribute("data-status", "rectifying")
    staff.fill("#step-note", "已清理杂物，张贴禁止堆放标识")
    detail.get_by_role("button", name="整改完成，申请验收").click()
    expect(detail).to_have_attribute("data-status", "awaiting-verification")
    expect(detail.locator("#entry-actions")).to_contain_text("没有您可执行的操作")

    bureau = open_console(browser, stack.url, "admin", f"/ledger?entry={entry}")
    panel = bureau.locator("#panel-entry")
    expect(panel).to_have_attribute("data-status", "awaiting-verification")
    panel.get_by_role("button", name="验收通过，销号").click()
    expect(panel).to_have_attribute("data-status", "closed")
    expect(panel.locator("#entry-timeline li")).to_have_count(4)
    expect(panel.locator("#entry-timeline")).to_contain_text("已清理杂物，张贴禁止堆放标识")
    expect(bureau.locator(f'#entry-body tr[data-hazard-id="{entry}"]')).to_have_attribute(
        "data-status", "closed"
    )
    # the institution's page follows by push
    expect(staff.locator(f'#entry-body tr[data-hazard-id="{entry}"]')).to_have_attribute(
        "data-status", "closed"
    )
    bars = bureau.locator('#stats-chart .bar-row[data-key="蓉城镇"]')
    expect(bars).to_contain_text("已销号 1")
    readme_screenshot(bureau, "ledger")

    with bureau.expect_download() as download:
        bureau.click("#export")
    saved = ARTIFACTS / "ledger.xlsx"
    download.value.save_as(saved)
    sheet = openpyxl.load_workbook(saved).active
    assert "二楼东侧安全出口被杂物堵塞" in {c.value for row in sheet.iter_rows() for c in row}
    assert staff.errors == [] and bureau.errors == []
    staff.context.close()
    bureau.context.close()


def test_the_page_shifts_wgs84_to_gcj02_only_inside_china_for_amap_tiles(stack, browser):
    page = open_console(browser, stack.url, "viewer")
    shifted, abroad = page.evaluate("""async () => {
        const { wgs84ToGcj02 } = await import("/static/js/coords.js");
        return [wgs84ToGcj02(39.915, 116.404), wgs84ToGcj02(48.8584, 2.2945)];
    }""")
    # the published reference value of the common formula (coordtransform's test vector)
    assert shifted == pytest.approx([39.91640428150164, 116.41024449916938], abs=1e-9)
    assert abroad == [48.8584, 2.2945]
    page.context.close()


def test_duty_staff_shield_a_device_from_its_page_and_the_map_shows_it_shielded(stack, browser):
    bureau = open_console(browser, stack.url, "viewer")
    staff = open_console(browser, stack.url, "duty-rongcheng-eldercare", "/devices/rc-efm-1")
    staff.select_option("#mode-kind", "shielded")
    staff.fill("#mode-minutes", "90")
    staff.select_option("#mode-reason", "maintenance")
    staff.fill("#mode-note", "更换剩余电流互感器")
    staff.click("#mode-start")
    expect(staff.locator("#device-state")).to_have_attribute("data-state", "shielded")
    expect(staff.locator("#device-state")).to_have_text("屏蔽")
    expect(staff.locator('#mode-events tr[data-action="start"]')).to_contain_text(
        "duty-rongcheng-eldercare"
    )

    expect(bureau.locator("#count-shielded")).to_have_text("1")  # by push
    marker(bureau, "rongcheng-eldercare").click()
    shielded = bureau.locator('.fw-popup .fw-dev[data-device-id="rc-efm-1"]')
    expect(shielded).to_have_attribute("data-state", "shielded")
    expect(shielded.locator(".fw-dev-head .st")).to_have_text("屏蔽")
    screenshot(bureau, "map-shielded")

    staff.click("#mode-cancel")
    expect(staff.locator("#device-state")).not_to_have_attribute("data-state", "shielded")
    expect(staff.locator('#mode-events tr[data-action="cancel"]')).to_contain_text("检修")
    expect(bureau.locator("#count-shielded")).to_have_text("0")
    assert staff.errors == [] and bureau.errors == []
    staff.context.close()


def test_the_duty_phone_confirms_a_false_alarm_from_the_notices_link(stack, browser):
    """The one-tap link of a recorded notice, opened on a phone (390×844): confirmed as 误报,
    the ledger entry is closed with that reason and the map's false-alarm figures move."""
    bureau = open_console(browser, stack.url, "admin")
    totals = bureau.locator("#confirm-totals")
    expect(totals).to_have_attribute("data-false-alarms", re.compile(r"\d+"))
    false_before = int(totals.get_attribute("data-false-alarms"))
    assert stack.simulate("cw-btn-1", "button-press").returncode == 0
    active = {"status": "active", "device_id": "cw-btn-1"}
    stack.wait_until(lambda: stack.get("/api/alarms", **active), 20, "the alarm")
    [alarm] = stack.get("/api/alarms", **active)

    def notices() -> list[dict]:
        return [n for n in stack.get("/api/notices") if n["alarm_id"] == alarm["id"]]

    stack.wait_until(notices, 20, "the alarm's notices")
    # a press goes out on several means; the robot's message carries the link
    [notice] = [n for n in notices() if n["channel"] == "wecom_robot"]
    assert notice["link"].startswith(f"{stack.url}/c/")

    phone = browser.new_context(
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        has_touch=True,
        locale="zh-CN",
        timezone_id="Asia/Shanghai",
    ).new_page()
    phone.goto(notice["link"])  # no login
    expect(phone.locator("#c-title")).to_have_text("一键报警（人工火警）")
    expect(phone.locator("#c-advice")).to_contain_text("119")
    phone.locator("#c-form textarea").fill("儿童误按，已复位")
    phone.get_by_role("button", name="误报").tap()
    expect(phone.locator("#c-done")).to_contain_text("已确认：误报")
    readme_screenshot(phone, "confirm-phone")

    entry = next(h for h in stack.get("/api/hazards") if h["alarm_id"] == alarm["id"])
    assert entry["status"] == "dismissed"
    assert stack.get(f"/api/hazards/{entry['id']}/events")[-1]["note"] == "误报：儿童误按，已复位"
    expect(totals).to_have_attribute(
        "data-false-alarms", str(false_before + 1), timeout=PUSH_TIMEOUT_MS
    )
    phone.goto(notice["link"].replace("/c/", "/c/x"))  # a tampered link
    expect(phone.locator("#refused")).to_contain_text("链接无效")
    assert stack.simulate("cw-btn-1", "normal").returncode == 0
    assert bureau.errors == []
    phone.context.close()
    bureau.context.close()
