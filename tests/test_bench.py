"""Every benchmark runs end to end at a tiny size and ends with its figures as one JSON line.

No timing is asserted (the machine is shared); what is checked is that each command runs the
real parts it measures and reports the figures docs/benchmarks.md's table is made of.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(180)


def bench(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "firewatch.cli", "bench", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("name", "args", "keys"),
    [
        (
            "gateway",
            ("--devices", "4", "--seconds", "0.5"),
            {"bare_pymodbus_reads_per_s", "gateway_polls_per_s", "gateway_vs_bare"},
        ),
        (
            "ingest",
            ("--messages", "200", "--repeat", "1"),
            {
                "direct_influxdb_client_readings_per_s",
                "ingest_influx_vs_direct",
                "ingest_sqlite_vs_direct",
            },
        ),
    ],
)
def test_throughput_benchmarks_end_with_their_figures(name, args, keys):
    figures = bench(name, *args)
    assert figures["benchmark"] == name and keys <= figures.keys()


def test_storage_reports_bytes_per_point_against_the_row_per_reading_layout():
    figures = bench(
        "storage",
        *("--devices", "3", "--hours", "0.05", "--idle-devices", "1"),
        *("--scale-devices", "3", "--days", "1", "--repeat", "1"),
    )
    assert figures["benchmark"] == "storage"
    assert 0 < figures["bytes_per_point"] < figures["old_bytes_per_point"]
    assert figures["idle_bytes_per_device_day"] > 0
    assert figures["full_rate"]["write_points_per_s"] > 0
    assert figures["scale"]["trend_24h_ms"]["count"] == 1


@pytest.mark.parametrize(
    ("shape", "database", "processes"),
    [
        ("services", "sqlite", {"alerts", "ingest", "gateway"}),
        ("up", "sqlite", {"up", "up/alerts", "up/ingest", "up/gateway"}),
        ("services", "postgresql", {"alerts", "ingest", "gateway"}),
    ],
)
def test_alarm_latency_reports_percentiles_for_presses_and_breaches_against_an_mqtt_round_trip(
    shape,
    database,
    processes,
):
    figures = bench("alarms", "--devices", "20", "--shape", shape, "--database", database)
    assert figures["benchmark"] == "alarms" and figures["institutions"] == 2
    assert figures["shape"] == shape
    assert (
        figures["database"]
        .lower()
        .startswith({"sqlite": "sqlite", "postgresql": "postgres"}[database])
    )
    for kind in (
        "one_key_ms",
        "one_key_to_broker_ms",
        "polled_ms",
        "polled_to_broker_ms",
        "one_key_second_means_ms",
        "mqtt_round_trip_ms",
    ):
        assert figures[kind]["count"] >= 1, kind
        assert {"p50", "p95", "p99", "max"} <= figures[kind].keys()
    assert figures["one_key_missing"] == figures["polled_missing"] == 0
    assert figures["polled_goal_p99_ms"] == 1300 and figures["one_key_goal_p99_ms"] == 300
    assert figures["flow"]["published_per_s"] > 0
    assert figures["flow"]["cores"].keys() == processes


def test_alarm_latency_under_a_hostile_flood_reports_what_was_refused():
    figures = bench("alarms", "--devices", "20", "--hostile-rate", "200")
    assert figures["one_key_missing"] == figures["polled_missing"] == 0
    assert figures["hostile"]["sent"] > 200
    # most of the flood is refused by both consumers, or by the gateway, and counted
    assert figures["hostile"]["refused"] >= figures["hostile"]["sent"] // 2


def test_map_load_reports_requests_per_second_against_bare_uvicorn_serving_the_same_bytes():
    figures = bench("map", "--devices", "8", "--seconds", "0.5", "--repeat", "1")
    assert figures["benchmark"] == "map" and figures["devices"] == 8
    for kind in (
        "devices_requests",
        "baseline_devices_requests",
        "snapshots",
        "baseline_snapshots",
    ):
        assert figures[kind]["per_s"] > 0 and {"p50", "p99"} <= figures[kind].keys()
    assert figures["response_bytes"]["devices"] > 8 * 100
    assert figures["devices_vs_baseline"] > 0


def test_capacity_steps_up_the_devices_and_reports_the_most_the_central_side_carried():
    figures = bench("capacity", "--devices", "100,200", "--seconds", "4", "--warm-up", "2")
    assert figures["benchmark"] == "capacity" and figures["goal_devices"] == 10_000
    first = figures["steps"][0]
    assert first["devices"] == 100 and first["gateways"] == 10
    assert first["presses"] >= 1 and first["messages_per_s"] > 0
    assert first["mqtt_round_trip_ms"]["count"] >= 1
    assert {"alerts-0", "ingest", "web", "mosquitto"} <= first["cores"].keys()
    held = [s["devices"] for s in figures["steps"] if s["holds"]]
    assert figures["most_devices"] == max(held, default=0)


def test_bench_without_a_name_runs_all_four_and_prints_a_summary_table():
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "firewatch.cli",
            "bench",
            "--gateway-devices",
            "4",
            "--ingest-messages",
            "200",
            "--alarm-devices",
            "20",
            "--map-devices",
            "8",
            "--seconds",
            "0.5",
            "--repeat",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert figures["benchmark"] == "all"
    assert [figures[k]["benchmark"] for k in ("gateway", "ingest", "alarms", "map")] == [
        "gateway",
        "ingest",
        "alarms",
        "map",
    ]
    summary = "\n".join(
        lines[next(i for i, line in enumerate(lines) if line.startswith("summary:")) :]
    )
    assert "one-key press -> notice" in summary and "/api/devices req/s" in summary
