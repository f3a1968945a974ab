"""Real headless Chromium (Debian's package) driven by Playwright, and the console's login."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support.auth import DEMO_PASSWORD

CHROMIUM = Path("/usr/bin/chromium")  # Debian's chromium (scripts/test.sh installs it)
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


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
    context = browser.new_context(base_url=base_url, viewport={"width": 1400, "height": 900},
                                  locale="zh-CN", timezone_id="Asia/Shanghai")
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
