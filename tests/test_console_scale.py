"""The live map with 2,000 devices: it draws them all and still shows a change by push.

A synthetic county (500 institutions, 4 MQTT one-key alarm buttons each) runs in `firewatch up`
without simulators; a button press is published on the broker as a real button sends it.  The
test asserts behaviour; the times (snapshot, press-to-red, zoom) are recorded in
test-artifacts/console/map-2000.json rather than asserted, so a busy machine cannot flake it.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import paho.mqtt.publish
import pytest
import yaml
from playwright.sync_api import expect

from firewatch.settings import SITES_DIR
from tests.support.browser import ARTIFACTS, chromium, open_console, screenshot, wait_for_dot_colour
from tests.support.stack import Stack

pytestmark = pytest.mark.timeout(240)
TOWNSHIPS = [
    "蓉城镇",
    "木镇镇",
    "庙前镇",
    "陵阳镇",
    "新河镇",
    "丁桥镇",
    "朱备镇",
    "杨田镇",
    "酉华镇",
    "乔木乡",
]
INSTITUTIONS, BUTTONS_EACH, GATEWAYS = 500, 4, 10


def synthetic_site(directory: Path) -> Path:
    """500 institutions spread over the demo county's outline, 2,000 buttons on 10 gateways."""
    shutil.copy(SITES_DIR / "demo-county.geojson", directory / "county.geojson")
    institutions, devices = [], []
    for n in range(INSTITUTIONS):
        institutions.append(
            {
                "id": f"inst-{n:03d}",
                "name": f"合成测试机构{n:03d}",
                "type": "elderly_care",
                "township": TOWNSHIPS[n % len(TOWNSHIPS)],
                "location": {
                    "lat": 30.40 + 0.40 * (n // 25) / 20,
                    "lon": 117.72 + 0.32 * (n % 25) / 25,
                },
                "head": {"name": "负责人", "phone": "13800000001"},
                "safety_officer": {"name": "安全员", "phone": "13800000002"},
            }
        )
        for b in range(BUTTONS_EACH):
            devices.append(
                {
                    "id": f"btn-{n:03d}-{b}",
                    "institution": f"inst-{n:03d}",
                    "gateway": f"gw-{n % GATEWAYS}",
                    "profile": "generic-onekey-mqtt",
                    "location": f"{b + 1}号楼",
                }
            )
    site = {
        "county": {"name": "合成县（2000台设备）", "outline": "county.geojson"},
        "institutions": institutions,
        "gateways": [{"id": f"gw-{g}", "institution": f"inst-{g:03d}"} for g in range(GATEWAYS)],
        "devices": devices,
    }
    path = directory / "site.yaml"
    path.write_text(yaml.safe_dump(site, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    site = synthetic_site(tmp_path_factory.mktemp("synthetic-site"))
    running = Stack(
        tmp_path_factory.mktemp("scale-stack"), args=("--site", str(site), "--no-simulate")
    )
    running.start(timeout=120)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser():
    yield from chromium()


def test_a_map_of_2000_devices_draws_them_all_and_shows_a_button_press_by_push(stack, browser):
    started = time.monotonic()
    page = open_console(browser, stack.url, "admin")
    expect(page.locator("#count-total")).to_have_text("2000")
    opened = time.monotonic() - started
    expect(page.locator("path[data-institution-id]")).to_have_count(INSTITUTIONS)
    expect(page.locator("#township-body tr")).to_have_count(len(TOWNSHIPS))
    pressed_marker = page.locator('path[data-institution-id="inst-321"]')
    expect(pressed_marker).to_have_attribute("data-state", "offline")  # none has reported yet

    pressed = time.monotonic()
    paho.mqtt.publish.single(
        "devices/btn-321-2/up",
        json.dumps({"alarm": 1, "bat": 3.6}),
        qos=1,
        hostname="127.0.0.1",
        port=int(stack.env["FIREWATCH_MQTT_EMBEDDED_PORT"]),
    )
    expect(pressed_marker).to_have_attribute("data-state", "alarm", timeout=30_000)
    press_to_red = time.monotonic() - pressed
    expect(page.locator("#count-alarm")).to_have_text("1")
    expect(
        page.locator(f'#township-body tr[data-township="{TOWNSHIPS[321 % 10]}"]')
    ).to_have_attribute("data-state", "alarm")

    zoom_ms = page.evaluate("""async () => {
        const map = window.firewatch.map;
        const zoom = (by) => new Promise((done) => {
            map.once("zoomend", done);
            map.setZoom(map.getZoom() + by, {animate: false});
        });
        const t0 = performance.now();
        await zoom(1);
        await zoom(-1);
        await new Promise(requestAnimationFrame);  // the redrawn markers painted
        return performance.now() - t0;
    }""")
    screenshot(page, "map-2000")
    zoom_to_devices_ms = page.evaluate("""async () => {
        const { DEVICE_ZOOM } = await import("/static/js/map-devices.js");
        const map = window.firewatch.map;
        const t0 = performance.now();
        await new Promise((done) => {
            map.once("zoomend", done);
            map.setView(window.firewatch.markers.get("inst-321").getLatLng(), DEVICE_ZOOM,
                        {animate: false});
        });
        await new Promise(requestAnimationFrame);  // every device circle placed and painted
        return performance.now() - t0;
    }""")
    colour = page.evaluate('async () => (await import("/static/js/vocab.js")).STATE_COLOR')
    wait_for_dot_colour(page, "btn-321-2", colour["alarm"])
    wait_for_dot_colour(page, "btn-321-1", colour["offline"])  # its neighbours never reported
    screenshot(page, "map-2000-devices")
    stats = page.evaluate("window.firewatch.stats")
    assert stats["devices"] == 2000 and stats["events"] >= 1
    ARTIFACTS.joinpath("map-2000.json").write_text(
        json.dumps(
            {
                "devices": stats["devices"],
                "institutions": INSTITUTIONS,
                "login_to_all_drawn_s": round(opened, 3),
                "snapshot_ms": round(stats["snapshotMs"]),
                "mqtt_press_to_red_marker_s": round(press_to_red, 3),
                "push_apply_ms": round(stats["lastApplyMs"], 2),
                "zoom_in_out_ms": round(zoom_ms, 1),
                "zoom_to_device_circles_ms": round(zoom_to_devices_ms, 1),
            },
            indent=2,
        )
    )
    assert page.errors == []
    page.context.close()
