"""The shipped Prometheus rules (deploy/prometheus/) are valid, fire when they should, and watch
metrics the services really expose.

promtool comes with Debian's `prometheus` package (scripts/test.sh installs it).
"""

from __future__ import annotations

import ast
import re
import subprocess

import yaml

from tests.support.deploy import ROOT

PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "firewatch-rules.yml"
#: what Prometheus adds to every target, beside the services' own metrics
SCRAPE_SERIES = {"up"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], cwd=PROMETHEUS, capture_output=True, text=True, check=False
    )


def exposed_metrics() -> set[str]:
    """The sample names firewatch/metrics.py exposes: a counter family's with ``_total``."""
    tree = ast.parse((ROOT / "firewatch" / "metrics.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            continue
        if node.func.id in ("CounterMetricFamily", "_by_label"):  # _by_label makes counters
            names.add(node.args[0].value + "_total")
        elif node.func.id == "GaugeMetricFamily":
            names.add(node.args[0].value)
    return names


def rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def test_promtool_accepts_the_rules_and_the_scrape_configuration():
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # syntax only: the metrics token file it names exists on the Prometheus host, not here
    checked = promtool("check", "config", "--syntax-only", "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_each_alert_fires_on_its_situation_and_a_healthy_chain_raises_none():
    tested = promtool("test", "rules", "firewatch-rules.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_metric_the_rules_watch_is_one_a_service_exposes():
    exposed = exposed_metrics()
    assert "firewatch_dead_letters_total" in exposed and "firewatch_task_running" in exposed
    for rule in rules():
        named = set(re.findall(r"\bfirewatch_[a-z_]+\b|\bup(?=\{)", rule["expr"]))
        assert named, f"{rule['alert']}: names no metric"
        unknown = named - exposed - SCRAPE_SERIES
        assert not unknown, f"{rule['alert']}: no service exposes {sorted(unknown)}"


def test_every_alert_points_to_a_runbook_section_that_exists():
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    anchors = {
        re.sub(r"[^\w\- ]", "", heading).strip().lower().replace(" ", "-")
        for heading in re.findall(r"^#{2,3} (.+)$", runbook, re.MULTILINE)
    }
    for rule in rules():
        link = rule["annotations"].get("runbook")
        if link is None:
            continue
        page, anchor = link.split("#")
        assert page == "docs/runbook.md" and anchor in anchors, f"{rule['alert']}: {link}"
