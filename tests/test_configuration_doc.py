"""docs/configuration.md is the settings model, written out: it cannot drift from what runs."""

from __future__ import annotations

import re

import pytest

from firewatch import settings_doc
from firewatch.settings import DEFAULT_SECRET_KEY, Settings
from firewatch.settings_doc import COMMAND, ROOT, render

PAGE = ROOT / "docs" / "configuration.md"


def rows(page: str) -> dict[str, list[str]]:
    """Variable -> its cells (type, default, meaning), from the page's tables."""
    found = {}
    for line in page.splitlines():
        match = re.match(r"\| `(FIREWATCH_[A-Z0-9_]+)` \| (.*) \|$", line)
        if match:
            found[match.group(1)] = re.split(r"(?<!\\) \| ", match.group(2))
    return found


def test_the_committed_configuration_page_is_what_the_settings_model_generates():
    assert PAGE.read_text() == render(), f"docs/configuration.md is stale: run `{COMMAND}`"


def test_every_setting_has_a_row_with_its_type_default_and_meaning():
    table = rows(render())
    assert sorted(table) == sorted(f"FIREWATCH_{name.upper()}" for name in Settings.model_fields)
    for variable, (kind, default, meaning) in table.items():
        assert kind and default and len(meaning) > 10, variable
    assert table["FIREWATCH_PORT"][:2] == ["integer, ≥ 0, ≤ 65535", "`8000`"]
    assert table["FIREWATCH_SITE_FILE"][1] == "`sites/demo-county.yaml`"  # not this checkout's
    assert table["FIREWATCH_INSTANCE"][1] == "the host name"


def test_no_secret_default_is_printed():
    page = render()
    assert DEFAULT_SECRET_KEY not in page and "firewatch-demo" not in page
    table = rows(page)
    assert (
        table["FIREWATCH_SECRET_KEY"][1]
        == table["FIREWATCH_DEMO_PASSWORD"][1]
        == ("*set, not shown*")
    )


def test_a_setting_left_out_of_the_page_stops_the_generator(monkeypatch):
    groups = [
        (title, intro, [n for n in names if n != "gateway_silent_after_s"])
        for title, intro, names in settings_doc.GROUPS
    ]
    monkeypatch.setattr(settings_doc, "GROUPS", groups)
    with pytest.raises(ValueError, match="not grouped: \\['gateway_silent_after_s'\\]"):
        render()
