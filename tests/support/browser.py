"""Real headless Chromium (Debian's package) driven by Playwright, and the console's login."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support.auth import DEMO_PASSWORD

CHROMIUM = Path("/usr/bin/chromium")  # Debian's chromium (scripts/test.sh installs it)
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
DOC_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"  # committed, in the README
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> Iterator[Browser]:
    """A browser for a test module; no `playwright install`, no download."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/test.sh installs Debian's chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


def open_console(browser: Browser, base_url: str, username: str, path: str = "/") -> Page:
    """A fresh browser context (its own login) on ``path``, logged in through the login page."""
    context = browser.new_context(
        base_url=base_url,
        viewport={"width": 1400, "height": 900},
        locale="zh-CN",
        timezone_id="Asia/Shanghai",
    )
    page = context.new_page()
    page.errors = []  # uncaught page errors, for the tests to assert there are none
    page.on("pageerror", lambda error: page.errors.append(error))
    page.goto(path)
    page.wait_for_url("**/login?next=**")
    page.fill("#username", username)
    page.fill("#password", DEMO_PASSWORD)
    page.click("#login-submit")
    page.wait_for_selector('body[data-ready="true"]')
    return page


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    return path


def readme_screenshot(page: Page, name: str) -> Path:
    """The README's picture of a page, rewritten by the test that shows the page working, so the
    README shows the console as it is. The visible part down to where the content ends, at CSS
    scale: a small PNG."""
    screenshot(page, name)
    path = DOC_IMAGES / f"{name}.png"
    viewport = page.viewport_size
    bottom = page.evaluate(_CONTENT_BOTTOM)
    height = min(viewport["height"], math.ceil(bottom) + 16)
    page.screenshot(
        path=path,
        scale="css",
        animations="disabled",
        clip={"x": 0, "y": 0, "width": viewport["width"], "height": height},
    )
    return path


# Where the page's content ends: the lowest bottom edge of what is laid out in the flow (fixed
# toasts and overlays are left out).
_CONTENT_BOTTOM = """() => Math.max(...[...document.querySelectorAll("body > *")]
    .filter((e) => !["fixed", "absolute"].includes(getComputedStyle(e).position))
    .map((e) => e.getBoundingClientRect().bottom))"""


# Where a device's circle is on the page and the colour the device canvas painted at its centre
# (null while the device layer is not on the map).
PAINTED_DOT = """(deviceId) => {
    const map = window.firewatch.map;
    const dot = window.firewatch.deviceMarkers.get(deviceId);
    const canvas = document.querySelector(".leaflet-devices-pane canvas");
    if (!dot || !canvas || !map.hasLayer(dot)) return null;
    const at = map.latLngToContainerPoint(dot.getLatLng());
    const box = map.getContainer().getBoundingClientRect();
    const x = box.left + at.x, y = box.top + at.y;
    const c = canvas.getBoundingClientRect();
    const px = canvas.getContext("2d").getImageData(
        Math.floor((x - c.left) * canvas.width / c.width),
        Math.floor((y - c.top) * canvas.height / c.height), 1, 1).data;
    const hex = [px[0], px[1], px[2]].map((v) => v.toString(16).padStart(2, "0"));
    return {x, y, colour: "#" + hex.join("")};
}"""


def wait_for_dot_colour(page: Page, device_id: str, colour: str, timeout: float = 5_000) -> dict:
    """Wait until the map paints a device's circle in ``colour``; where it is and its colour."""
    page.wait_for_function(
        f"([id, colour]) => ({PAINTED_DOT})(id)?.colour === colour",
        arg=[device_id, colour],
        timeout=timeout,
    )
    return page.evaluate(PAINTED_DOT, device_id)
